"""The `compress` command line: parses, calls the Python API, renders. Verbs live in compress/commands/.

Example:
    $ compress zoo train mnist_cnn
    $ compress quantize ~/.cache/compress/zoo/mnist_cnn-w1-e10-s0.pt --out runs/mnist
"""
from __future__ import annotations

import importlib
import pkgutil

import typer

from compress import __version__, commands
from compress.commands._common import JsonErrorsGroup

app = typer.Typer(
    name="compress",
    cls=JsonErrorsGroup,
    help="Make trained PyTorch models small and fast for phones and edge boards, and prove it.\n\n"
    "Quantize, prune, distill; export to ONNX and TFLite; verify every artifact in its real runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compress {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Make trained PyTorch models small and fast for phones and edge boards, and prove it."""


for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    if not info.name.startswith("_"):
        importlib.import_module(f"compress.commands.{info.name}").register(app)


def main() -> None:
    app()
if __name__ == "__main__":
    main()
