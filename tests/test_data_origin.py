"""A run remembers its data (path, sha256, split seed): verify reuses it and says when the file changed."""
from __future__ import annotations

import json

import numpy as np

from tests.cli_checks import json_output


def test_verify_reuses_the_npz_a_quantize_run_used_and_warns_when_it_changed(cli, zoo_checkpoint, splits, tmp_path):
    data = tmp_path / "digits-mine.npz"
    test = splits.test
    np.savez(data, x=test.x[0], y=test.y[0])
    run = tmp_path / "run"
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--data", data, "--format", "onnx", "--no-bench", "--no-gate", "--out", run)
    assert result.exit_code == 0, result.output
    dataset = json.loads((run / "report.json").read_text())["dataset"]
    assert dataset["source"] == str(data.resolve()) and len(dataset["sha256"]) == 64 and dataset["split_seed"] == 0

    verified = json_output(cli("verify", run / "model.int8.onnx", "--no-report", "--json"))
    assert verified["data"]["source"] == str(data.resolve()) and verified["data"]["warnings"] == []

    np.savez(data, x=test.x[0][::-1].copy(), y=test.y[0][::-1].copy())  # same name, other bytes
    changed = cli("verify", run / "model.int8.onnx", "--no-report")
    assert changed.exit_code in (0, 1), changed.output
    assert f"warning: data {data.resolve()} changed since the run" in " ".join(changed.stderr.split())
