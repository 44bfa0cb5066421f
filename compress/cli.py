"""The `compress` command line: parses, calls the Python API, renders. Verbs live in compress/commands/.

Example:
    $ compress zoo train mnist_cnn
    $ compress quantize ~/.cache/compress/zoo/mnist_cnn-w1-e10-s0.pt --out runs/mnist
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from compress import __version__, commands
from compress.commands._common import VERBOSE, JsonErrorsGroup

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
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Show third-party logs and warnings (native converter logs, "
                                 "FutureWarnings) and, at the end, the time each phase took; accepted anywhere on the line, "
                                 "as is --debug."),
) -> None:
    """Make trained PyTorch models small and fast for phones and edge boards, and prove it."""
    VERBOSE["on"] = verbose


for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    if not info.name.startswith("_"):
        importlib.import_module(f"compress.commands.{info.name}").register(app)


def main() -> None:
    """The console script: third-party noise off unless ``--verbose`` or ``--debug`` is anywhere on the line."""
    loud = {"--verbose", "--debug"} & set(sys.argv[1:])
    rest = [a for a in sys.argv[1:] if a != "--verbose"]  # a global flag, so not a verb's option: the root takes it
    sys.argv = [sys.argv[0], *(["--verbose"] if "--verbose" in loud and rest else []), *rest]
    if loud:
        app()
        return
    from compress.quiet import native_log_tail, silence_third_party

    log = silence_third_party()
    try:
        app()
    except SystemExit as exc:
        if exc.code == 3 and (tail := native_log_tail(log)):
            print("native library log (last lines; rerun with --verbose to see it as it happens):", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
