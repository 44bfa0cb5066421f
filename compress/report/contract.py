"""Build, validate and write report.json per shared/report-contract.md: a run's report is a
compress.report.model.Report, and report.json is that model serialised.

Example:
    >>> report = new_report(handle.source_dict(), dataset=None, reference={"metrics": {"task": None}, "size_bytes": 0})
    >>> validate_report(report_document(report))
    2
"""
from __future__ import annotations

import datetime as _dt
import json
from importlib import resources
from pathlib import Path

from compress import __version__
from compress.safety.io import write_json_atomic
from compress.safety.jsonsafe import finite

from compress.report.model import SCHEMA_VERSION, Report, report_json_schema

SCHEMA_FILES = {1: "schema_v1.json", 2: "schema.json"}   # readers accept both; writers write SCHEMA_VERSION


class ReportInvalid(ValueError):
    """A report that breaks the contract (a bug in compress, never the user's fault)."""


def load_schema(version: int = SCHEMA_VERSION) -> dict:
    return json.loads(resources.files("compress.report").joinpath(SCHEMA_FILES[version]).read_text(encoding="utf-8"))


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_report(source: dict, dataset: dict | None, reference: dict) -> Report:
    """A run's report before anything is judged: no artifacts, no gates, created now."""
    return Report.model_validate({
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "compress", "version": __version__},
        "created": utc_now(),
        "source": source,
        "dataset": dataset,
        "reference": reference,
        "artifacts": [],
        "gates": [],
        "passed": True,
        "verdict": {"gates": "on", "judged_by": [], "summary": "nothing judged yet", "notes": []},
    })


def read_report(document: dict) -> Report:
    """A report.json's content (already JSON-parsed) as the model, after checking it against its schema version's
    schema (:class:`ReportInvalid` otherwise); a version-1 report is refused, since it cannot be written back as v2.

    Example:
        >>> read_report(read_json("runs/mnist/report.json")).artifacts[0].name
        'fp32-onnx'
    """
    version = validate_report(document)
    if version != SCHEMA_VERSION:
        raise ReportInvalid(f"report.json is schema_version {version}: written by an older compress; run the verb again to rewrite it")
    return Report.model_validate(document)


def report_document(report: Report) -> dict:
    """report.json's content: every field the report was given (an explicit null included, an unset optional one left
    out), ``local-cpu`` by its name, non-finite figures written as null and named in ``notes`` (:func:`null_nonfinite`).

    Example:
        >>> report_document(new_report(source, None, reference))["verdict"]["summary"]
        'nothing judged yet'
    """
    return null_nonfinite(report.model_dump(by_alias=True, exclude_unset=True))


def validate_report(report: dict) -> int:
    """Check ``report`` against the schema of its ``schema_version`` (1 or 2); return that version.

    The current version is checked against the schema generated now (schema.json plus any format, precision or
    runtime registered since), older ones against their shipped file."""
    import jsonschema

    version = report.get("schema_version") if isinstance(report, dict) else None
    if version not in SCHEMA_FILES:
        raise ReportInvalid(f"report.json breaks the contract at schema_version: {version!r} is not one of {sorted(SCHEMA_FILES)}")
    schema = report_json_schema() if version == SCHEMA_VERSION else load_schema(version)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(report), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(root)"
        raise ReportInvalid(f"report.json breaks the contract at {where}: {first.message}")
    return version


def null_nonfinite(report: dict) -> dict:
    """Replace NaN/infinite figures in ``report`` (in place) by null, each named in the report's ``notes``.

    Example:
        >>> null_nonfinite({"reference": {"size_bytes": 1, "metrics": {"task": {"value": float("nan")}}}})["notes"]
        ['reference.metrics.task.value was not finite (NaN or infinite): written as null']
    """
    clean, paths = finite(report)
    report.clear()
    report.update(clean)
    if paths:
        report.setdefault("notes", []).extend(f"{path} was not finite (NaN or infinite): written as null" for path in paths)
    return report


def write_report(run_dir: str | Path, report: Report) -> Path:
    """Serialise ``report`` (:func:`report_document`), validate it, then write ``run_dir/report.json`` atomically."""
    return _write_document(run_dir, report_document(report))


def write_report_files(run_dir: str | Path, report: Report) -> dict:
    """Write report.json (:func:`write_report`) and render report.md and report.html from the same document; return it.

    Example:
        >>> write_report_files("runs/mnist", report)["passed"]
        True
    """
    from compress.report.html import write_html
    from compress.report.markdown import write_markdown

    document = report_document(report)
    _write_document(run_dir, document)
    write_markdown(run_dir, document)
    write_html(run_dir, document)
    return document


def _write_document(run_dir: str | Path, document: dict) -> Path:
    validate_report(document)
    path = Path(run_dir) / "report.json"
    write_json_atomic(path, document)
    return path
