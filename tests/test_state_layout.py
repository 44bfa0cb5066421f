"""A voice-activity model whose recurrent state is ``(2, B, 128)`` (batch on axis 1): data in the model's layout,
a fixed-batch export, the stream evaluation in the model's layout, and the stream gate (issue 26)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from compress.errors import UsageError
from compress.runtimes import open_runner
from tests.cli_checks import one_line

SAMPLES = 1200  # 240 test samples: 240 streamed decisions, enough to resolve the 0.98 decision floor


class Vad(nn.Module):
    """A chunk of 40 features and the GRU state (2, B, 128) -> speech probability (B, 1) and the next state."""

    def __init__(self):
        super().__init__()
        self.inp, self.gru, self.out = nn.Linear(40, 128), nn.GRU(128, 128, num_layers=2), nn.Linear(128, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        y, state = self.gru(torch.relu(self.inp(x)).unsqueeze(0), state)
        return torch.sigmoid(self.out(y[0])), state


def _centred(model: Vad, chunks: np.ndarray) -> Vad:
    """``model`` with its speech threshold at the median logit of a stream: decisions hang on small differences."""
    with torch.no_grad():
        state, logits = torch.zeros(2, 1, 128), []
        for chunk in chunks:
            y, state = model.gru(torch.relu(model.inp(torch.from_numpy(chunk[None]))).unsqueeze(0), state)
            logits.append(float(model.out(y[0])))
        model.out.bias -= float(np.median(logits))
    return model


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    """Exports (dynamic batch; centred; centred at a fixed batch of 1) and data: chunks with the state in the model's
    layout (x1 is (2, N, 128)), chunks alone, and a state whose batch disagrees with the chunks'."""
    folder = tmp_path_factory.mktemp("vad")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((SAMPLES, 40)).astype(np.float32)
    batch = torch.export.Dim("batch")
    dynamic = ({0: batch}, {1: batch})
    model = Vad().eval()
    torch.export.save(torch.export.export(model, (torch.randn(3, 40), torch.zeros(2, 3, 128)), dynamic_shapes=dynamic), folder / "vad.pt2")
    centred = _centred(model, x[:300])
    torch.export.save(torch.export.export(centred, (torch.randn(3, 40), torch.zeros(2, 3, 128)), dynamic_shapes=dynamic),
                      folder / "centred.pt2")
    torch.export.save(torch.export.export(centred, (torch.randn(1, 40), torch.zeros(2, 1, 128))), folder / "centred_fixed.pt2")
    np.savez(folder / "layout.npz", x=x, x1=np.zeros((2, SAMPLES, 128), np.float32))
    np.savez(folder / "chunks.npz", x=x)
    np.savez(folder / "mismatch.npz", x=x, x1=np.zeros((2, SAMPLES - 200, 128), np.float32))
    return folder


def _run(cli, out, *args):
    result = cli("quantize", *args, "--no-bench", "--out", out)
    return result, json.loads((out / "report.json").read_text())


def _gates(report: dict, name: str) -> dict:
    return {g["artifact"]: g for g in report["gates"] if g["name"] == name}


@pytest.fixture(scope="module")
def layout_run(vad, cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("layout")
    return (*_run(cli, out, vad / "vad.pt2", "--data", vad / "layout.npz", "--format", "onnx,tflite"), out)


def test_state_in_the_models_layout_runs_and_its_stream_gate_passes(layout_run):
    result, report, _ = layout_run
    assert result.exit_code == 0, result.output
    assert report["dataset"]["samples"] == SAMPLES // 5
    streams = report["streams"]
    assert streams["chunks"] == "data" and streams["steps"] == SAMPLES // 5
    assert streams["state"] == [{"input": "state", "output": "output_1"}]
    gates = _gates(report, "stream_decisions")
    assert set(gates) == {"int8-onnx", "int8-tflite"}
    for gate in gates.values():
        assert gate["outcome"] == "passed" and gate["interval"]["low"] >= 0.98 and gate["interval"]["samples"] == SAMPLES // 5
    assert "streamed decisions" in result.stdout and "95 % intervals" in result.stdout


def test_batch_axis_declared_reads_the_same_layout(vad, cli, tmp_path):
    result, report = _run(cli, tmp_path, vad / "vad.pt2", "--batch-axis", "state=1", "--data", vad / "layout.npz", "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert report["streams"]["chunks"] == "data" and _gates(report, "stream_decisions")["int8-onnx"]["outcome"] == "passed"


def test_int8_whose_streamed_decisions_drift_fails_the_stream_gate(vad, cli, tmp_path):
    """Per sample the int8 file is close (SQNR far above its floor); over a stream its decisions flip: that fails."""
    result, report = _run(cli, tmp_path, vad / "centred.pt2", "--data", vad / "layout.npz", "--format", "onnx")
    assert result.exit_code == 1
    assert _gates(report, "fidelity_floor")["int8-onnx"]["passed"]
    stream = _gates(report, "stream_decisions")["int8-onnx"]
    assert stream["outcome"] == "failed" and stream["interval"]["high"] < 0.98
    assert "error: gate stream_decisions failed for int8-onnx: streamed decisions agree" in result.stderr
    assert "int8-onnx" in {e["artifact"] for e in report["recommended"]["excluded"]}


def test_fixed_batch_program_finds_the_state_axis_and_gates_the_stream(vad, cli, tmp_path):
    """Exported at batch 1 with no dynamic dim and given chunks alone: the state's batch axis is found from the program
    (the one axis holding the batch), the state starts at zeros and is carried in the model's layout."""
    result, report = _run(cli, tmp_path, vad / "centred_fixed.pt2", "--data", vad / "chunks.npz", "--format", "tflite")
    assert report["streams"]["batch"] == 1 and report["streams"]["chunks"] == "data"
    assert any(line.startswith("inferred batch axis: input 'state'") for line in report["streams"]["inferred"])
    stream = _gates(report, "stream_decisions")["int8-tflite"]
    assert result.exit_code == 1 and stream["outcome"] == "failed" and not report["passed"]


def test_a_layout_mismatch_names_the_arrays_their_shapes_and_batch_axis(vad, cli, tmp_path):
    result = cli("quantize", vad / "vad.pt2", "--data", vad / "mismatch.npz", "--format", "onnx", "--no-bench", "--out", tmp_path)
    line = one_line(result)
    assert result.exit_code == 2 and not (tmp_path / "report.json").exists()
    assert f"x ({SAMPLES}, 40)" in line and f"x1 (2, {SAMPLES - 200}, 128)" in line and "--batch-axis" in line


def test_a_runtime_shape_error_is_shown_whole(layout_run):
    """onnxruntime names the wrong indices on the lines after its first: the message keeps them, on one line."""
    _, report, out = layout_run
    runner = open_runner(out / "model.fp32.onnx")
    with pytest.raises(UsageError) as error:
        runner.run((np.zeros((3, 40), np.float32), np.zeros((3, 2, 128), np.float32)))
    message = str(error.value)
    assert len(message.splitlines()) == 1 and "Got: 3 Expected: 2" in message and "--batch-axis" in message
