"""Output kinds that say what they judged: pitch bins, CTC logits and landmarks each get their own measures, every
output's kind is shown with how it was decided and the flag that overrides it, and labels are used or not, in words.

The models are small real ones (tests/models_for_tests.py) saved with torch.export.save, as a user would, and run
through the CLI into real ONNX files checked in onnxruntime.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.models_for_tests import CtcHead, Embedder, FloatTable, Landmarks, PitchBins

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


def test_labels_of_a_few_classes_judge_the_output_they_fit(cli, tmp_path):
    """Only classes 0-3 of a 10-class model in the sample: its argmax matches them far above chance, so they are used."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()
    _save(model, torch.zeros(2, 12), tmp_path / "net.pt2")
    x = RNG.standard_normal((1000, 12)).astype(np.float32)
    predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    keep = predicted < 4
    np.savez(tmp_path / "few.npz", x=x[keep], y=predicted[keep])
    result, report = _quantize(cli, tmp_path / "net.pt2", tmp_path / "few.npz", tmp_path / "run")
    assert report["reference"]["metrics"]["task"] == {"name": "accuracy", "value": 1.0, "higher_is_better": True}
    note = report["reference"]["labels"][0]
    assert re.match(r"y used for output_0: [1-4] of its 10 classes present \(the reference model's argmax matches y on 100.0 %", note)
    assert note in report["verdict"]["notes"] and note in (tmp_path / "run" / "report.md").read_text()
    assert note[:40] in result.stdout
    assert report["verdict"]["summary"].startswith("labels: judged by max_degradation")
    assert _output(report)["labelled"] and _output(report)["kind_from"] == "head"


def test_labels_that_do_not_label_an_embedding_are_set_aside_in_words(cli, tmp_path):
    torch.manual_seed(0)
    _save(Embedder(), torch.zeros(2, 1, 8, 8), tmp_path / "emb.pt2")
    np.savez(tmp_path / "digits.npz", x=RNG.standard_normal((300, 1, 8, 8)).astype(np.float32), y=RNG.integers(0, 10, 300))
    result, report = _quantize(cli, tmp_path / "emb.pt2", tmp_path / "digits.npz", tmp_path / "run")
    assert report["reference"]["metrics"]["task"] is None and _output(report)["kind"] == "embedding"
    note = report["reference"]["labels"][0]
    assert note.startswith("y not used: its 10 classes (0 to 9) do not label output_0's 16 values") and "judged by fidelity alone" in note
    assert note in report["verdict"]["notes"] and note[:40] in result.stdout


def test_a_repair_that_keeps_everything_float_is_not_an_int8_artifact(cli, tmp_path):
    """The pitch bins' argmax moves under int8 of both layers, so repair keeps them both in float: that file holds no
    integer weight, and is listed as what it is."""
    torch.manual_seed(0)
    _save(PitchBins(), torch.zeros(2, 64), tmp_path / "pitch.pt2")
    np.savez(tmp_path / "frames.npz", x=RNG.standard_normal((200, 64)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / "pitch.pt2", tmp_path / "frames.npz", tmp_path / "run")
    repaired = next(a for a in report["artifacts"] if a["name"] == "int8-onnx")
    assert "keep float: " in repaired["repair"]["kept"]  # on top of dynamic MatMul when that came nearer the floor
    assert repaired["precision"] == "fp32" and "speedup_vs_fp32" not in repaired and "speed" not in repaired
    assert repaired["gain"]["finding"] == "all float" and repaired["gain"]["listed_as"] == "mixed"  # the note says this
    assert repaired["holds_integer_ops"] is False  # what the ONNX writer found, not its note read back
    note = "repair kept everything float: this is an fp32 file (no integer weights); listed as precision fp32, never recommended as"
    assert any(n.startswith(note) for n in repaired["notes"]) and note in result.stdout
    recommended = report["recommended"]
    assert "int8-onnx" not in {(pick or {}).get("artifact") for pick in [recommended["local-cpu"], *recommended["by_format"].values()]}
    assert any(e["artifact"] == "int8-onnx" for e in recommended["excluded"])  # its first reason: a gate (200 samples decide none)
    assert not any(g["artifact"] == "int8-onnx" and g["passed"] for g in report["gates"])


def test_an_int8_file_no_smaller_than_fp32_says_so_and_is_not_recommended(cli, tmp_path):
    torch.manual_seed(0)
    _save(FloatTable(), torch.zeros(2, 16), tmp_path / "table.pt2")
    np.savez(tmp_path / "t.npz", x=RNG.standard_normal((200, 16)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / "table.pt2", tmp_path / "t.npz", tmp_path / "run")
    int8 = next(a for a in report["artifacts"] if a["name"] == "int8-onnx")
    fp32 = next(a for a in report["artifacts"] if a["name"] == "fp32-onnx")
    assert int8["precision"] == "int8" and int8["size_bytes"] >= 0.95 * fp32["size_bytes"]
    assert int8["gain"] == {"finding": "no size gain", "fp32": "fp32-onnx", "size_bytes": int8["size_bytes"],
                            "fp32_size_bytes": fp32["size_bytes"]}
    note = f"gains nothing in size: {int8['size_bytes'] / fp32['size_bytes']:.3f}x the fp32 file"
    assert any(n.startswith(note) and n.endswith("not recommended for size") for n in int8["notes"])
    assert note in result.stdout and note in (tmp_path / "run" / "report.md").read_text()
    assert {"artifact": "int8-onnx", "why": f"{note} ({int8['size_bytes']:,} vs {fp32['size_bytes']:,} bytes), and was not "
            "measured faster than fp32"} in report["recommended"]["excluded"]
