"""Peer quantizers of the benchmark (bench/peers): only files cross into their venvs; a missing venv is named."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from bench import peers
from bench.__main__ import markdown
from compress.data import Dataset


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(6, 3), torch.nn.Linear(4, 3)

    def forward(self, left, right):
        return self.a(left) + self.b(right)


@pytest.fixture
def fp32_onnx(tmp_path):
    path = tmp_path / "fp32.onnx"
    torch.onnx.export(TwoInputs().eval(), (torch.randn(1, 6), torch.randn(1, 4)), str(path), input_names=["left", "right"],
                      dynamic_shapes=({0: torch.export.Dim("batch")}, {0: torch.export.Dim("batch")}), external_data=False)
    return path


def test_calibration_npz_feeds_the_onnx_file_as_written(fp32_onnx, tmp_path):
    rng = np.random.default_rng(0)
    calibration = Dataset("calib", (rng.standard_normal((20, 6), dtype=np.float32), rng.standard_normal((20, 4), dtype=np.float32)))
    samples = np.load(peers.calibration_npz(calibration, fp32_onnx, tmp_path / "calibration.npz"))
    assert samples.files == ["left", "right"]
    session = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {name: samples[name][:5] for name in samples.files})
    assert out.shape == (5, 3)  # the drivers slice samples off axis 0 exactly like this


def test_calibration_npz_refuses_data_of_another_model(fp32_onnx, tmp_path):
    with pytest.raises(ValueError, match="takes 2 inputs, the calibration data has 1"):
        peers.calibration_npz(Dataset("calib", (np.zeros((3, 6), np.float32),)), fp32_onnx, tmp_path / "c.npz")


def test_a_peer_without_its_venv_is_named_with_the_command_that_builds_it(monkeypatch, tmp_path, fp32_onnx):
    monkeypatch.setattr(peers, "VENVS", tmp_path)
    (tmp_path / ".venv-olive" / "bin").mkdir(parents=True)  # a build that has not finished: no freeze.txt yet
    (tmp_path / ".venv-olive" / "bin" / "python").touch()
    for peer in peers.PEERS:
        reason = f"{peer}: not installed (bench/peers/make_venv.sh {peer})"
        assert peers.missing(peer) == reason and peers.version(peer) == reason
    with pytest.raises(RuntimeError, match=r"nncf: not installed \(bench/peers/make_venv.sh nncf\)"):
        peers.quantize_with("nncf", fp32_onnx, tmp_path / "c.npz", tmp_path / "nncf.onnx")
    results = {"date": "2026-12-03", "runs": 1, "machine": {"description": "x86_64"}, "models": [],
               "peers": {peer: peers.version(peer) for peer in peers.PEERS}}
    assert "olive: not installed (bench/peers/make_venv.sh olive)" in markdown(results)
