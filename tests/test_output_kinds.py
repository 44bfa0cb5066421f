"""Output kinds that say what they judged: pitch bins, CTC logits and landmarks each get their own measures, every
output's kind is shown with how it was decided and the flag that overrides it, and labels are used or not, in words.

The models are small real ones (tests/models_for_tests.py) saved with torch.export.save, as a user would, and run
through the CLI into real ONNX files checked in onnxruntime.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.models_for_tests import CtcHead, Embedder, Landmarks, PitchBins

RNG = np.random.default_rng(0)


def _save(model: torch.nn.Module, example: torch.Tensor, path) -> None:
    torch.manual_seed(0)
    torch.export.save(torch.export.export(model.eval(), (example,)), str(path))


def _quantize(cli, model, data, out, *extra):
    result = cli("quantize", model, "--data", data, "--format", "onnx", "--no-bench", "--out", out, *extra)
    report = json.loads((out / "report.json").read_text())
    assert result.exit_code == (0 if report["passed"] else 1), result.output
    return result, report


def _output(report: dict, artifact: str = "int8-onnx") -> dict:
    entry = next(a for a in report["artifacts"] if a["name"] == artifact)
    return entry["metrics"]["fidelity"]["outputs"][0]


@pytest.mark.parametrize("sigmoid", [False, True], ids=["logits", "sigmoid"])
def test_pitch_bins_are_classes_judged_by_argmax(cli, tmp_path, sigmoid):
    torch.manual_seed(0)
    _save(PitchBins(sigmoid), torch.zeros(2, 64), tmp_path / "pitch.pt2")
    np.savez(tmp_path / "frames.npz", x=RNG.standard_normal((200, 64)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / "pitch.pt2", tmp_path / "frames.npz", tmp_path / "run", "--no-auto-fallback")
    output = _output(report)
    assert (output["kind"], output["kind_from"]) == ("classes", "values")
    assert ("independent bins in [0, 1]" if sigmoid else "ordered bins") in output["kind_reason"]
    assert "top1_agreement" in output["measures"] and "cosine" not in output["measures"]
    line = "output_0: classes (360 "
    assert line in result.stdout and "--output-kind output_0=KIND" in result.stdout
    assert line in (tmp_path / "run" / "report.md").read_text()


def test_ctc_logits_are_judged_at_every_step(cli, tmp_path):
    torch.manual_seed(0)
    _save(CtcHead(), torch.zeros(2, 20, 16), tmp_path / "ctc.pt2")
    np.savez(tmp_path / "features.npz", x=RNG.standard_normal((200, 20, 16)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / "ctc.pt2", tmp_path / "features.npz", tmp_path / "run", "--no-auto-fallback")
    output = _output(report)
    assert output["kind"] == "sequence" and "20 steps x 12 classes" in output["kind_reason"]
    assert "top-1 agreement at every step" in output["kind_reason"]
    assert output["measures"]["steps"] == report["dataset"]["samples"] * 20
    assert 0 <= output["measures"]["worst_sample_step_agreement"] <= output["measures"]["step_top1_agreement"] <= 1
    assert "cosine" not in output["measures"]
    assert "output_0: sequence (20 steps x 12 classes" in result.stdout


def test_landmarks_are_regression_and_need_no_repair(cli, tmp_path):
    torch.manual_seed(0)
    _save(Landmarks(), torch.zeros(2, 1, 32, 32), tmp_path / "landmarks.pt2")
    np.savez(tmp_path / "faces.npz", x=RNG.random((200, 1, 32, 32)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / "landmarks.pt2", tmp_path / "faces.npz", tmp_path / "run")
    output = _output(report)
    assert (output["kind"], output["kind_from"]) == ("regression", "values") and "sharing one offset" in output["kind_reason"]
    assert set(output["measures"]) == {"sqnr_db", "relative_error", "max_abs_error"}
    int8 = next(a for a in report["artifacts"] if a["name"] == "int8-onnx")
    assert report["passed"] and "repair" not in int8 and not any(t["label"].startswith("keep-float") for t in int8["techniques"])

    declared = cli("quantize", tmp_path / "landmarks.pt2", "--data", tmp_path / "faces.npz", "--format", "onnx", "--no-bench",
                   "--no-gate", "--output-kind", "output_0=embedding", "--out", tmp_path / "declared")
    assert declared.exit_code == 0, declared.output
    output = _output(json.loads((tmp_path / "declared" / "report.json").read_text()))
    assert (output["kind"], output["kind_from"], output["kind_reason"]) == ("embedding", "declared", "--output-kind")
