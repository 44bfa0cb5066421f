"""`compress demo`: the README's main job — train (or reuse) mnist_cnn and quantize it, verified."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import DEBUG_OPTION, handle_errors, stdout_console


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    model: str = typer.Option("mnist_cnn", "--model", help="Zoo model to train and compress."),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."),
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train (or reuse) a zoo model, quantize it to int8 ONNX and TFLite, and print the verified results.

    Example: compress demo --model mnist_cnn
    """
    from compress.commands._progress import step_progress
    from compress.commands._render import artifact_table
    from compress.model import load_model
    from compress.quantize import QuantizeConfig, quantize
    from compress.zoo import train_zoo_model

    with handle_errors(debug):
        trained = train_zoo_model(model)
        task = trained.metrics["task"]
        stdout_console.print(f"[bold]{model}[/]: {task['name']} {task['value']:.4f} on the test split "
                             f"({'reused the cached checkpoint' if trained.cached else f'trained in {trained.seconds:.1f}s'}: {trained.path})")
        with step_progress() as step:
            result = quantize(load_model(trained.path), QuantizeConfig(), out_dir=out, step=step)
        stdout_console.print(artifact_table(result.report, out))
