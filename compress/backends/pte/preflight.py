"""Pre-flight for the ``.pte`` path: before calibrating, say which ops the XNNPACK partitioner will not take.

A dry run of ``export_pte`` (same capture, quantizer and partitioner; `compress quantize` passes its calibration set
and method, alone int8 observers see a few random inputs), so its delegate coverage is what the real export gets: every op left to ExecuTorch's
portable kernels, grouped by layer, with the partitioner's reason, and under int8 precisions the weighted ops that
XNNPACK runs in fp32; or an error when the model does not lower at all.

Example:
    >>> [f.message for f in pte_preflight(QuantizeJob(load_model("tokens.pt2"), "int8", Path("model.int8.pte")))][0]
    "embedding×1 in embed: not delegated to XNNPACK (the partitioner has no pattern for this op): runs in ExecuTorch's portable kernels"
"""
from __future__ import annotations

from compress.catalog import QuantizeJob
from compress.errors import CompressError, UsageError
from compress.backends.findings import Finding
from compress.backends.pte.export import PORTABLE, build_pte, check_precision, exportable
from compress.backends.pt2e import export_batch, random_calibration
from compress.backends.pte.session import require_executorch

DRY_RUN_SAMPLES = 4
PORTABLE_ADVICE = "nothing to do for correctness; it costs speed (a portable kernel between XNNPACK subgraphs)"


def pte_preflight(job: QuantizeJob) -> list[Finding]:
    """Findings for exporting the job's model to ``.pte`` at its precision (an error means: do not start); int8
    calibrates on the job's data with its method (no data: DRY_RUN_SAMPLES random inputs), as the run will, so
    within a run (compress.backends.reuse) the real export reuses this lowering."""
    handle, precision, calib_data = job.handle, job.precision, job.calib_data
    check_precision(precision)
    require_executorch()
    try:
        module = exportable(handle)
    except UsageError as exc:
        return [_error(str(exc), "use --format onnx")]
    if precision == "int8" and calib_data is None:
        calib_data = random_calibration(handle, seed=0, samples=DRY_RUN_SAMPLES)
    example = handle.input_spec.example_inputs(batch=export_batch(handle), seed=0)
    notes: list[str] = []
    try:
        _, _, lowered = build_pte(module, example, precision, calib_data, job.calibration, job.per_channel, [], notes)
    except CompressError as exc:
        return [_error(f"the .pte path cannot lower this model: {exc}",
                       "make forward traceable by torch.export (no data-dependent Python control flow), or use --format onnx/tflite")]
    findings = [Finding("pte", "*", None, None, "warning", note, "rewrite the untraceable Python in forward")
                for note in notes if note.startswith("torch.export strict mode failed")]
    findings += [Finding("pte", row["op"], row["node"], row["layer"], "info",
                         f"{row['op']}×{row['count']} in {row['layer'] or 'the model'}: {row['reason']}",
                         _advice(row["reason"]))
                 for row in lowered.float_ops(precision, [])]
    return findings + [Finding("pte", "*", None, None, "info", lowered.summary(), "nothing to do")]


def _advice(reason: str) -> str:
    if PORTABLE in reason:
        return PORTABLE_ADVICE
    if "unrolls" in reason:
        return "nothing to do for correctness; for a smaller file use --format onnx (it quantizes recurrent layers dynamically)"
    return "use --precision int8 (static) to quantize it too"


def _error(message: str, suggestion: str) -> Finding:
    return Finding("pte", "*", None, None, "error", message, suggestion)
