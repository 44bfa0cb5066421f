"""Build, validate and write report.json per shared/report-contract.md.

Example:
    >>> report = new_report(handle.source_dict(), dataset=None, reference={"metrics": {"task": None}, "size_bytes": 0})
    >>> validate_report(report)
"""
from __future__ import annotations

import datetime as _dt
import json
from importlib import resources
from pathlib import Path

from compress import __version__
from compress.safety.io import write_json_atomic
from compress.safety.jsonsafe import finite

from compress.report.model import SCHEMA_VERSION, report_json_schema

SCHEMA_FILES = {1: "schema_v1.json", 2: "schema.json"}   # readers accept both; writers write SCHEMA_VERSION


class ReportInvalid(ValueError):
    """A report that breaks the contract (a bug in compress, never the user's fault)."""


def load_schema(version: int = SCHEMA_VERSION) -> dict:
    return json.loads(resources.files("compress.report").joinpath(SCHEMA_FILES[version]).read_text(encoding="utf-8"))


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_report(source: dict, dataset: dict | None, reference: dict) -> dict:
    return {
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
    }


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


def write_report(run_dir: str | Path, report: dict) -> Path:
    """Null non-finite figures (:func:`null_nonfinite`), validate, then write ``run_dir/report.json`` atomically."""
    validate_report(null_nonfinite(report))
    path = Path(run_dir) / "report.json"
    write_json_atomic(path, report)
    return path
