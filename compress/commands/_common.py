"""What every verb shares: error → exit-code mapping, `--json` output, the stderr console.

Example:
    >>> @app.command()
    ... def verb(json_out: bool = JSON_OPTION, debug: bool = DEBUG_OPTION):
    ...     with handle_errors(debug):
    ...         emit(result_dict, json_out, render=lambda: console.print(table))
"""
from __future__ import annotations

import contextlib
import json
import sys
from typing import Callable, Iterator

import typer
from rich.console import Console

from compress.errors import CompressError

console = Console(stderr=True)  # progress and tables go to stderr when --json owns stdout
stdout_console = Console()

JSON_OPTION = typer.Option(False, "--json", help="Print exactly one JSON document on stdout (logs go to stderr).")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show tracebacks on errors.")
# How a model is loaded and its artifacts timed: the same options on every verb that takes a model.
ARCH_OPTION = typer.Option(None, "--arch", help="For a state_dict: package.module:Class or a zoo name.")
ARCH_KWARGS_OPTION = typer.Option(None, "--arch-kwargs", help="key=value for --arch's constructor (repeatable).")
INPUT_SHAPE_OPTION = typer.Option(None, "--input-shape", help="Input shape like 1x3x64x64, 1x16:int64 or name=1x8 (repeatable).")
TRUST_PICKLE_OPTION = typer.Option(False, "--trust-pickle", help="Allow loading a fully pickled nn.Module (executes code from the file).")
NO_BENCH_OPTION = typer.Option(False, "--no-bench", help="Skip latency measurement.")
RUNS_OPTION = typer.Option(100, "--runs", help="Timed runs per artifact.")
THREADS_OPTION = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own).")
SEED_OPTION = typer.Option(0, "--seed", help="Seed for data splits, calibration subsets and training.")


@contextlib.contextmanager
def handle_errors(debug: bool = False) -> Iterator[None]:
    """Turn CompressError into one red line and its exit code; anything else is exit 3 with the cause."""
    try:
        yield
    except typer.Exit:
        raise
    except CompressError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: nothing half-written was left behind")
        raise typer.Exit(130) from None
    except Exception as exc:  # an internal failure: name it, exit 3
        if debug:
            raise
        from compress.io import unwritable_message

        if unwritable_message(exc):  # a full disk or a read-only folder outside the run directory
            console.print(f"[bold red]error:[/] {unwritable_message(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(3) from None
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {first} (rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
        raise typer.Exit(3) from None


def emit(document: dict | list, json_out: bool, render: Callable[[], None]) -> None:
    """With --json print one JSON document on stdout; otherwise render tables for people."""
    if json_out:
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        render()


def parse_kwargs(pairs: list[str] | None) -> dict:
    """``["width=0.5", "classes=10"]`` → ``{"width": 0.5, "classes": 10}`` (values parsed as YAML scalars)."""
    import yaml

    from compress.errors import UsageError

    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"bad key=value {pair!r}; write it like width=0.5")
        result[key.strip()] = yaml.safe_load(value)
    return result
