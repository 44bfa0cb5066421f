"""`compress distill`: train a small student from a teacher, next to the same student trained without KD.

Example:
    $ compress distill --teacher mnist_cnn.pt --student mnist_cnn:width=0.45 --epochs 30 --out runs/student
    $ compress prune runs/student/student.pt --method l1-structured     # chaining: student.pt is a zoo checkpoint
"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import emit, gate_policy, handle_errors, parse_kwargs, stdout_console
from compress.commands._options import Options, shared_options
from compress.commands._progress import training_progress
from compress.commands.prune import (bench_options, check_formats, config_or_usage, load_for_pass, raise_failed_gates,
                                     split_list)
from compress.passes.distill_workflow import run_distill


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)


@shared_options("pass", "judge", "load", "time", "output")
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
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<teacher>-distilled)."),
    *,
    opts: Options,
) -> None:
    """Distill a teacher into a smaller student and measure KD against the same student trained without it.

    Example: compress distill --teacher mnist_cnn.pt --student mnist_cnn:width=0.45 --epochs 30
    """
    from compress.commands._render import artifact_table
    from compress.passes.distill import DistillConfig

    with handle_errors(opts.debug, opts.json_out):
        pairs = {k: str(v) for k, v in parse_kwargs(features).items()}
        config = config_or_usage(DistillConfig, student=student, temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                                 features=pairs, feature_weight=feature_weight, baseline=not no_baseline, seed=opts.seed)
        fmts = check_formats(split_list(opts.formats))
        handle = load_for_pass(teacher, opts)
        run_dir = out or Path("runs") / f"{teacher.stem}-distilled"
        total = config.epochs * (2 if config.baseline else 1)
        with training_progress(f"distilling into {config.student}", total, transient=opts.json_out) as (on_epoch, step):
            report = run_distill(handle, config, opts.data, run_dir, fmts, not opts.no_int8, bench_options(opts),
                                 gate_policy(opts.max_degradation, opts.no_gate), on_epoch, step)
        emit(report, opts.json_out, lambda: stdout_console.print(artifact_table(report, run_dir), distill_lines(report["distill"])))
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
