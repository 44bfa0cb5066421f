"""A user's own model: TorchScript or a state_dict with --data (no --input-shape), --arch from a file, refusals
before work, and speed notes that agree with the latency confidence intervals."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from compress.report import read_report
from compress.steps.advice import speed_verdict
from compress.steps.benchmark import session_of
from tests.cli_checks import json_output, one_line


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A small classifier as TorchScript, its class in a file and its state_dict, and .npz data for it."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "mynet.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))

            def forward(self, x):
                return self.body(x)
    '''))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    torch.jit.save(torch.jit.trace(model, torch.randn(2, 12)), folder / "net_ts.pt")
    torch.save({f"body.{k}": v for k, v in model.state_dict().items()}, folder / "net_sd.pt")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 12)).astype(np.float32)
    np.savez(folder / "data.npz", x=x, y=model(torch.from_numpy(x)).argmax(1).numpy())
    return folder


def test_torchscript_with_data_needs_no_input_shape(own, cli, tmp_path):
    report = json_output(cli("quantize", own / "net_ts.pt", "--data", own / "data.npz", "--format", "onnx",
                             "--no-bench", "--out", tmp_path, "--json"))
    assert report["reference"]["metrics"]["task"]["value"] == 1.0
    assert _artifact(report, "int8-onnx")["metrics"]["fidelity"]["top1_agreement"] >= 0.9


def test_missing_spec_hint_comes_from_the_model(own, cli):
    text = one_line(cli("quantize", own / "net_ts.pt", "--format", "onnx", "--no-bench"))
    assert "--input-shape 1x12" in text and "1x3x64x64" not in text


def test_arch_from_a_file_with_a_state_dict(own, cli, tmp_path):
    report = json_output(cli("quantize", own / "net_sd.pt", "--arch", f"{own / 'mynet.py'}:Net", "--data", own / "data.npz",
                             "--format", "onnx", "--no-bench", "--out", tmp_path, "--json"))
    assert report["reference"]["metrics"]["task"]["value"] == 1.0


def test_arch_module_in_the_current_directory(own, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(own)
    report = json_output(cli("quantize", "net_sd.pt", "--arch", "mynet:Net", "--data", "data.npz", "--format", "onnx",
                             "--no-bench", "--out", tmp_path, "--json"))
    assert report["source"]["format"] == "state_dict"


def test_torchscript_to_tflite_is_refused_before_work(own, cli, tmp_path):
    result = cli("quantize", own / "net_ts.pt", "--data", own / "data.npz", "--format", "tflite", "--out", tmp_path / "t")
    assert result.exit_code == 2
    assert "tflite needs a torch.export-able model; TorchScript cannot be converted" in one_line(result)
    assert not (tmp_path / "t").exists()


def test_torchscript_onnx_goes_on_with_a_finding(own, cli, tmp_path):
    report = json_output(cli("quantize", own / "net_ts.pt", "--data", own / "data.npz", "--format", "onnx,tflite",
                             "--no-bench", "--out", tmp_path, "--json"))
    assert {a["format"] for a in report["artifacts"]} == {"onnx"}
    assert any(f["format"] == "tflite" and "TorchScript cannot be converted" in f["message"] for f in report["preflight"])


def test_speed_notes_agree_with_the_confidence_intervals(own, cli, tmp_path):
    """Over a timed quantize run and a `compress bench` that rewrites a latency: at most one speed note per artifact,
    and it says what the CI comparison says, or, for a figure from another timing session than fp32's, that the two
    were not compared."""
    report = json_output(cli("quantize", own / "net_ts.pt", "--data", own / "data.npz", "--format", "onnx",
                             "--runs", "20", "--out", tmp_path, "--json"))
    _check_speed_notes(report)
    bench = cli("bench", tmp_path / "model.int8.onnx", "--runs", "20", "--json")
    assert bench.exit_code == 0, bench.output
    _check_speed_notes(json.loads((tmp_path / "report.json").read_text()))


def _check_speed_notes(report: dict) -> None:
    artifacts = read_report(report).artifacts
    fp32 = {a.format: a for a in artifacts if a.precision == "fp32"}
    for artifact in artifacts:
        said = {"x faster than fp32", "not faster than fp32", "same speed as fp32", "speed not compared with fp32"}
        notes = [n for n in artifact.notes if any(phrase in n for phrase in said)]
        if artifact.precision == "fp32":
            assert not notes and artifact.speed is None
            continue
        assert len(notes) == 1 and notes[0] == artifact.speed.note, artifact.notes
        if session_of(artifact) != session_of(fp32[artifact.format]):  # re-timed alone: never divided by fp32's
            assert notes[0].startswith("speed not compared with fp32: timed in session"), notes[0]
            continue
        verdict = speed_verdict(artifact, fp32[artifact.format])
        expected = {"faster": "x faster than fp32", "slower": "not faster than fp32", "same": "same speed as fp32"}[verdict]
        assert expected in notes[0], (verdict, notes[0])


def _artifact(report: dict, name: str) -> dict:
    return next(a for a in report["artifacts"] if a["name"] == name)


def test_trusted_pickle_whose_class_lives_in_the_current_directory(own, cli, tmp_path, monkeypatch):
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(own))
    net = importlib.import_module("mynet").Net()
    torch.save(net, own / "net_pickled.pt")
    sys.modules.pop("mynet")
    sys.path.remove(str(own))  # only the current directory can make the class importable now
    monkeypatch.chdir(own)
    report = json_output(cli("quantize", "net_pickled.pt", "--trust-pickle", "--data", "data.npz", "--format", "onnx",
                             "--no-bench", "--out", tmp_path / "run", "--json"))
    assert report["source"]["format"] == "pickle"
