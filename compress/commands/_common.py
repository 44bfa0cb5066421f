"""What every verb shares: error → exit-code mapping, `--json` output, the stdout (result) and stderr (story) consoles.

Example:
    >>> @app.command()
    ... def verb(json_out: bool = JSON_OPTION, debug: bool = DEBUG_OPTION):
    ...     with handle_errors(debug, json_out):
    ...         emit(result_dict, json_out, render=lambda: stdout_console.print(table))

With ``--json``, a verb that fails with exit 2 or 3 prints ``{"error": "<the line>", "exit_code": N}`` on stdout.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable, Iterator

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from typer.core import TyperGroup

from compress.errors import CompressError
from compress.safety.jsonsafe import dumps
from compress.safety.quiet import library_output_aside, result_stream, story_stream, third_party_loggers

# Where text goes follows git, pip and ruff: stdout is the result (tables, summaries, the --json document), stderr is
# the story (progress, logs, warnings, the one error line). A terminal wraps at its width; a pipe or a CI log gets
# every line at full width, so no table cuts a number into `0.08…`.
PIPE_WIDTH = 10_000


class FullWidthWhenPiped(Console):
    """A rich Console that renders at PIPE_WIDTH columns when its stream is not a terminal (checked at each print),
    on compress's own stderr or stdout (compress.safety.quiet: also while libraries' output is set aside)."""

    @property
    def file(self):
        return self._file or (story_stream() if self.stderr else result_stream())

    @file.setter
    def file(self, new_file) -> None:
        self._file = new_file

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


console = FullWidthWhenPiped(stderr=True)  # the story: progress, logs, warnings, errors
stdout_console = FullWidthWhenPiped()  # the result: tables and summaries
VERBOSE = {"on": False}  # --verbose on the line (set by the root command): also the time per phase, on stderr

def _format_help() -> str:
    from compress.backends import default_formats, quantizable

    return f"Any of {', '.join(quantizable())} (comma-separated). Default: {', '.join(default_formats())}."


FORMAT_OPTION = typer.Option(None, "--format", "-f", help=_format_help())
JSON_OPTION = typer.Option(False, "--json", help="Print exactly one JSON document on stdout (logs go to stderr).")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show tracebacks on errors.")
# How a model is loaded and its artifacts timed: the same options on every verb that takes a model.
ARCH_OPTION = typer.Option(None, "--arch", help="For a state_dict: package.module:Class, path/to/file.py:Class or a zoo name.")
ARCH_KWARGS_OPTION = typer.Option(None, "--arch-kwargs", help="key=value for --arch's constructor (repeatable).")
INPUT_SHAPE_OPTION = typer.Option(None, "--input-shape", help="Input shape like 1x3x64x64, 1x16:int64 or name=1x8 (repeatable).")
BATCH_AXIS_OPTION = typer.Option(None, "--batch-axis", help="An input whose batch is not on axis 0, like state=1 for a (layers, batch, H) state (repeatable; default: from the export's dynamic dims).")
STATE_OPTION = typer.Option(None, "--state", help="An input fed back from an output, like state=output_1: the model is also evaluated over a stream (repeatable; default: inferred from same shape and a state-like name).")
TRUST_PICKLE_OPTION = typer.Option(False, "--trust-pickle", help="Allow loading a pickled nn.Module, or a .pt2 with pickled entries or code (executes code from the file).")
TRUST_CODE_OPTION = typer.Option(False, "--trust-code", help="Allow the recipe's package.module:Name entries (model.arch, data.name, "
                                  "a distill student) to be imported and run.")
TRUST_CODE_FROM_OPTION = typer.Option(None, "--trust-code-from", metavar="PKG",
                                      help="Allow only names under this import root, e.g. mypkg (repeatable).")
NO_BENCH_OPTION = typer.Option(False, "--no-bench", help="Skip latency measurement.")
RUNS_OPTION = typer.Option(100, "--runs", help="Timed runs per artifact, at most (timing stops earlier once the median is known to ±2 %).")
THREADS_OPTION = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own).")
SEED_OPTION = typer.Option(0, "--seed", help="Seed for data splits, calibration subsets and training.")
# How artifacts are judged (compress.steps.gates): the same options on every verb that judges artifacts.
OUTPUT_KIND_OPTION = typer.Option(None, "--output-kind", help=(
    "Declare an output's kind, NAME=classes|probabilities|embedding|regression|state (repeatable; default: inferred)."))
NO_GATE_OPTION = typer.Option(False, "--no-gate", help="Judge nothing: exit 0 whatever the artifacts lost (the report says gates were off).")


def gate_policy(max_degradation: float | None, no_gate: bool):
    """The compress.steps.gates.GatePolicy of ``--max-degradation`` / ``--no-gate`` (default gates on)."""
    from compress.steps.gates import GatePolicy

    return GatePolicy(enabled=not no_gate, max_degradation=max_degradation)


def declare_output_kinds(handle, pairs: list[str] | None):
    """Set ``--output-kind NAME=KIND`` values on ``handle`` (a bad kind is exit 2); return the handle."""
    from compress.errors import UsageError
    from compress.data.outputs import parse_output_kinds

    try:
        handle.output_kinds = parse_output_kinds([item for value in pairs or [] for item in value.split(",") if item.strip()])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return handle


@contextlib.contextmanager
def quiet_third_party_logs(debug: bool) -> Iterator[None]:
    """Silence compress.safety.quiet's third-party loggers inside the block unless ``debug``; their levels are restored afterwards.

    They log warnings and tracebacks of their own (torch.export.load logs one before compress reports the file as
    unreadable); without --debug the CLI's one error line is the whole story.
    """
    if debug:
        yield
        return
    loggers = [logging.getLogger(name) for name in third_party_loggers()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _fail(label: str, message: str, exit_code: int, json_out: bool) -> typer.Exit:
    """Print ``label: message`` on stderr, plus, with --json on exit 2 or 3, ``{"error": message, "exit_code": N}`` on
    stdout (a failed gate, exit 1, has already printed its report there); the Exit to raise."""
    console.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)  # [x] is text, not markup
    if json_out and exit_code != 1:
        result_stream().write(dumps({"error": message, "exit_code": exit_code}) + "\n")
        result_stream().flush()
    return typer.Exit(exit_code)


def _hide_flag_metavars(command) -> None:
    """``--json`` takes no value, so ``--help`` shows no ``<bool>`` beside it (typer labels every flag so)."""
    from typer._click import Context  # typer's vendored click

    for param in [*command.params, command.get_help_option(Context(command))]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_metavars(sub)


class JsonErrorsGroup(TyperGroup):
    """The root command: with ``--json`` anywhere on the line, click's own parse errors (``--runs abc``, an unknown
    option or verb) also become one stderr line plus ``{"error": ..., "exit_code": 2}`` on stdout. A number outside
    its range (compress.commands._options.OPTION_BOUNDS) is one stderr line, with or without ``--json``."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from compress.commands._options import OptionOutOfRange, bound_options

        _hide_flag_metavars(self)
        bound_options(self)
        argv = sys.argv[1:] if args is None else list(args)
        try:
            return self._main(argv, prog_name, complete_var, standalone_mode, **extra)
        except OptionOutOfRange as exc:
            sys.exit(_fail("error", str(exc), exc.exit_code, json_out="--json" in argv).exit_code)

    def _main(self, argv, prog_name, complete_var, standalone_mode, **extra):
        if "--json" not in argv or not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # typer's (vendored) click parse errors
            code = _fail("error", f"{exc.format_message()} (see --help)", 2, json_out=True).exit_code
        except typer.Abort:
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


def validation_message(exc) -> str:
    """A pydantic ValidationError of CLI options as one line naming the option: ``--epochs: ... (got 0)``."""
    error = exc.errors()[0]
    where = "-".join(str(p) for p in error["loc"]).replace("_", "-")
    message = error["msg"].removeprefix("Value error, ")
    if where and error["type"] != "value_error":
        message += f" (got {error['input']!r})"
    return f"--{where}: {message}" if where else message


@contextlib.contextmanager
def handle_errors(debug: bool = False, json_out: bool = False) -> Iterator[None]:
    """Turn CompressError into one red line and its exit code; anything else is exit 3 with the cause.

    With ``json_out`` (the verb's --json) the line also goes to stdout as ``{"error": ..., "exit_code": N}``, and
    nothing else reaches stdout inside the block: what libraries print there (from Python or C) goes to stderr, or to
    the native log without --verbose (compress.safety.quiet.library_output_aside). A pydantic ValidationError escaping a verb
    is its options' fault (exit 2). Third-party loggers are silent inside the block unless ``debug``.
    """
    from pydantic import ValidationError

    with library_output_aside(json_out):
        try:
            with quiet_third_party_logs(debug):
                yield
        except typer.Exit:
            raise
        except CompressError as exc:
            if debug:
                raise
            raise _fail("error", str(exc), exc.exit_code, json_out) from None
        except ValidationError as exc:
            if debug:
                raise
            raise _fail("error", validation_message(exc), 2, json_out) from None
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (compress.cli)
            raise _fail("error", "interrupted: nothing half-written was left behind", 130, json_out) from None
        except Exception as exc:  # an internal failure: name it, exit 3
            if debug:
                raise
            from compress.safety.io import unwritable_message

            if unwritable_message(exc):  # a full disk or a read-only folder outside the run directory
                console.print(f"[bold red]error:[/] {unwritable_message(exc)}", highlight=False, soft_wrap=True)
                raise typer.Exit(3) from None
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise _fail("internal error", f"{type(exc).__name__}: {first} (rerun with --debug for the traceback)", 3, json_out) from None


def emit(document: dict | list, json_out: bool, render: Callable[[], None]) -> None:
    """With --json print one JSON document on stdout (non-finite numbers as null); otherwise ``render()`` prints the
    result for people, on stdout_console. With --verbose, a report's ``timings`` follow as a table on stderr."""
    if json_out:
        result_stream().write(dumps(document) + "\n")
        result_stream().flush()
    else:
        render()
    if VERBOSE["on"] and isinstance(document, dict) and document.get("timings"):
        print_timings(document["timings"])


def print_timings(timings: dict) -> None:
    """The run's time per phase (report.json ``timings``) as a table on stderr."""
    from rich.table import Table

    from compress.steps.phases import timing_rows

    table = Table("phase", "wall", "CPU", title="time per phase", title_justify="left")
    for row in timing_rows(timings):
        table.add_row(*row)
    console.print(table)


def parse_kwargs(pairs: list[str] | None) -> dict:
    """``["width=0.5", "classes=10"]`` → ``{"width": 0.5, "classes": 10}`` (values parsed as YAML scalars)."""
    import yaml

    from compress.errors import UsageError
    from compress.safety.yamlsafe import safe_load

    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad key=value {pair!r}; write it like width=0.5")
        try:
            result[key.strip()] = safe_load(value)
        except yaml.YAMLError as exc:
            raise UsageError(f"bad value in {pair!r}: not a YAML value ({getattr(exc, 'problem', None) or 'unreadable'}); "
                             "quote it or close its brackets") from None
    return result
