"""Rich renderings shared by verbs: the artifact table (progress displays are in compress.commands._progress)."""
from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

# The terminal table fits 80 columns: the artifact name already says format and precision (and so the runtime),
# and the metric's name is printed once, under the table. report.md keeps every column.
TERMINAL_COLUMNS = {"artifact": "artifact", "bytes": "bytes", "metric": "metric", "degradation": "degr.",
                    "top-1 agree": "top-1", "SQNR dB": "SQNR", "p50 ms (b=1)": "p50 ms", "vs fp32": "speedup"}


def artifact_table(report: dict, run_dir: Path) -> Group:
    from compress.data.intervals import interval_text  # imported late: `compress --help` stays fast
    from compress.data.outputs import kind_line
    from compress.report.markdown import ARTIFACT_COLUMNS, artifact_rows

    table = Table(title=f"{report.get('command', 'run')}: {report['source']['path']}")
    keep = [ARTIFACT_COLUMNS.index(column) for column in TERMINAL_COLUMNS]
    for header in TERMINAL_COLUMNS.values():
        table.add_column(header, justify="left" if header == "artifact" else "right", no_wrap=True)
    for row in artifact_rows(report):
        cells = [row[i] for i in keep]
        cells[2] = cells[2].rsplit(" ", 1)[-1]  # "accuracy 0.9833" -> "0.9833"
        table.add_row(*cells)
    lines = [table]
    ref = report["reference"]["metrics"].get("task")
    if ref:
        lines.append(Text(f"reference (fp32 torch): {ref['name']} {ref['value']:.4f} on {report['dataset']['samples']} test samples"))
    recommended = (report.get("recommended") or {}).get("local-cpu")
    if recommended:
        lines.append(Text.from_markup(f"[bold green]recommended for this CPU:[/] {recommended['artifact']} — {recommended['why']}"))
    intervals = [line for line in map(interval_text, report["artifacts"]) if line]
    if intervals:
        lines += [Text("95 % intervals (from per-sample outcomes):"), *(Text(f"  {line}") for line in intervals)]
    for artifact in report["artifacts"]:
        for note in artifact.get("notes", []):
            lines.append(Text(f"• {artifact['name']}: {note}", style="yellow" if "not faster" in note else ""))
    for note in report.get("notes", []):
        lines.append(Text(f"! {note}", style="bold red"))
    for output in report["reference"].get("outputs") or []:
        lines.append(Text(f"output {kind_line(output)}"))
    summary = (report.get("verdict") or {}).get("summary")
    if summary:
        lines.append(Text(f"verdict: {summary}", style="bold" if report["passed"] else "bold red"))
    for note in (report.get("verdict") or {}).get("notes", []):
        lines.append(Text(f"  - {note}"))
    for gate in report["gates"]:
        if not gate["passed"]:
            result = "" if gate.get("outcome") == "undecided" else " FAILED"  # an undecided reason starts "undecided: "
            lines.append(Text(f"gate {gate['name']}{result} for {gate['artifact']}: {gate['reason']}", style="bold red"))
    lines.append(Text(f"run directory: {run_dir} (report.json, report.md)"))
    return Group(*lines)
