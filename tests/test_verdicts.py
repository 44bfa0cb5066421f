"""Trustworthy verdicts: every output measured by its kind, gates on by default, no false "passed".

Models are built in code (tests/models_for_tests.py) and run through the real exports and runtimes.
"""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from compress.steps.gates import GatePolicy, evaluate_gates, fidelity_floor_check
from tests.report_models import artifact_model
from compress.data.outputs import infer_kinds, measure, neighbour_agreement
from compress.report import load_schema, validate_report
from compress.report.model import report_json_schema
from tests.models_for_tests import MultiHead, TinyEncoder, WideRangeLSTM

RNG = np.random.default_rng(0)


def _report(run_dir):
    return json.loads((run_dir / "report.json").read_text())


def _artifact(report, name):
    return next(a for a in report["artifacts"] if a["name"] == name)


def _outputs(artifact):
    return {o["name"]: o for o in artifact["metrics"]["fidelity"]["outputs"]}


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    """The wide-range LSTM encoder as TorchScript, and unlabelled data (.npz with only x)."""
    folder = tmp_path_factory.mktemp("lstm")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.trace(WideRangeLSTM().eval(), torch.zeros(1, 6, 8)), str(folder / "lstm.pt"))
    x = RNG.standard_normal((200, 6, 8)).astype(np.float32)
    x[:, :, 0] *= 1000.0
    np.savez(folder / "lstm.npz", x=x)
    return folder


def test_broken_int8_is_never_recommended_and_the_run_exits_1(cli, lstm, tmp_path):
    result = cli("quantize", lstm / "lstm.pt", "--input-shape", "1x6x8", "--data", lstm / "lstm.npz", "--format", "onnx",
                 "--no-auto-fallback", "--out", tmp_path, "--runs", "5")
    report = _report(tmp_path)
    assert result.exit_code == 1 and report["passed"] is False
    assert "gate fidelity_floor failed for int8-onnx: embedding output_0" in result.stderr
    assert "None >" not in result.stderr
    assert report["verdict"]["summary"].startswith("no labels: judged by fidelity floor embedding cosine >= 0.98")
    recommended = report["recommended"]
    assert recommended["local-cpu"]["artifact"] != "int8-onnx"
    assert [e["artifact"] for e in recommended["excluded"]] == ["int8-onnx"]
    assert "## Verdict" in (tmp_path / "report.md").read_text() and "no labels" in (tmp_path / "report.md").read_text()


def _cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-sample cosine between the two embeddings."""
    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return (unit(reference) * unit(candidate)).sum(1)


def test_repair_makes_the_broken_lstm_meet_its_floor_on_samples_compress_never_saw(cli, lstm, tmp_path):
    """No labels: the int8 file as configured (dynamic MatMuls, picked by timing) misses the embedding floor; repair
    skips the steps that cannot change it (dynamic int8, the other calibrations), then keeps layers in float on top of
    dynamic MatMul; the kept file holds the floor in onnxruntime on fresh samples.

    Its neighbour agreement (0.905 of a 0.9 floor) is measured on 40 test samples, which cannot resolve the floor:
    the verdict is undecided (exit 1, not recommended) and says how many samples would decide it."""
    result = cli("quantize", lstm / "lstm.pt", "--input-shape", "1x6x8", "--data", lstm / "lstm.npz", "--format", "onnx",
                 "--out", tmp_path, "--no-bench")
    assert result.exit_code == 1, result.output
    report = _report(tmp_path)
    undecided = [g for g in report["gates"] if g.get("outcome") == "undecided"]
    assert [(g["artifact"], g["measure"]) for g in undecided] == [("int8-onnx", "neighbour_agreement")]
    assert undecided[0]["samples_needed"] > 40 and "40 test samples cannot resolve" in undecided[0]["reason"]
    int8 = _artifact(report, "int8-onnx")
    steps = int8["repair"]["steps"]
    assert steps[0]["step"] == "as configured" and not steps[0]["passed"]
    assert [s["step"] for s in int8["repair"]["skipped"]] == ["dynamic int8 for MatMul, Gemm", "percentile calibration",
                                                              "entropy calibration"]
    assert [s["passed"] for s in steps] == [False] * (len(steps) - 1) + [True]
    assert int8["repair"]["kept"] == steps[-1]["step"] and steps[-1]["step"].startswith("dynamic int8 for MatMul, Gemm + keep float: ")
    assert steps[-1]["techniques"] == int8["techniques"] and any(t["label"].startswith("keep-float:") for t in int8["techniques"])
    assert not report["passed"] and [e["artifact"] for e in report["recommended"]["excluded"]] == ["int8-onnx"]
    assert "## Repair of int8-onnx" in (tmp_path / "report.md").read_text()

    fresh = np.random.default_rng(1).standard_normal((64, 6, 8)).astype(np.float32)
    fresh[:, :, 0] *= 1000.0
    expected = torch.jit.load(str(lstm / "lstm.pt"))(torch.from_numpy(fresh)).detach().numpy()
    session = ort.InferenceSession(str(tmp_path / int8["path"]), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = np.concatenate([session.run(None, {name: fresh[i:i + 1]})[0] for i in range(len(fresh))])
    # every fresh sample holds the floor (nearest-neighbour agreement is no test here: this encoder's embeddings are
    # nearly parallel, the reference's nearest neighbours differ by ~2e-5 in cosine, below any int8 error)
    assert _cosines(expected, got).min() >= 0.98


def test_max_degradation_without_labels_is_judged_by_fidelity(cli, lstm, tmp_path):
    result = cli("quantize", lstm / "lstm.pt", "--input-shape", "1x6x8", "--data", lstm / "lstm.npz", "--format", "onnx",
                 "--max-degradation", "0.01", "--no-auto-fallback", "--out", tmp_path, "--no-bench")
    report = _report(tmp_path)
    assert result.exit_code == 1 and "None" not in result.stderr
    assert {g["judged_by"] for g in report["gates"]} == {"fidelity"}
    assert any("judged by fidelity instead" in note for note in report["verdict"]["notes"])


def test_no_gate_restores_exit_0_and_says_gates_were_off(cli, lstm, tmp_path):
    result = cli("quantize", lstm / "lstm.pt", "--input-shape", "1x6x8", "--data", lstm / "lstm.npz", "--format", "onnx",
                 "--no-gate", "--out", tmp_path, "--runs", "5")
    report = _report(tmp_path)
    assert result.exit_code == 0 and report["passed"] is True and report["gates"] == []
    assert report["verdict"]["gates"] == "off" and "gates off" in report["verdict"]["summary"]
    assert report["recommended"]["local-cpu"]["artifact"] != "int8-onnx"  # still judged for the recommendation


@pytest.fixture(scope="module")
def multihead(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multihead")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.trace(MultiHead().eval(), torch.zeros(1, 1, 8, 8)), str(folder / "multi.pt"))
    np.savez(folder / "multi.npz", x=RNG.standard_normal((200, 1, 8, 8)).astype(np.float32))
    return folder


def test_every_output_is_measured_by_its_kind(cli, multihead, tmp_path):
    result = cli("quantize", multihead / "multi.pt", "--input-shape", "1x1x8x8", "--data", multihead / "multi.npz",
                 "--format", "onnx", "--output-kind", "output_0=classes", "--out", tmp_path, "--no-bench", "--no-gate")
    assert result.exit_code == 0, result.output
    report = _report(tmp_path)
    int8 = _artifact(report, "int8-onnx")
    outputs = _outputs(int8)
    assert {name: o["kind"] for name, o in outputs.items()} == {
        "output_0": "classes", "output_1": "embedding", "output_2": "regression", "output_3": "regression"}
    assert outputs["output_0"]["kind_from"] == "declared"
    assert {"top1_agreement", "top5_agreement", "kl_divergence"} <= set(outputs["output_0"]["measures"])
    assert {"cosine", "cosine_min", "neighbour_agreement"} <= set(outputs["output_1"]["measures"])
    for regressor in ("output_2", "output_3"):  # no top-1 on a regressor, no cosine of one value
        assert set(outputs[regressor]["measures"]) == {"sqnr_db", "relative_error", "max_abs_error"}
    worst = int8["metrics"]["fidelity"]["worst"]
    assert worst["output"] in outputs and worst["kind"] == outputs[worst["output"]]["kind"]
    assert worst["value"] == outputs[worst["output"]]["measures"][worst["measure"]]
    assert [o["kind"] for o in report["reference"]["outputs"]] == ["classes", "embedding", "regression", "regression"]


def test_inferred_kinds_without_labels_and_a_bad_declaration(cli, multihead, tmp_path):
    result = cli("quantize", multihead / "multi.pt", "--input-shape", "1x1x8x8", "--data", multihead / "multi.npz",
                 "--format", "onnx", "--out", tmp_path, "--no-bench", "--no-gate")
    assert result.exit_code == 0, result.output
    assert _outputs(_artifact(_report(tmp_path), "int8-onnx"))["output_0"]["kind"] == "embedding"  # logits without labels
    bad = cli("quantize", multihead / "multi.pt", "--input-shape", "1x1x8x8", "--output-kind", "output_0=logits",
              "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--output-kind" in bad.stderr
    unknown = cli("quantize", multihead / "multi.pt", "--input-shape", "1x1x8x8", "--data", multihead / "multi.npz",
                  "--format", "onnx", "--output-kind", "nope=embedding", "--out", tmp_path / "unknown", "--no-bench")
    assert unknown.exit_code == 2 and "output_0" in unknown.stderr


def test_bert_like_encoder_with_int64_ids_and_mask_is_an_embedding(cli, tmp_path):
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 60, (2, 12)), torch.ones(2, 12, dtype=torch.int64)
    torch.jit.save(torch.jit.trace(TinyEncoder().eval(), (ids, mask)), str(tmp_path / "enc.pt"))
    np.savez(tmp_path / "enc.npz", x=RNG.integers(0, 60, (200, 12)), x1=(RNG.random((200, 12)) > 0.2).astype(np.int64))
    result = cli("quantize", tmp_path / "enc.pt", "--input-shape", "ids=1x12:int64:0-60", "--input-shape", "mask=1x12:int64:0-2",
                 "--data", tmp_path / "enc.npz", "--format", "onnx", "--out", tmp_path / "run", "--no-bench")
    report = _report(tmp_path / "run")
    output = _outputs(_artifact(report, "int8-onnx"))["output_0"]
    assert output["kind"] == "embedding" and output["measures"]["neighbour_agreement"] is not None
    assert result.exit_code == (0 if report["passed"] else 1)
    assert [(g["artifact"], g["judged_by"]) for g in report["gates"]] == [("int8-onnx", "fidelity")]


def test_default_degradation_gate_fails_a_hard_prune_and_no_gate_turns_it_off(cli, zoo_checkpoint, tmp_path):
    mnist = zoo_checkpoint("mnist_cnn", epochs=3)
    args = ("--method", "l1-structured", "--sparsity", "0.9", "--format", "onnx", "--no-int8", "--no-bench")
    result = cli("prune", mnist, *args, "--out", tmp_path / "gated")
    report = _report(tmp_path / "gated")
    gate = next(g for g in report["gates"] if g["artifact"] == "fp32-onnx")
    assert gate["name"] == "max_degradation" and gate["judged_by"] == "labels" and gate["limit"] == 0.01
    assert result.exit_code == 1 and gate["passed"] is False and "(default limit)" in gate["reason"]
    assert report["recommended"]["local-cpu"] is None
    free = cli("prune", mnist, *args, "--no-gate", "--out", tmp_path / "free")
    assert free.exit_code == 0 and _report(tmp_path / "free")["verdict"]["gates"] == "off"


def test_a_labelled_classifier_beside_an_embedding_head_is_judged_by_both():
    outputs = [{"name": "cls", "kind": "classes", "kind_from": "head", "labelled": True, "measures": {"top1_agreement": 0.9}},
               {"name": "emb", "kind": "embedding", "kind_from": "shape", "labelled": False,
                "measures": {"cosine": 0.93, "cosine_min": 0.5, "neighbour_agreement": 0.95}}]
    fidelity = {"top1_agreement": 0.9, "sqnr_db": None, "max_abs_error": None, "outputs": outputs,
                "worst": {"output": "emb", "kind": "embedding", "measure": "cosine", "value": 0.93}}
    artifact = artifact_model(metrics={"task": {"name": "accuracy", "value": 0.9, "higher_is_better": True}, "degradation": 0.002,
                                       "fidelity": fidelity})
    gates = {g.name: g for g in evaluate_gates([artifact], GatePolicy())}
    assert gates["max_degradation"].passed and gates["max_degradation"].judged_by == "labels"
    assert not gates["fidelity_floor"].passed and gates["fidelity_floor"].output == "emb"
    assert fidelity_floor_check(artifact.metrics.fidelity, unlabelled_only=True) == [
        {"output": "emb", "kind": "embedding", "measure": "cosine", "value": 0.93, "floor": 0.98}]


def test_floors_fail_the_issues_cases_and_pass_a_good_box_regressor():
    reference = RNG.standard_normal((300, 32))
    noisy = reference + 0.4 * RNG.standard_normal(reference.shape)   # mean cosine ~0.93
    assert measure("embedding", reference, noisy)["cosine"] < 0.98
    boxes = RNG.uniform(0, 100, (300, 4))
    assert measure("regression", boxes, boxes + 0.8 * boxes.std() * RNG.standard_normal(boxes.shape))["sqnr_db"] < 20
    good = measure("regression", boxes, boxes + 0.05 * boxes.std() * RNG.standard_normal(boxes.shape))
    assert good["sqnr_db"] > 20 and "top1_agreement" not in good and "cosine" not in good
    assert neighbour_agreement(reference, reference) == 1.0


def test_state_outputs_are_found_from_the_state_input():
    outputs = [np.zeros((10, 5)), np.ones((10, 32))]
    kinds = infer_kinds(outputs, state_shapes=[(8,), (32,)])
    assert [k.kind for k in kinds] == ["embedding", "state"]


def test_schema_json_is_generated_from_the_models_and_v1_reports_still_validate():
    assert load_schema() == report_json_schema(), "run: python -m compress.report.model"
    v1 = {"schema_version": 1, "tool": {"name": "compress", "version": "0.1.0"}, "created": "2026-11-22T10:00:00Z",
          "source": {"path": "m.pt", "format": "zoo", "sha256": "0" * 64}, "dataset": None,
          "reference": {"metrics": {"task": None}, "size_bytes": 1}, "artifacts": [], "gates": [], "passed": True}
    assert validate_report(v1) == 1
