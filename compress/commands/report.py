"""`compress report schema|validate|compare`: the public report.json contract and side-by-side runs."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from compress.commands._common import DEBUG_OPTION, JSON_OPTION, console, emit, handle_errors, stdout_console

report_app = typer.Typer(help="Reports: print the report.json JSON Schema, validate a report, compare runs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


@report_app.command("schema")
def schema() -> None:
    """Print the packaged JSON Schema of report.json (for CI jobs and editors).

    Example: compress report schema > report.schema.json
    """
    from compress.report import load_schema

    typer.echo(json.dumps(load_schema(), indent=2))


@report_app.command("validate")
def validate(path: Path = typer.Argument(..., help="A report.json or a run directory."), debug: bool = DEBUG_OPTION) -> None:
    """Check a report.json against the schema; exit 2 with the first problem (non-UTF-8 or non-standard JSON
    such as NaN literals included).

    Example: compress report validate runs/mnist
    """
    from compress.errors import UsageError
    from compress.safety.jsonsafe import read_json
    from compress.report import ReportInvalid, validate_report

    with handle_errors(debug):
        file = path / "report.json" if path.is_dir() else path
        if not file.is_file():
            raise UsageError(f"{file} not found; give a run directory or its report.json")
        try:
            version = validate_report(read_json(file))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{file} is not JSON ({exc})") from None
        except ReportInvalid as exc:
            raise UsageError(str(exc)) from None
        stdout_console.print(f"{file}: valid (schema_version {version})")


@report_app.command("compare")
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories."),
    html_out: Path = typer.Option(None, "--html", help="Also write a self-contained HTML page with plots."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Put runs side by side: every artifact's size, metric, degradation and latency, plus trade-off plots.

    Example: compress report compare runs/ptq runs/prune-int8 --html compare.html
    """
    from rich.table import Table

    from compress.safety.io import write_text_atomic
    from compress.report.compare import COMPARE_COLUMNS, compare_rows, compare_runs, data_warnings

    with handle_errors(debug, json_out):
        runs, page = compare_runs(run_dirs)
        for warning in data_warnings(runs):
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if html_out:
            write_text_atomic(html_out, page)

        def render() -> None:
            table = Table(title=f"{len(runs)} runs")
            for column in COMPARE_COLUMNS:
                table.add_column(column)
            for row in compare_rows(runs):
                table.add_row(*row)
            stdout_console.print(table)
            if html_out:
                stdout_console.print(f"HTML: {html_out}")

        emit({"runs": {name: report for name, report in runs.items()}}, json_out, render)
