"""The `compress` command line: parses, calls the Python API, renders. Verbs live in compress/commands/.

Example:
    $ compress zoo train mnist_cnn
    $ compress quantize ~/.cache/compress/zoo/mnist_cnn-w1-e10-s0.pt --out runs/mnist
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pkgutil
import signal
import sys
import threading
from typing import NoReturn

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
    """The console script: third-party noise off unless ``--verbose`` or ``--debug`` is anywhere on the line; SIGTERM
    ends a command as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _interrupt)
    plain_help_when_piped()
    loud = {"--verbose", "--debug"} & set(sys.argv[1:])
    rest = [a for a in sys.argv[1:] if a != "--verbose"]  # a global flag, so not a verb's option: the root takes it
    sys.argv = [sys.argv[0], *(["--verbose"] if "--verbose" in loud and rest else []), *rest]
    if loud:
        leave(exit_code(app))
    from compress.safety.quiet import native_log_tail, silence_third_party

    log = silence_third_party()
    try:
        code = exit_code(app)
        if code == 3 and (tail := native_log_tail(log)):
            print("native library log (last lines; rerun with --verbose to see it as it happens):", *tail, sep="\n", file=sys.stderr)
    finally:
        log.unlink(missing_ok=True)
    leave(code)


def plain_help_when_piped() -> None:
    """``--help`` into a pipe (CI logs, ``| less``, a file) is plain text wrapped to the page, not rich's 80-column box;
    on a terminal it stays rich.

    Example:
        $ compress quantize --help | less      # Usage:, Options: and one option per line, no box drawing
    """
    if not sys.stdout.isatty():
        app.rich_markup_mode = None


def _interrupt(signum, frame) -> NoReturn:
    """SIGTERM (a CI timeout, ``kill``): unwind as Ctrl-C does, so that the run directory's staging area is removed,
    its lock released and the second process stopped (exit 130); nothing unverified gets a final name either way."""
    raise KeyboardInterrupt


def exit_code(command) -> int:
    """Run ``command()``; the exit status it ends with (a SystemExit message is printed, status 1, as Python does;
    an interrupt outside a verb's work is 130)."""
    try:
        command()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def leave(code: int) -> NoReturn:
    """Exit with ``code`` without unloading torch, onnxruntime and litert-torch, which takes the interpreter 1-2 s:
    exit handlers run and the streams are flushed first, as at a normal exit. With a non-daemon thread still running,
    a normal exit (which waits for it)."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
