"""`compress fleet`: many recipes at once (local worker processes or a Ray cluster), one summary, one exit code.

A verb of its own rather than more arguments to `compress run`: `run` is one recipe into one run directory (with
--set overrides, stage reuse and the report as its --json); a fleet's result is a table of many runs and an exit
code over all of them.
"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import (
    DEBUG_OPTION, JSON_OPTION, TRUST_CODE_FROM_OPTION, TRUST_CODE_OPTION, TRUST_PICKLE_OPTION, console, emit, handle_errors,
    stdout_console,
)


def register(app: typer.Typer) -> None:
    app.command("fleet")(fleet)


def _table(result):
    from rich.table import Table

    table = Table(title=f"fleet: {len(result.rows)} recipes in {result.wall_s:.1f} s, exit {result.exit_code}")
    for column in ("recipe", "exit", "ran on", "recommended", "bytes", "degradation", "gates"):
        table.add_column(column)
    for row in result.rows:
        pick, gates = row.get("recommended") or {}, row.get("gates")
        loss = pick.get("degradation")
        table.add_row(row["name"], str(row["exit_code"]), (row.get("worker") or {}).get("host", "-"),
                      pick.get("artifact", "error: see below" if "error" in row else "-"), f"{pick['size_bytes']:,}" if pick else "-",
                      "-" if loss is None else f"{loss:.4f}",
                      "-" if not gates else f"{gates['passed']}/{gates['total']}" + (f" failed: {', '.join(gates['failed'])}" if gates["failed"] else ""))
    return table


def _render(result) -> None:
    stdout_console.print(_table(result))
    for row in (r for r in result.rows if "error" in r):
        stdout_console.print(f"{row['name']} (exit {row['exit_code']}): {row['error']}", highlight=False, soft_wrap=True)
    if result.compare:
        stdout_console.print(f"side by side: {result.compare} (or `compress report compare {result.out_dir}/*/`)", highlight=False)


def _progress(total: int):
    """A rich bar on stderr: recipes done / total and the ones running now."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("fleet"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                   console=console, transient=True)
    task = bar.add_task("", total=total)

    def update(event: str, done: int, running: list[str]) -> None:
        bar.update(task, completed=done, description=f"running: {', '.join(running)}" if running else "")
        if event != "started":
            console.print(f"finished {event}", highlight=False)

    return bar, update


def fleet(
    recipes: list[Path] = typer.Argument(..., help="Recipe YAML files (e.g. recipes/*.yaml)."),
    out: Path = typer.Option(Path("runs/fleet"), "--out", "-o", help="Each recipe's run directory lands in OUT/<recipe name>/."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (auto: a running cluster; default: start a local Ray)."),
    workers: int = typer.Option(2, "--workers", help="Recipes at once (local workers, or the CPUs of a Ray this command starts)."),
    cpus_per_recipe: int = typer.Option(1, "--cpus-per-recipe", help="Ray CPUs each recipe's task reserves."),
    trust_code: bool = TRUST_CODE_OPTION,
    trust_code_from: list[str] = TRUST_CODE_FROM_OPTION,
    trust_pickle: bool = TRUST_PICKLE_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Run many recipes as independent tasks; one failing recipe never stops the others.

    No shared filesystem is needed: inputs go to the workers as bytes, run directories come back and their sha256 are
    checked. Exit code: 2 if some recipe is bad, else 3 if some task failed in its environment, else 1 if some gate
    failed, else 0. Compare the runs afterwards with `compress report compare OUT/*/`.

    Example: compress fleet recipes/*.yaml --executor ray --address auto --out runs/fleet
    """
    from compress.errors import UsageError
    from compress.recipe.fleet import run_fleet
    from compress.safety.io import make_run_dir
    from compress.recipe.trust import Trust

    with handle_errors(debug, json_out):
        if executor not in ("local", "ray"):
            raise UsageError(f"--executor {executor}: choose local or ray")
        make_run_dir(out)  # a place no run directory can go is refused before any recipe runs
        trust = Trust(code=trust_code, roots=tuple(trust_code_from or ()), pickle=trust_pickle)
        bar, update = _progress(len(recipes))
        with bar:
            result = run_fleet(recipes, out, executor=executor, workers=workers, address=address, trust=trust,
                               cpus_per_recipe=cpus_per_recipe, progress=update)
        emit(result.document(), json_out, lambda: _render(result))
        if result.exit_code:
            raise typer.Exit(result.exit_code)
