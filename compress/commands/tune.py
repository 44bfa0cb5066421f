"""`compress tune`: find the smallest or fastest model within a degradation budget."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import DEBUG_OPTION, JSON_OPTION, console, emit, handle_errors


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)


def tune_command(
    model: Path = typer.Argument(..., help="Model to compress (zoo checkpoint, .pt2, TorchScript, ...)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (zoo default: its own)."),
    max_degradation: float = typer.Option(..., "--max-degradation", help="Metric loss allowed, as a fraction (0.005 = 0.5 pt)."),
    objective: str = typer.Option("size", "--objective", help="size, latency or both (Pareto)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or tflite."),
    target: str = typer.Option("local", "--target", help="Where latency is measured."),
    budget: str = typer.Option(None, "--budget", help="Wall-clock budget: 90s, 10m, 1h."),
    trials: int = typer.Option(None, "--trials", help="Number of trials (default 20 when no --budget)."),
    workers: int = typer.Option(1, "--workers", help="Trials in parallel."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (auto: a running cluster)."),
    out: Path = typer.Option(Path("runs/tune"), "--out", "-o", help="Study directory (resumes when it exists)."),
    seed: int = typer.Option(0, "--seed"),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Search quantization and pruning settings for the smallest/fastest model within --max-degradation.

    Example: compress tune mnist_cnn.pt --max-degradation 0.005 --budget 10m --workers 2 --out runs/tune
    """
    from pydantic import ValidationError

    from compress.errors import GateFailed, UsageError
    from compress.model import load_model
    from compress.tune import TuneConfig, tune

    with handle_errors(debug):
        try:
            config = TuneConfig(max_degradation=max_degradation, objective=objective, format=fmt, target=target, budget=budget,
                                trials=trials, workers=workers, executor=executor, address=address, seed=seed)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise UsageError(f"--{'-'.join(str(p) for p in error['loc']) or 'options'}: {error['msg'].removeprefix('Value error, ')}") from None
        handle = load_model(model)
        result = tune(handle, config, data, out, on_trial=lambda r: console.print(
            f"trial {r['number']}: {r['size_bytes']:,} bytes, p50 {r['p50_ms'] or 0:.3f} ms, degradation {r['degradation']:.4f} — {r['params']}"))
        document = {"best": result.best, "closest": result.closest, "baseline": result.baseline, "pareto": result.pareto,
                    "out": str(out), "trials": len(result.trials)}
        emit(document, json_out, lambda: console.print((out / "pareto.md").read_text()))
        if result.best is None:
            raise GateFailed(f"no trial met --max-degradation {max_degradation}; the closest is kept in {out} (see pareto.md)")
