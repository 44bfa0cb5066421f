"""A run directory is data: `compress verify` runs no code a report.json names, refuses a file whose bytes changed
since its run, keeps the verdict the run reached, and prints the error it measured.

Each hostile case goes through the CLI on a real quantize run of the zoo mnist_cnn and checks: no sentinel written
(the code did not run), exit 2 with one line naming the problem and what to do, one JSON document with --json, no
traceback, and the run directory's files byte for byte as they were.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.cli_checks import json_output, one_line
from tests.test_hostile_files import corrupt_int8  # noqa: F401  (a quantize run whose int8 file failed verification)

HOSTILE_MODULE = """\
import pathlib
pathlib.Path({sentinel!r}).touch()   # importing this module is already running code


def batches():
    return []
"""

DIGITS_MODULE = """\
import pathlib
from compress.data import load_dataset


def batches():
    pathlib.Path({sentinel!r}).touch()
    digits = load_dataset("digits28")
    yield {{"x": digits.x[0], "y": digits.y[0]}}
"""


@pytest.fixture(scope="module")
def quantized(zoo_checkpoint, cli, tmp_path_factory) -> Path:
    """A real run: mnist_cnn quantized to ONNX, TFLite and .pte (fp32 and int8 each)."""
    run_dir = tmp_path_factory.mktemp("reports") / "run"
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--format", "onnx,tflite,pte", "--no-bench", "--out", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture()
def run_copy(quantized, tmp_path) -> Path:
    """A private copy of the run to tamper with."""
    return Path(shutil.copytree(quantized, tmp_path / "run"))


@pytest.fixture()
def module_on_path(tmp_path, monkeypatch):
    """``module_on_path(name, source)``: a module importable by ``name``; it touches ``tmp_path/code-ran`` when run."""
    sentinel = tmp_path / "code-ran"

    def write(name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(source.format(sentinel=str(sentinel)))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return sentinel

    return write


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def edit_report(run_dir: Path, change) -> None:
    path = run_dir / "report.json"
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report))


def child_processes() -> set[int]:
    """The live processes this one started (by their parent pid in /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


def assert_refused(cli, args: list, run_dir: Path, sentinel: Path | None = None) -> str:
    """Exit 2, one line, one JSON document with --json, nothing in the run directory changed, no code ran, no process
    left behind; the line."""
    before, children = snapshot(run_dir), child_processes()
    result = cli(*args)
    assert result.exit_code == 2, result.output
    line = one_line(result)
    document = json.loads(cli(*args, "--json").stdout)
    assert document["exit_code"] == 2 and document["error"] in line
    assert snapshot(run_dir) == before
    assert sentinel is None or not sentinel.exists()
    assert child_processes() <= children
    return line


# --- code named in a report ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, field", [
    ({"name": "hostile_mod:batches", "source": None, "sha256": None}, "dataset.name"),
    ({"source": "hostile_mod:batches", "sha256": None}, "dataset.source"),
    ({"source": "hostile_mod:batches", "sha256": "0" * 64}, "dataset.source"),  # a digest does not make it a file
], ids=["name", "source", "source-with-digest"])
def test_a_dataset_naming_code_in_the_report_runs_nothing_without_the_flag(dataset, field, run_copy, module_on_path, cli):
    sentinel = module_on_path("hostile_mod", HOSTILE_MODULE)
    edit_report(run_copy, lambda report: report["dataset"].update(dataset))
    line = assert_refused(cli, ["verify", run_copy / "model.int8.onnx"], run_copy, sentinel)
    assert f"report.json {field} names code to import and run ('hostile_mod:batches')" in line
    assert "--trust-code-from hostile_mod" in line and "--data" in line


def test_the_issue_case_tempfile_mkdtemp_is_not_called(run_copy, cli, tmp_path, monkeypatch):
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where mkdtemp would make its folder
    edit_report(run_copy, lambda report: report.update(dataset={**report["dataset"], "name": "tempfile:mkdtemp",
                                                                "source": None, "sha256": None}))
    line = assert_refused(cli, ["verify", run_copy / "model.int8.onnx"], run_copy)
    assert "'tempfile:mkdtemp'" in line and "--trust-code-from tempfile" in line
    assert list((tmp_path / "tmp").iterdir()) == []
    document = json_output(cli("verify", run_copy / "model.int8.onnx", "--data", "digits28", "--samples", "64", "--json"))
    assert document["passed"] and document["data"]["source"] == "digits28"  # --data, as the line says, goes past it


def test_a_reference_naming_code_as_its_dataset_runs_nothing(run_copy, module_on_path, cli, tmp_path):
    """The report's source.path is a file too: a model file's own dataset can only be a built-in one."""
    sentinel = module_on_path("hostile_mod", HOSTILE_MODULE)
    report = json.loads((run_copy / "report.json").read_text())
    payload = torch.load(report["source"]["path"], weights_only=True)
    payload["dataset"] = {**payload["dataset"], "name": "hostile_mod:batches"}
    torch.save(payload, tmp_path / "hostile.pt")
    edit_report(run_copy, lambda r: (r["source"].update(path=str(tmp_path / "hostile.pt")), r.pop("dataset")))
    line = assert_refused(cli, ["verify", run_copy / "model.int8.onnx"], run_copy, sentinel)
    assert "unknown dataset 'hostile_mod:batches'; built-in datasets: " in line


def test_the_report_dataset_runs_only_under_the_roots_the_command_line_names(run_copy, module_on_path, cli):
    sentinel = module_on_path("digits_mod", DIGITS_MODULE)
    edit_report(run_copy, lambda report: report["dataset"].update(name="digits_mod:batches", source=None, sha256=None))
    line = assert_refused(cli, ["verify", run_copy / "model.int8.onnx", "--trust-code-from", "other"], run_copy, sentinel)
    assert "--trust-code-from digits_mod" in line
    document = json_output(cli("verify", run_copy / "model.int8.onnx", "--trust-code-from", "digits_mod", "--no-report", "--json"))
    assert sentinel.exists() and document["passed"] and document["data"]["source"] == "digits_mod:batches"


# --- the file changed since its run --------------------------------------------------------------------------------

def flip_weight_bytes(artifact: Path, checkpoint: Path) -> None:
    """Flip one mantissa bit (about 1 %) of 16 floats in the middle of the output layer's weights, found by their bytes
    in the file (inside a weight, not the header)."""
    weight = torch.load(checkpoint, weights_only=True)["state_dict"]["classifier.3.weight"].numpy().astype("<f4").tobytes()
    data = bytearray(artifact.read_bytes())
    at = data.find(weight[len(weight) // 2:len(weight) // 2 + 64])
    assert at > 0, f"the weight's bytes are not in {artifact.name}"
    for mantissa_byte in range(at + 2, at + 64, 4):
        data[mantissa_byte] ^= 0x01
    artifact.write_bytes(bytes(data))


@pytest.mark.parametrize("artifact", ["model.fp32.onnx", "model.fp32.tflite", "model.fp32.pte"])
def test_a_file_whose_weights_changed_is_refused_naming_it(artifact, run_copy, zoo_checkpoint, cli, tmp_path):
    flip_weight_bytes(run_copy / artifact, zoo_checkpoint("mnist_cnn", epochs=1))
    line = assert_refused(cli, ["verify", run_copy / artifact], run_copy)
    assert f"{run_copy / artifact} changed since its run (sha256" in line and "re-run the command that wrote it" in line
    # bench would write a latency beside the stale digest: refused the same way, before any timing
    line = assert_refused(cli, ["bench", run_copy / artifact, "--runs", "3"], run_copy)
    assert f"{run_copy / artifact} changed since its run (sha256" in line and "--no-report" in line

    # only the digest tells: outside its run directory the changed file loads, runs and agrees with the reference
    outside = Path(shutil.copy(run_copy / artifact, tmp_path / artifact))
    reference = json.loads((run_copy / "report.json").read_text())["source"]["path"]
    document = json_output(cli("verify", outside, "--reference", reference, "--data", "digits28", "--samples", "64", "--json"))
    assert document["passed"] and document["targets"][0]["fidelity"]["sqnr_db"] < 100  # changed, yet within tolerance


def test_an_unchanged_file_verifies_and_its_parity_is_recorded(run_copy, cli):
    document = json_output(cli("verify", run_copy / "model.int8.pte", "--samples", "64", "--json"))
    assert document["passed"] and document["run"] == {"report": str(run_copy / "report.json"), "failures": []}
    assert document["reference"]["warnings"] == [] and document["data"]["warnings"] == []
    entry = next(a for a in json.loads((run_copy / "report.json").read_text())["artifacts"] if a["path"] == "model.int8.pte")
    assert [row["target"] for row in entry["parity"]] == ["local-cpu"]


def test_a_reference_other_than_the_runs_is_named_in_a_warning(run_copy, cli):
    edit_report(run_copy, lambda report: report["source"].update(sha256="0" * 64))  # the run's model had other bytes
    result = cli("verify", run_copy / "model.int8.onnx", "--samples", "64", "--no-report")
    assert result.exit_code == 0, result.output
    assert "warning: reference " in result.stderr and "changed since the run (sha256 000000000000… then" in result.stderr


# --- the verdict its run reached -----------------------------------------------------------------------------------

def test_a_file_that_failed_a_gate_in_its_run_is_failed_exit_1(zoo_checkpoint, cli, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {{source: {zoo_checkpoint('mnist_cnn', epochs=1)}}}\n"
                      "stages: [{quantize: {formats: [onnx], bench: false}}]\n"
                      f"gates: {{max_size_bytes: 1000}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    assert cli("run", recipe).exit_code == 1
    result = cli("verify", tmp_path / "run" / "model.int8.onnx", "--samples", "64")
    assert result.exit_code == 1, result.output
    assert "FAILED in its run" in result.stdout and " ok " not in result.stdout
    line = one_line(result)
    assert line.startswith("error: model.int8.onnx in its run: gate max_size_bytes failed: ") and "vs limit 1,000" in line
    document = json.loads(cli("verify", tmp_path / "run" / "model.int8.onnx", "--samples", "64", "--json").stdout)
    assert document["passed"] is False and document["targets"][0]["passed"]  # the file agrees; its run failed it
    assert document["run"]["failures"][0].startswith("gate max_size_bytes failed: ")


def test_a_file_that_failed_verification_in_its_run_is_not_run_again(corrupt_int8, cli):
    run_dir, result = corrupt_int8
    assert result.exit_code == 1
    before = snapshot(run_dir)
    result = cli("verify", run_dir / "failed" / "model.int8.onnx")
    assert result.exit_code == 1 and "failed verification" in one_line(result) and "not run again" in result.stdout
    document = json.loads(cli("verify", run_dir / "failed" / "model.int8.onnx", "--json").stdout)
    assert document["passed"] is False and document["targets"] == [] and "failed verification" in document["run"]["failures"][0]
    assert snapshot(run_dir) == before


# --- the error it measured -----------------------------------------------------------------------------------------

class SmallOutputs(nn.Module):
    """A regression head whose outputs are around 1e-6: its quantization error is far below 1e-6."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x) * 1e-6


def test_max_error_is_printed_at_its_size_not_rounded_to_zero(cli, tmp_path):
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(SmallOutputs().eval(), (torch.randn(2, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "small.pt2")
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).standard_normal((300, 16)).astype("float32"))
    run_dir = tmp_path / "run"
    result = cli("quantize", tmp_path / "small.pt2", "--data", tmp_path / "data.npz", "--format", "onnx", "--no-bench",
                 "--no-gate", "--out", run_dir)
    assert result.exit_code == 0, result.output
    recorded = next(a for a in json.loads((run_dir / "report.json").read_text())["artifacts"] if a["name"] == "int8-onnx")
    assert 0 < recorded["metrics"]["fidelity"]["max_abs_error"] < 1e-6  # quantize's report keeps it too
    document = json_output(cli("verify", run_dir / "model.int8.onnx", "--no-report", "--json"))
    fidelity = document["targets"][0]["fidelity"]
    assert fidelity["sqnr_db"] < 100 and 0 < fidelity["max_abs_error"] < 1e-6
    table = cli("verify", run_dir / "model.int8.onnx", "--no-report").stdout
    row = next(line.split() for line in table.splitlines() if line.strip().startswith("local-cpu "))
    assert float(row[3]) == pytest.approx(fidelity["max_abs_error"], rel=0.01)  # target, top-1, SQNR, max err
