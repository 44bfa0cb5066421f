"""Rich renderings shared by verbs: the artifact table and a step progress bar."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from rich.console import Group
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from compress.commands._common import console
from compress.report.markdown import ARTIFACT_COLUMNS, artifact_rows


@contextlib.contextmanager
def step_progress(transient: bool = False) -> Iterator:
    """Yield ``step(message)``; each call closes the previous step and shows the new one with its time."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=transient) as progress:
        current = {"task": None}

        def step(message: str) -> None:
            if current["task"] is not None:
                progress.update(current["task"], completed=1, total=1)
            current["task"] = progress.add_task(message, total=None)

        yield step
        if current["task"] is not None:
            progress.update(current["task"], completed=1, total=1)


def artifact_table(report: dict, run_dir: Path) -> Group:
    table = Table(title=f"{report.get('command', 'run')}: {report['source']['path']}")
    for column in ARTIFACT_COLUMNS:
        table.add_column(column, justify="left" if column in ("artifact", "format", "precision", "verified in") else "right")
    for row in artifact_rows(report):
        table.add_row(*row)
    lines = [table]
    ref = report["reference"]["metrics"].get("task")
    if ref:
        lines.append(Text(f"reference (fp32 torch): {ref['name']} {ref['value']:.4f} on {report['dataset']['samples']} test samples"))
    recommended = (report.get("recommended") or {}).get("local-cpu")
    if recommended:
        lines.append(Text.from_markup(f"[bold green]recommended for this CPU:[/] {recommended['artifact']} — {recommended['why']}"))
    for artifact in report["artifacts"]:
        for note in artifact.get("notes", []):
            lines.append(Text(f"• {artifact['name']}: {note}", style="yellow" if "not faster" in note else ""))
    for note in report.get("notes", []):
        lines.append(Text(f"! {note}", style="bold red"))
    for gate in report["gates"]:
        if not gate["passed"]:
            lines.append(Text(f"gate {gate['name']} FAILED for {gate['artifact']}: {gate['value']} > {gate['limit']}", style="bold red"))
    lines.append(Text(f"run directory: {run_dir} (report.json, report.md)"))
    return Group(*lines)
