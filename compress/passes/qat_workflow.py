"""`compress qat` as a Python API: QAT, then fp32, PTQ and QAT files per format, each verified, compared in one run.

Example:
    >>> report = run_qat(load_model("mnist_cnn.pt"), QatConfig(epochs=3), out_dir="runs/q")
    >>> [row["verdict"] for row in report["comparison"]]
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.build import FP32, GRAPH, QUANTIZER, ArtifactSpec
from compress.passes.workflow_common import FORMATS, load_splits
from compress.steps.phases import PhaseClock
from compress.safety.rundir import holds_run_dir

if TYPE_CHECKING:
    from compress.report.model import Artifact


@holds_run_dir("qat")
def run_qat(handle, config, data=None, out_dir: str | Path = "runs/qat", formats: tuple[str, ...] = FORMATS,
            bench: dict | None = None, policy=None, on_epoch=None, step=None) -> dict:
    """QAT (compress.passes.qat), then fp32, PTQ and QAT files per format, each verified in its runtime; write the run.

    The PTQ baseline is what `compress quantize` makes (int8 per-channel scheme) or, for another scheme (per-tensor,
    fewer weight bits), the PT2E PTQ twin with the very same quantizer, so the comparison isolates training.
    ``report["comparison"]`` lists PTQ vs QAT degradation per format. Returns the report.
    """
    from compress.build import BuildContext, build
    from compress.passes import qat
    from compress.passes.qat_export import qat_spec
    from compress.steps.pipeline import finish_report
    from compress.passes.quantize import QuantizeConfig

    clock = PhaseClock()
    step = clock.wrap(step)
    qat.check_quantizable(handle)
    if "pte" in formats:  # before training, not after it
        from compress.backends.pte.session import require_executorch

        require_executorch()
    run_dir = Path(out_dir)  # created and locked by holds_run_dir
    splits, plan, heads = load_splits(clock, handle, data, config.seed)
    clock.begin("QAT training")
    trained = qat.apply(handle, config, splits, on_epoch)
    default_scheme = config.weight_bits == 8 and config.per_channel
    twin = None if default_scheme else qat.ptq(handle, config, plan.calibration)
    specs = []
    for fmt in formats:
        specs += [ArtifactSpec(fmt, "fp32", f"fp32-{fmt}", f"model.fp32.{fmt}", FP32, tuple(handle.techniques),
                               phase=f"fp32 {fmt}: export"),
                  _ptq_spec(handle, twin, config, fmt),
                  qat_spec(trained, config, fmt, handle, phase=f"QAT {fmt}: export and verify")]
    context = BuildContext(run_dir, plan, heads, QuantizeConfig(seed=config.seed), bench=bench, compressed_size=True, step=step)
    built = build(handle, specs, context)
    artifacts, reference = built.artifacts, built.reference
    comparison = [_compare(fmt, *[a for a in artifacts if a.format == fmt][1:]) for fmt in formats]
    extra = {"command": "qat", "config": config.model_dump(mode="json"), "qat": trained.metrics["qat"], "comparison": comparison,
             "timings": clock.record()}
    return finish_report(run_dir, handle, plan, reference, artifacts, policy, extra)


def _ptq_spec(handle, twin, config, fmt: str) -> ArtifactSpec:
    """The PTQ baseline: the int8 file `compress quantize` makes (onnxruntime static QDQ / PT2E static TFLite) for the
    default scheme, else ``twin`` (the PT2E PTQ twin with QAT's quantizer) written as it is."""
    from compress.passes.qat_export import export_technique, scheme_notes, scheme_tag

    phase = f"PTQ {fmt}: quantize and verify"
    if twin is None:
        return ArtifactSpec(fmt, "int8", f"ptq-int8-{fmt}", f"model.ptq-int8.{fmt}", QUANTIZER, tuple(handle.techniques), phase=phase)
    tag = scheme_tag(config)
    return ArtifactSpec(fmt, "int8", f"ptq-{tag}-{fmt}", f"model.ptq-{tag}.{fmt}", GRAPH, (*twin.techniques, export_technique(fmt)),
                        tuple(scheme_notes(config)), phase, twin, handle, exact_precision=True)


def _compare(fmt: str, ptq: Artifact, qat: Artifact) -> dict:
    a, b = ptq.metrics.degradation, qat.metrics.degradation
    verdict = None
    if a is not None and b is not None:
        verdict = ("QAT loses less than PTQ" if b < a else "QAT loses as much as PTQ" if b == a else "QAT loses MORE than PTQ")
    return {"format": fmt, "ptq": ptq.name, "qat": qat.name, "ptq_degradation": a, "qat_degradation": b,
            "qat_not_worse": None if verdict is None else b <= a, "verdict": verdict}
