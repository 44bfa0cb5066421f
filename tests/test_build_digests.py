"""bench.build_digests on a one-run matrix (linreg × onnx, through the real CLI): --check passes against the file it
just wrote (a second real build) and fails, naming the file, once one artifact of the first build is altered."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONLY = ["--only", "quantize-linreg-onnx"]


def _digests(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.build_digests", *ONLY, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})


def test_check_passes_on_its_own_digests_and_names_an_altered_artifact(tmp_path):
    stored = tmp_path / "digests.json"
    written = _digests("--out", str(stored), "--keep", str(tmp_path / "build"))
    assert written.returncode == 0, written.stderr
    document = json.loads(stored.read_text())
    assert document["runs"] == ["train-linreg", "quantize-linreg-onnx"] and document["versions"]["torch"]
    files = {(a["run"], a["file"]) for a in document["artifacts"]}
    assert ("train-linreg", "linreg.pt") in files
    checkpoint = next(a for a in document["artifacts"] if a["file"] == "linreg.pt")
    assert checkpoint["deterministic"] is False and "train_seconds" in checkpoint["why"]
    assert {f for run, f in files if run == "quantize-linreg-onnx"} == {
        f"model.{p}.onnx" for p in ("fp32", "int8", "int8-dynamic", "fp16", "int8-weight", "int4-weight")}

    same = _digests("--check", str(stored))
    assert same.returncode == 0, same.stderr
    assert "0 changed, 0 missing, 0 new" in same.stderr  # linreg.pt may differ: it is marked not deterministic

    (tmp_path / "build" / "first" / "quantize-linreg-onnx" / "model.int8.onnx").write_bytes(b"altered")
    changed = _digests("--check", str(stored), "--built", str(tmp_path / "build" / "first"))
    assert changed.returncode == 1
    assert "changed: quantize-linreg-onnx/model.int8.onnx" in changed.stderr.splitlines()
    assert "1 changed, 0 missing, 0 new" in changed.stderr
