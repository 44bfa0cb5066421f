"""`compress distill`: train a small student from a teacher, next to the same student trained without KD.

Example:
    $ compress distill --teacher mnist_cnn.pt --student mnist_cnn:width=0.45 --epochs 30 --out runs/student
    $ compress prune runs/student/student.pt --method l1-structured     # chaining: student.pt is a zoo checkpoint
"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import (ARCH_KWARGS_OPTION, ARCH_OPTION, DEBUG_OPTION, INPUT_SHAPE_OPTION, JSON_OPTION,
                                     NO_BENCH_OPTION, RUNS_OPTION, SEED_OPTION, THREADS_OPTION, TRUST_PICKLE_OPTION,
                                     console, emit, handle_errors, parse_kwargs)
from compress.commands.prune import (FORMATS, bench_options, check_formats, compare_latency, config_or_usage, export_verified,
                                     gates_for, load_for_pass, raise_failed_gates, resolve_splits, split_list,
                                     training_progress)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)


def run_distill(teacher, config, data=None, out_dir: str | Path = "runs/distill", formats: tuple[str, ...] = FORMATS,
                int8: bool = True, bench: dict | None = None, max_degradation: float | None = None,
                on_epoch=None, step=None) -> dict:
    """Distill (compress.passes.distill), export and verify the student, its no-KD twin and the teacher; write the run.

    Artifacts: ``fp32-*``/``int8-*`` (the distilled student), ``no-kd-fp32-*`` (the same student trained without
    distillation), ``teacher-fp32-onnx``; reference = the teacher. The student is saved as ``student.pt`` (a zoo
    checkpoint, for zoo students) or ``student.pt2``. Returns the report.
    """
    from dataclasses import replace

    from compress.passes.distill import distill
    from compress.pipeline import finish_report, heads_for, measure_reference

    step = step or (lambda message: None)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits, plan = resolve_splits(teacher, data, config.seed)
    heads = heads_for(teacher, plan)
    result = distill(teacher, config, splits, on_epoch)
    student = result.student
    step("saving the student (for chaining)")
    student_file = _save_student(student, run_dir, plan.split_seed, config.seed)

    teacher_entries = []
    if teacher.module is not None and "onnx" in formats:
        step("teacher fp32 onnx: export")
        from compress.export.onnx import export_onnx

        export_onnx(teacher, run_dir / "teacher.fp32.onnx")
    reference = measure_reference(teacher, plan, size_bytes=_teacher_size(teacher, run_dir))
    if (run_dir / "teacher.fp32.onnx").exists():
        from compress.pipeline import verify_artifact

        teacher_entries.append(verify_artifact(run_dir, "teacher.fp32.onnx", "fp32", ["export:fp32"], plan, reference, heads,
                                               name="teacher-fp32-onnx", bench=bench, notes=["the teacher, for comparison"]))
    artifacts = teacher_entries + export_verified(student, run_dir, "student", list(formats), int8, plan, reference, heads, bench,
                                                  seed=config.seed, step=step)
    if result.baseline is not None:
        twin = replace(teacher, module=result.baseline, onnx_path=None, techniques=[f"train:no-kd:student={config.student}"])
        artifacts += export_verified(twin, run_dir, "no-kd", list(formats), False, plan, reference, heads, bench,
                                     prefix="no-kd-", seed=config.seed, step=step)
    compare_latency(artifacts, "teacher-")
    summary = dict(result.summary)
    summary["runtime_check"] = _runtime_verdict(artifacts)
    extra = {"command": "distill", "config": config.model_dump(mode="json"), "distill": summary,
             "chain": {"model": student_file.name, "techniques": student.techniques}}
    return finish_report(run_dir, teacher, plan, reference, artifacts, gates_for(artifacts, max_degradation, plan), extra)


def _teacher_size(teacher, run_dir: Path) -> int:
    exported = run_dir / "teacher.fp32.onnx"
    return exported.stat().st_size if exported.exists() else Path(teacher.source_path).stat().st_size


def _save_student(student, run_dir: Path, split_seed: int, seed: int) -> Path:
    """A zoo checkpoint for zoo students (loadable with its dataset, prunable by channels), else a .pt2."""
    from compress.model import save_program
    from compress.zoo.checkpoint import save_checkpoint
    from compress.zoo.registry import ZOO

    summary = student.metrics["distill"]
    if student.arch and student.arch["name"] in ZOO and (student.dataset or {}).get("name") == ZOO[student.arch["name"]].dataset:
        metrics = {"task": summary["student"]["test"], "split": "test", "distilled": True}
        return save_checkpoint(run_dir / "student.pt", student.arch["name"], student.arch["config"], student.module, split_seed,
                               metrics, extra={"techniques": student.techniques})
    return save_program(student, run_dir / "student.pt2")


def _runtime_verdict(artifacts: list[dict]) -> str | None:
    """KD's benefit as measured on the exported fp32 files in their runtime (student vs no-KD twin)."""
    by_name = {a["name"]: a for a in artifacts}
    for fmt in ("onnx", "tflite"):
        kd, plain = by_name.get(f"fp32-{fmt}"), by_name.get(f"no-kd-fp32-{fmt}")
        if kd and plain and kd["metrics"]["task"] and plain["metrics"]["task"]:
            a, b = kd["metrics"]["task"]["value"], plain["metrics"]["task"]["value"]
            verb = "KD helped" if a > b else "KD did not help"
            return f"{verb} in {kd['verified_in'][0]}: {kd['metrics']['task']['name']} {a:.4f} with KD vs {b:.4f} without ({(a - b) * 100:+.2f} pt)"
    return None


def distill_command(
    teacher: Path = typer.Option(..., "--teacher", "-t", help="Any loadable model: zoo checkpoint, state_dict (with --arch), TorchScript, .pt2 or .onnx."),
    student: str = typer.Option(..., "--student", "-s", help="A zoo architecture with options (mnist_cnn:width=0.25) or package.module:Class."),
    temperature: float = typer.Option(4.0, "--temperature", "-T", help="Softmax temperature of the soft targets."),
    alpha: float = typer.Option(0.7, "--alpha", help="Weight of the soft-target loss in [0, 1]; 1 - alpha goes to the hard labels."),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Training epochs (the no-KD twin trains as long)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (Adam; default 1e-3)."),
    features: list[str] = typer.Option(None, "--features", help="Intermediate-feature pair student_layer=teacher_layer (repeatable)."),
    feature_weight: float = typer.Option(None, "--feature-weight", help="Weight of each feature term (default 1)."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip training the no-KD twin (KD's benefit is then not measured)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (default: the teacher's own)."),
    formats: list[str] = typer.Option(None, "--format", "-f", help="onnx, tflite or both (comma-separated). Default: both."),
    no_int8: bool = typer.Option(False, "--no-int8", help="Export the student in fp32 only."),
    max_degradation: float = typer.Option(None, "--max-degradation", help="Gate on the student vs the teacher (fraction); exit 1 if missed."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<teacher>-distilled)."),
    arch: str = ARCH_OPTION,
    arch_kwargs: list[str] = ARCH_KWARGS_OPTION,
    input_shape: list[str] = INPUT_SHAPE_OPTION,
    trust_pickle: bool = TRUST_PICKLE_OPTION,
    no_bench: bool = NO_BENCH_OPTION,
    runs: int = RUNS_OPTION,
    threads: int = THREADS_OPTION,
    seed: int = SEED_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Distill a teacher into a smaller student and measure KD against the same student trained without it.

    Example: compress distill --teacher mnist_cnn.pt --student mnist_cnn:width=0.45 --epochs 30
    """
    from compress.commands._render import artifact_table
    from compress.passes.distill import DistillConfig

    with handle_errors(debug):
        pairs = {k: str(v) for k, v in parse_kwargs(features).items()}
        config = config_or_usage(DistillConfig, student=student, temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                                 features=pairs, feature_weight=feature_weight, baseline=not no_baseline, seed=seed)
        fmts = check_formats(split_list(formats))
        handle = load_for_pass(teacher, arch, arch_kwargs, input_shape, trust_pickle)
        run_dir = out or Path("runs") / f"{teacher.stem}-distilled"
        total = config.epochs * (2 if config.baseline else 1)
        with training_progress(f"distilling into {config.student}", total, transient=json_out) as (on_epoch, step):
            report = run_distill(handle, config, data, run_dir, fmts, not no_int8, bench_options(no_bench, runs, threads),
                                 max_degradation, on_epoch, step)
        emit(report, json_out, lambda: console.print(artifact_table(report, run_dir), distill_lines(report["distill"])))
        raise_failed_gates(report, run_dir)


def distill_lines(summary: dict) -> str:
    """Teacher, student and no-KD twin in three lines, then the verdict."""
    def line(name, part):
        test = part.get("test") or {}
        value = f"{test['name']} {test['value']:.4f}" if test else "-"
        params = f"{part['params']:,}" if part.get("params") is not None else "?"
        return f"  {name:<34} {params:>10} params   test {value}"

    rows = ["[bold]distillation[/] (eager PyTorch, test split)", line("teacher", summary["teacher"]),
            line(f"student {summary['student']['spec']}", summary["student"])]
    if summary.get("baseline"):
        rows.append(line("same student, no KD", summary["baseline"]))
    rows.append(f"  parameters: {summary['param_ratio']:.3f}x the teacher" if summary.get("param_ratio") else "")
    rows.append(f"  [bold]{summary['verdict']}[/]")
    if summary.get("runtime_check"):
        rows.append(f"  {summary['runtime_check']}")
    return "\n".join(r for r in rows if r)
