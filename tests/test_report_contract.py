"""The report schema ships in the package and rejects broken reports."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_checks import one_line

from compress.report import ReportInvalid, load_schema, new_report, read_report, report_document, validate_report


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


@pytest.fixture(scope="module")
def onnx_run(zoo_checkpoint, cli, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("contract") / "run"
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "onnx", "--precision", "int8", "--runs", "10",
                 "--out", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def test_a_run_report_is_the_model_serialised_and_bench_rewrites_only_its_timings(onnx_run, cli, tmp_path):
    """report.json read into compress.report.model.Report and written back is the same document (an int stays an int,
    an explicit null stays null, a verb's own sections ride along); `compress bench` rewriting it through the model
    changes the timed figures and what follows from them, nothing else."""
    run_dir = Path(shutil.copytree(onnx_run, tmp_path / "run"))
    before = json.loads((run_dir / "report.json").read_text())
    assert json.dumps(report_document(read_report(before)), sort_keys=True) == json.dumps(before, sort_keys=True)

    assert cli("bench", run_dir / "model.int8.onnx", "--runs", "5").exit_code == 0
    after = json.loads((run_dir / "report.json").read_text())
    untimed = ("artifacts", "recommended")
    assert {k: v for k, v in after.items() if k not in untimed} == {k: v for k, v in before.items() if k not in untimed}
    timed = ("latency", "notes", "speedup_vs_fp32", "speed")  # speed: the finding its speed note is derived from
    for old, new in zip(before["artifacts"], after["artifacts"], strict=True):
        assert {k: v for k, v in new.items() if k not in timed} == {k: v for k, v in old.items() if k not in timed}
    int8 = next(a for a in after["artifacts"] if a["name"] == "int8-onnx")
    assert [entry["runs"] for entry in int8["latency"]] == [5]  # the run's timing replaced by the bench's
    assert cli("report", "validate", run_dir).exit_code == 0


@pytest.mark.parametrize("breakage", [lambda r: r.update(schema_version=1), lambda r: r["artifacts"][0].pop("sha256")])
def test_bench_leaves_a_report_it_cannot_write_back_alone_exit_2(onnx_run, cli, tmp_path, breakage):
    """A report.json that is not a valid v2 report (an older version, a broken one) is not rewritten: one line, exit 2."""
    run_dir = Path(shutil.copytree(onnx_run, tmp_path / "run"))
    report = json.loads((run_dir / "report.json").read_text())
    breakage(report)
    (run_dir / "report.json").write_text(json.dumps(report))
    written = (run_dir / "report.json").read_bytes()
    line = one_line(result := cli("bench", run_dir / "model.int8.onnx", "--runs", "5"))
    assert result.exit_code == 2 and "it was not updated (pass --no-report to leave it alone)" in line
    assert (run_dir / "report.json").read_bytes() == written
