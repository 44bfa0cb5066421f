"""The report schema ships in the package and rejects broken reports."""
from __future__ import annotations

import json

import pytest

from compress.report import ReportInvalid, load_schema, new_report, report_document, validate_report


def _minimal():
    return report_document(new_report({"path": "m.pt", "format": "zoo", "sha256": "0" * 64}, None, {"metrics": {"task": None}, "size_bytes": 1}))


def test_schema_cli_prints_the_packaged_schema(cli):
    result = cli("report", "schema")
    assert result.exit_code == 0 and json.loads(result.stdout) == load_schema()


def test_minimal_report_is_valid():
    validate_report(_minimal())


@pytest.mark.parametrize("breakage", [
    lambda r: r.pop("passed"),
    lambda r: r.update(schema_version=3),
    lambda r: r["source"].update(format="keras"),
    lambda r: r["reference"]["metrics"].update(task={"name": "accuracy", "value": 98.3, "higher_is_better": True}),
])
def test_broken_reports_are_rejected(breakage):
    report = _minimal()
    breakage(report)
    with pytest.raises(ReportInvalid):
        validate_report(report)


def test_validate_cli(cli, tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(_minimal()))
    assert cli("report", "validate", tmp_path).exit_code == 0
    (tmp_path / "report.json").write_text("{}")
    result = cli("report", "validate", tmp_path)
    assert result.exit_code == 2 and "breaks the contract" in result.stderr
