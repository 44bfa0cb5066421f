"""Stateful models: batch axes other than 0, state fed back over a stream, fixed-batch programs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.loading.model import load_model
from tests.models_for_tests import TinyVad


@pytest.fixture(scope="module")
def vad_files(tmp_path_factory):
    """The same TinyVad as a dynamic-batch .pt2 (state batch on axis 1), a fixed-batch (2) .pt2 and chunk data."""
    folder = tmp_path_factory.mktemp("vad")
    torch.manual_seed(0)
    model = TinyVad().eval()
    batch = torch.export.Dim("batch")
    dynamic = torch.export.export(model, (torch.randn(3, 8), torch.randn(2, 3, 16)), dynamic_shapes=({0: batch}, {1: batch}))
    torch.export.save(dynamic, folder / "vad.pt2")
    torch.export.save(torch.export.export(model, (torch.randn(2, 8), torch.randn(2, 2, 16))), folder / "vad_fixed.pt2")
    np.savez(folder / "chunks.npz", x=np.random.default_rng(0).standard_normal((1500, 8)).astype(np.float32))
    return folder


def test_batch_axis_inferred_from_pt2_and_state_inferred(vad_files):
    spec = load_model(vad_files / "vad.pt2").input_spec
    assert [t.batch_axis for t in spec.tensors] == [0, 1] and spec.output_axes == (0, 1)
    assert spec.state == (("state", 1),) and "inferred state" in spec.inferred[0]


def test_batch_axis_declared_on_fixed_program(vad_files):
    spec = load_model(vad_files / "vad_fixed.pt2", batch_axes={"state": 1}, state={"state": "output_1"}).input_spec
    assert spec.fixed_batch == 2 and spec.tensors[1].batch_axis == 1 and spec.state == (("state", 1),)


def test_stateful_model_end_to_end_with_stream_evaluation(vad_files, cli, tmp_path):
    run = cli("quantize", vad_files / "vad.pt2", "--data", vad_files / "chunks.npz", "--format", "onnx,tflite",
              "--no-bench", "--out", tmp_path, "--json")
    report = json.loads((tmp_path / "report.json").read_text())
    # TinyVad's speech probability sits near 0.5: int8 flips most streamed decisions, and the stream gate says so
    assert run.exit_code == 1 and not report["passed"]
    stream_gates = {g["artifact"]: g for g in report["gates"] if g["name"] == "stream_decisions"}
    assert set(stream_gates) == {"int8-onnx", "int8-tflite"} and all(g["outcome"] == "failed" for g in stream_gates.values())
    names = {a["name"] for a in report["artifacts"]}
    assert {"fp32-onnx", "int8-onnx", "fp32-tflite", "int8-tflite"} <= names
    streams = report["streams"]
    assert streams["steps"] == 256 and streams["chunks"] == "data" and streams["state"] == [{"input": "state", "output": "output_1"}]
    assert set(streams["artifacts"]) == names
    fp32 = streams["artifacts"]["fp32-onnx"]
    assert fp32["decision_agreement"] == 1.0 and fp32["min_sqnr_db"] > 60
    for result in streams["artifacts"].values():
        prob, state = result["outputs"]
        assert len(prob["sqnr_db"]) == 256 and "decision_agreement" in prob and state["kind"] == "state"
        assert set(prob["drift_sqnr_db"]) == {"first", "last"}
    assert "Streams (state fed back)" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["streams"] == streams


def test_fixed_batch_program_runs_end_to_end_with_one_note(vad_files, cli, tmp_path):
    run = cli("quantize", vad_files / "vad_fixed.pt2", "--batch-axis", "state=1", "--data",
              vad_files / "chunks.npz", "--format", "onnx", "--no-bench", "--out", tmp_path, "--json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert run.exit_code == (0 if report["passed"] else 1) and report["streams"]["batch"] == 2
    assert report["streams"]["steps"] == 150 and report["artifacts"][1]["metrics"]["stream"]["decisions"] == 300
    fixed = [line for line in report["streams"]["inferred"] if line.startswith("fixed batch")]
    assert len(fixed) == 1 and "batch 2" in fixed[0]
    for artifact in report["artifacts"]:
        state = artifact["metrics"]["fidelity"]["outputs"][1]
        assert state["kind"] == "state" and state["measures"]["cosine"] > 0.99


def test_bad_batch_axis_is_one_line(vad_files, cli):
    result = cli("quantize", vad_files / "vad.pt2", "--batch-axis", "hidden=1", "--no-bench", "--format", "onnx")
    assert result.exit_code == 2 and "--batch-axis names input 'hidden'" in result.stderr
