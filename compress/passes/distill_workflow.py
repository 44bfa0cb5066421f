"""`compress distill` as a Python API: distill, then verify teacher, student and the no-KD twin in their runtimes.

Example:
    >>> report = run_distill(load_model("mnist_cnn.pt"), DistillConfig(student="mnist_cnn:width=0.45"), out_dir="runs/d")
    >>> report["distill"]["verdict"]
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.catalog import Technique, technique_label
from compress.passes.workflow_common import FORMATS, compare_latency, export_verified, load_splits
from compress.steps.phases import PhaseClock
from compress.safety.rundir import holds_run_dir

if TYPE_CHECKING:
    from compress.report.model import Artifact


@holds_run_dir("distill")
def run_distill(teacher, config, data=None, out_dir: str | Path = "runs/distill", formats: tuple[str, ...] = FORMATS,
                int8: bool = True, bench: dict | None = None, policy=None,
                on_epoch=None, step=None) -> dict:
    """Distill (compress.passes.distill), export and verify the student, its no-KD twin and the teacher; write the run.

    Artifacts: ``fp32-*``/``int8-*`` (the distilled student), ``no-kd-fp32-*`` (the same student trained without
    distillation), ``teacher-fp32-onnx``; reference = the teacher. The student is saved as ``student.pt`` (a zoo
    checkpoint, for zoo students) or ``student.pt2``. Returns the report.
    """
    from dataclasses import replace

    from compress.build import FP32, ArtifactSpec, BuildContext, build
    from compress.passes.distill import distill, student_settings
    from compress.passes.quantize import QuantizeConfig
    from compress.steps.pipeline import finish_report, measure_reference

    clock = PhaseClock()
    step = clock.wrap(step)
    run_dir = Path(out_dir)  # created and locked by holds_run_dir
    splits, plan, heads = load_splits(clock, teacher, data, config.seed)
    clock.begin("distilling")
    result = distill(teacher, config, splits, on_epoch)
    student = result.student
    step("saving the student (for chaining)")
    student_file = _save_student(student, run_dir, plan.split_seed, config.seed)

    # the teacher's fp32 ONNX file, whose size is the reference's (else the teacher's own file)
    exported = teacher.module is not None and "onnx" in formats
    specs = [ArtifactSpec("onnx", "fp32", "teacher-fp32-onnx", "teacher.fp32.onnx", FP32, notes=("the teacher, for comparison",),
                          phase="teacher fp32 onnx: export and verify")] if exported else []
    reference = None if exported else measure_reference(teacher, plan, size_bytes=Path(teacher.source_path).stat().st_size)
    built = build(teacher, specs, BuildContext(run_dir, plan, heads, QuantizeConfig(seed=config.seed), reference, bench=bench, step=step))
    reference = built.reference
    artifacts = built.artifacts + export_verified(student, run_dir, "student", list(formats), int8, plan, reference, heads, bench,
                                                  seed=config.seed, step=step)
    if result.baseline is not None:
        twin = replace(teacher, module=result.baseline, onnx_path=None, techniques=[Technique("train", method="no-kd", settings=student_settings(config.student))])
        artifacts += export_verified(twin, run_dir, "no-kd", list(formats), False, plan, reference, heads, bench,
                                     prefix="no-kd-", seed=config.seed, step=step)
    compare_latency(artifacts, "teacher-")
    summary = dict(result.summary)
    summary["runtime_check"] = _runtime_verdict(artifacts)
    extra = {"command": "distill", "config": config.model_dump(mode="json"), "distill": summary,
             "chain": {"model": student_file.name, "techniques": [technique_label(t) for t in student.techniques]}, "timings": clock.record()}
    return finish_report(run_dir, teacher, plan, reference, artifacts, policy, extra)


def _save_student(student, run_dir: Path, split_seed: int, seed: int) -> Path:
    """A zoo checkpoint for zoo students (loadable with its dataset, prunable by channels), else a .pt2."""
    from compress.loading.model import save_program
    from compress.zoo.checkpoint import save_checkpoint
    from compress.zoo.registry import ZOO

    summary = student.metrics["distill"]
    if student.arch and student.arch["name"] in ZOO and (student.dataset or {}).get("name") == ZOO[student.arch["name"]].dataset:
        metrics = {"task": summary["student"]["test"], "split": "test", "distilled": True}
        return save_checkpoint(run_dir / "student.pt", student.arch["name"], student.arch["config"], student.module, split_seed,
                               metrics, extra={"techniques": [technique_label(t) for t in student.techniques]})
    return save_program(student, run_dir / "student.pt2")


def _runtime_verdict(artifacts: list[Artifact]) -> str | None:
    """KD's benefit as measured on the exported fp32 files in their runtime (student vs no-KD twin)."""
    by_name = {a.name: a for a in artifacts}
    for fmt in FORMATS:
        kd, plain = by_name.get(f"fp32-{fmt}"), by_name.get(f"no-kd-fp32-{fmt}")
        if kd and plain and kd.metrics.task and plain.metrics.task:
            a, b = kd.metrics.task.value, plain.metrics.task.value
            verb = "KD helped" if a > b else "KD did not help"
            return f"{verb} in {kd.verified_in[0]}: {kd.metrics.task.name} {a:.4f} with KD vs {b:.4f} without ({(a - b) * 100:+.2f} pt)"
    return None
