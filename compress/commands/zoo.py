"""`compress zoo list|train|eval`: the seed models, trained on real offline data."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from compress.commands._common import DEBUG_OPTION, JSON_OPTION, emit, handle_errors, stdout_console
from compress.commands._progress import training_progress

zoo_app = typer.Typer(help="The seed model zoo: list, train and evaluate the reference networks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def list_models(json_out: bool = JSON_OPTION) -> None:
    """List the zoo: name, source article, parameters, input shape, dataset, reference metric.

    Example: compress zoo list --json
    """
    from compress.data.evaluate import metric_text
    from compress.zoo import ZOO

    rows = []
    for entry in ZOO.values():
        params = sum(p.numel() for p in entry.build().parameters())
        rows.append({
            "name": entry.name,
            "article": entry.article,
            "architecture": entry.architecture,
            "parameters": params,
            "inputs": [t.to_dict() for t in entry.inputs],
            "dataset": entry.dataset,
            "default_epochs": entry.epochs,
            "reference_metric": entry.expected or None,
        })

    def render() -> None:
        table = Table(title="compress model zoo (trained on real offline data)")
        for column in ("name", "article", "parameters", "input", "dataset", "reference (seed 0)"):
            table.add_column(column, justify="right" if column == "parameters" else "left")
        for row in rows:
            shape = "; ".join(f"{t['name']} {'x'.join('N' if d < 0 else str(d) for d in t['shape'])} {t['dtype']}" for t in row["inputs"])
            table.add_row(row["name"], row["article"], f"{row['parameters']:,}", shape, row["dataset"], metric_text(row["reference_metric"]))
        stdout_console.print(table)

    emit({"models": rows}, json_out, render)


@zoo_app.command("train")
def train(
    name: str = typer.Argument(..., help="Zoo model name (see `compress zoo list`)."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the checkpoint here (it is always cached)."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (default: the model's own)."),
    seed: int = typer.Option(0, "--seed", help="Seed for init, shuffling and the data split."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier (e.g. 0.25 for a distillation student)."),
    force: bool = typer.Option(False, "--force", help="Retrain even if a cached checkpoint exists."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Train a zoo model on its dataset (or reuse the cached checkpoint) and save it.

    Example: compress zoo train mnist_cnn --out mnist_cnn.pt
    """
    from compress.data.evaluate import metric_text
    from compress.safety.io import check_output_file
    from compress.zoo import train_zoo_model, zoo_entry
    from compress.zoo.train import check_epochs

    with handle_errors(debug, json_out):
        entry = zoo_entry(name)
        if epochs is not None:
            check_epochs(epochs)
        if out is not None:
            check_output_file(out)  # before training, not after it
        total = epochs or entry.epochs
        with training_progress(f"training {name}", total, transient=json_out) as (on_epoch, _):  # a cached checkpoint draws no bar
            result = train_zoo_model(name, out=out, epochs=epochs, seed=seed, width=width, reuse=not force,
                                     on_epoch=lambda epoch, loss: on_epoch({"loss": loss}))
        document = {
            "name": name,
            "path": str(result.path),
            "cached": result.cached,
            "train_seconds": round(result.seconds, 2),
            "metrics": result.metrics,
            "parameters": sum(p.numel() for p in result.model.parameters()),
        }
        emit(document, json_out, lambda: stdout_console.print(
            f"[green]{name}[/]: {metric_text(result.metrics.get('task'))} on the test split "
            f"({'reused cached checkpoint' if result.cached else f'trained in {result.seconds:.1f}s'}) → {result.path}"
        ))


@zoo_app.command("eval")
def evaluate(
    path: Path = typer.Argument(..., help="A zoo checkpoint (.pt)."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Evaluate a zoo checkpoint on the test split of the dataset it was trained on.

    Example: compress zoo eval mnist_cnn.pt --json
    """
    from compress.errors import UsageError
    from compress.data.evaluate import metric_text
    from compress.loading.model import load_model
    from compress.zoo.train import evaluate_module

    with handle_errors(debug, json_out):
        handle = load_model(path)
        if handle.source_format != "zoo":
            raise UsageError(f"{path} is a {handle.source_format} model, not a zoo checkpoint; use `compress quantize --data ...` to evaluate it")
        metrics = evaluate_module(handle.module, handle.dataset["name"], handle.dataset["split_seed"])
        document = {"path": str(path), "arch": handle.arch, "dataset": handle.dataset, "metrics": metrics}
        emit(document, json_out, lambda: stdout_console.print(f"{handle.arch['name']}: {metric_text(metrics['task'])} on {metrics['samples']} test samples"))
