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
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize
    from compress.zoo import train_zoo_model

    with handle_errors(debug):
        trained = train_zoo_model(model)
        task = trained.metrics["task"]
        stdout_console.print(f"[bold]{model}[/]: {task['name']} {task['value']:.4f} on the test split "
                             f"({'reused the cached checkpoint' if trained.cached else f'trained in {trained.seconds:.1f}s'}: {trained.path})")
        with step_progress() as step:
            result = quantize(load_model(trained.path), QuantizeConfig(), out_dir=out, step=step)
        stdout_console.print(artifact_table(result.report, out))
        for line in closing_lines(out, result.report):
            stdout_console.print(line, highlight=False, soft_wrap=True, markup=False)


def closing_lines(run_dir: Path, report: dict) -> list[str]:
    """Every file the demo wrote (from disk, so nothing is forgotten) and what to do next with your own model.

    Example:
        >>> closing_lines(Path("runs/demo"), report)[:2]
        ['files written in runs/demo:', '  report.html  open it in a browser: plots, the recommendation, the environment']
    """
    about = {"report.html": "open it in a browser: plots, the recommendation, the environment",
             "report.json": "every figure, machine-readable (`compress report schema`)", "report.md": "the same facts as text",
             "manifest.json": "size and sha256 of every file here, each artifact's format, precision, verified and recommended"}
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    width = max(map(len, files), default=0)
    lines = [f"files written in {run_dir}:"]
    lines += [f"  {name.ljust(width)}  {about.get(name, _describe_artifact(name, report))}".rstrip() for name in files]
    pick = ((report.get("recommended") or {}).get("local-cpu") or {}).get("artifact")
    shipped = next((a["path"] for a in report["artifacts"] if a["name"] == pick), None)
    lines += ["next:",
              f"  open {run_dir / 'report.html'}",
              *([f"  compress verify {run_dir / shipped}      # re-check the recommended file on real inputs"] if shipped else []),
              "  your own model: save it with torch.export.save(torch.export.export(model, example_inputs), 'my.pt2'),",
              "    put its inputs in an .npz (x = the first input, x1, x2 ... the others; y = labels, optional), then",
              "    compress quantize my.pt2 --data my.npz --out runs/mine",
              "  as a reproducible recipe: compress recipe init --model my.pt2 > recipe.yaml && compress recipe validate recipe.yaml"]
    return lines


def _describe_artifact(name: str, report: dict) -> str:
    entry = next((a for a in report["artifacts"] if a.get("path") == name), None)
    if entry is not None:
        return f"{entry['name']}: verified"
    return "failed attempt, kept for inspection" if name.startswith("failed/") else ""
