"""`compress qat` as a Python API: QAT, then fp32, PTQ and QAT files per format, each verified, compared in one run.

Example:
    >>> report = run_qat(load_model("mnist_cnn.pt"), QatConfig(epochs=3), out_dir="runs/q")
    >>> [row["verdict"] for row in report["comparison"]]
"""
from __future__ import annotations

from pathlib import Path

from compress.workflows.common import FORMATS, export_fp32, quantize_int8, resolve_splits
from compress.phases import PhaseClock
from compress.rundir import holds_run_dir, located, staged


@holds_run_dir("qat")
def run_qat(handle, config, data=None, out_dir: str | Path = "runs/qat", formats: tuple[str, ...] = FORMATS,
            bench: dict | None = None, policy=None, on_epoch=None, step=None) -> dict:
    """QAT (compress.passes.qat), then fp32, PTQ and QAT files per format, each verified in its runtime; write the run.

    The PTQ baseline is what `compress quantize` makes (int8 per-channel scheme) or, for another scheme (per-tensor,
    fewer weight bits), the PT2E PTQ twin with the very same quantizer, so the comparison isolates training.
    ``report["comparison"]`` lists PTQ vs QAT degradation per format. Returns the report.
    """
    from compress.passes import qat
    from compress.passes.qat_export import export_qat, export_technique, scheme_notes, scheme_tag, write_int8
    from compress.pipeline import finish_report, heads_for, measure_reference, verifier

    clock = PhaseClock()
    step = clock.wrap(step)
    qat.check_quantizable(handle)
    if "pte" in formats:  # before training, not after it
        from compress.runtimes.executorch import require_executorch

        require_executorch()
    run_dir = Path(out_dir)  # created and locked by holds_run_dir
    clock.begin("loading data")
    splits, plan = resolve_splits(handle, data, config.seed)
    heads = heads_for(handle, plan)
    clock.begin("QAT training")
    trained = qat.apply(handle, config, splits, on_epoch)
    default_scheme = config.weight_bits == 8 and config.per_channel
    twin = None if default_scheme else qat.ptq(handle, config, plan.calibration)
    reference = None
    artifacts: list[dict] = []
    comparison = []
    for fmt in formats:
        step(f"fp32 {fmt}: export")
        fp32 = staged(run_dir, f"model.fp32.{fmt}")
        export_fp32(handle, fp32, fmt)
        if reference is None:
            reference = measure_reference(handle, plan, size_bytes=fp32.stat().st_size)
        verify = verifier(run_dir, plan, reference, heads, bench)
        artifacts.append(verify(fp32.name, "fp32", [*handle.techniques, "export:fp32"], f"fp32-{fmt}"))
        step(f"PTQ {fmt}: quantize and verify")
        if default_scheme:
            ptq_entry = _project_ptq(handle, fmt, run_dir, plan, config.seed, verify)
        else:
            path = staged(run_dir, f"model.ptq-{scheme_tag(config)}.{fmt}")
            floats = write_int8(twin, fmt, path, handle)
            ptq_entry = verify(path.name, "int8", [*twin.techniques, export_technique(fmt)], f"ptq-{scheme_tag(config)}-{fmt}",
                               scheme_notes(config), float_ops=floats)
        artifacts.append(ptq_entry)
        step(f"QAT {fmt}: export and verify")
        qat_entry = export_qat(trained, config, fmt, run_dir, verify, handle)
        artifacts.append(qat_entry)
        comparison.append(_compare(fmt, ptq_entry, qat_entry))
    extra = {"command": "qat", "config": config.model_dump(mode="json"), "qat": trained.metrics["qat"], "comparison": comparison,
             "timings": clock.record()}
    return finish_report(run_dir, handle, plan, reference, artifacts, policy, extra)


def _project_ptq(handle, fmt, run_dir: Path, plan, seed: int, verify) -> dict:
    """The int8 file `compress quantize` makes (onnxruntime static QDQ / PT2E static TFLite), as the PTQ baseline."""
    out = staged(run_dir, f"model.ptq-int8.{fmt}")
    result = quantize_int8(handle, fmt, out, located(run_dir, "model.fp32.onnx"), plan.calibration, seed)
    return verify(out.name, result.precision, [*handle.techniques, *result.techniques], f"ptq-int8-{fmt}", result.notes, result.float_ops)


def _compare(fmt: str, ptq: dict, qat: dict) -> dict:
    a, b = ptq["metrics"]["degradation"], qat["metrics"]["degradation"]
    verdict = None
    if a is not None and b is not None:
        verdict = ("QAT loses less than PTQ" if b < a else "QAT loses as much as PTQ" if b == a else "QAT loses MORE than PTQ")
    return {"format": fmt, "ptq": ptq["name"], "qat": qat["name"], "ptq_degradation": a, "qat_degradation": b,
            "qat_not_worse": None if verdict is None else b <= a, "verdict": verdict}
