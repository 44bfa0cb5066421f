"""`compress report schema|validate`: the public report.json contract."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from compress.commands._common import DEBUG_OPTION, console, handle_errors

report_app = typer.Typer(help="The report.json contract: print its JSON Schema, validate a report.", no_args_is_help=True)


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
    """Check a report.json against the schema; exit 2 with the first problem.

    Example: compress report validate runs/mnist
    """
    from compress.errors import UsageError
    from compress.report import ReportInvalid, validate_report

    with handle_errors(debug):
        file = path / "report.json" if path.is_dir() else path
        if not file.is_file():
            raise UsageError(f"{file} not found; give a run directory or its report.json")
        try:
            validate_report(json.loads(file.read_text()))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{file} is not JSON ({exc})") from None
        except ReportInvalid as exc:
            raise UsageError(str(exc)) from None
        console.print(f"{file}: valid (schema_version 1)")
