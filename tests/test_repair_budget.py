"""Repair that spends its time well: steps that cannot change the file are skipped with why, layers kept in float
build on dynamic MatMul when that is the setting in use, every step says where it is, and a time budget stops it.

The model is the wide-range LSTM encoder (tests/models_for_tests.py) whose int8 ONNX file misses its embedding floor,
so repair runs; everything goes through the real export, onnxruntime quantization and verification.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.cli_checks import one_line
from tests.models_for_tests import WideRangeLSTM


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    """The wide-range LSTM encoder as TorchScript, and unlabelled data (.npz with only x)."""
    folder = tmp_path_factory.mktemp("lstm")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.trace(WideRangeLSTM().eval(), torch.zeros(1, 6, 8)), str(folder / "lstm.pt"))
    x = np.random.default_rng(0).standard_normal((200, 6, 8)).astype(np.float32)
    x[:, :, 0] *= 1000.0
    np.savez(folder / "lstm.npz", x=x)
    return folder


def _int8(run_dir) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    return next(a for a in report["artifacts"] if a["name"] == "int8-onnx")


def test_steps_that_cannot_change_the_file_are_skipped_and_float_layers_keep_dynamic_matmul(lstm, tmp_path):
    """The file as configured already has dynamic MatMuls (picked by timing) and no Conv: the dynamic step and the
    calibration methods cannot change it, so repair goes straight to layers kept in float on top of dynamic MatMul,
    each step announced with its number and the budget."""
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize

    said = []
    handle = load_model(lstm / "lstm.pt", input_shapes=["1x6x8"])
    quantize(handle, QuantizeConfig(formats=["onnx"], bench=False), str(lstm / "lstm.npz"), tmp_path, step=said.append)
    repair = _int8(tmp_path)["repair"]
    assert [s["step"] for s in repair["skipped"]] == ["dynamic int8 for MatMul, Gemm", "percentile calibration", "entropy calibration"]
    assert repair["skipped"][0]["why"] == "the file as configured already quantizes MatMul/Gemm dynamically"
    assert "no other weighted op (Conv)" in repair["skipped"][1]["why"]
    tried = [s["step"] for s in repair["steps"][1:]]
    assert tried and all(s.startswith("dynamic int8 for MatMul, Gemm + keep float: ") for s in tried)
    assert repair["kept"] == tried[-1] and repair["steps"][-1]["passed"]
    assert any(t["label"].startswith("ptq:int8-dynamic") for t in repair["steps"][-1]["techniques"])
    lines = [line for line in said if ": repair " in line]
    assert lines[0].startswith(f"int8 onnx: repair 1/4: {tried[0]} [0:0") and lines[0].endswith(" of the 10:00 repair budget]")
    assert repair["budget"] == {**repair["budget"], "seconds": 600.0, "ran_out": False, "not_tried": []}
    markdown = (tmp_path / "report.md").read_text()
    assert "| percentile calibration | - | skipped | calibration sets static activation ranges;" in markdown


def test_a_spent_budget_stops_repair_and_the_report_lists_what_was_not_tried(cli, lstm, tmp_path):
    result = cli("quantize", lstm / "lstm.pt", "--input-shape", "1x6x8", "--data", lstm / "lstm.npz", "--format", "onnx",
                 "--repair-budget", "0.001", "--no-bench", "--out", tmp_path)
    assert result.exit_code == 1, result.output
    int8 = _int8(tmp_path)
    repair = int8["repair"]
    assert repair["kept"] is None and len(repair["steps"]) == 1  # the file as configured only
    assert repair["budget"]["ran_out"] and repair["budget"]["seconds"] == 0.001
    # spent before the layers were ranked (one line stands for their steps) or right after: either way none was tried
    assert repair["budget"]["not_tried"] and all("keep float: " in label for label in repair["budget"]["not_tried"])
    assert "the 0.001 s repair budget ran out" in repair["summary"] and "raise --repair-budget" in repair["summary"]
    assert "repair budget ran out" in result.stdout
    assert (tmp_path / int8["path"]).exists() and int8["metrics"]["fidelity"] is not None  # the file as configured stays


@pytest.mark.parametrize("value", ["0", "-5", "nan", "100000"])
def test_repair_budget_out_of_range_is_one_line_exit_2(cli, lstm, tmp_path, value):
    result = cli("quantize", lstm / "lstm.pt", "--input-shape", "1x6x8", "--data", lstm / "lstm.npz", "--format", "onnx",
                 "--repair-budget", value, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert one_line(result).startswith("error: --repair-budget: give a number above 0, at most 86,400 seconds")
    assert not (tmp_path / "run").exists()
