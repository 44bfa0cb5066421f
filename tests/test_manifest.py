"""`compress quantize` writes manifest.json: every file of the run directory with its size and sha256, and each
artifact's format, precision, verification and whether it is recommended; the same ``outputs`` map as recipe
manifests, so a copy of the run can be checked file by file.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from compress.safety.io import sha256_file
from tests.models_for_tests import Embedder


def test_quantize_writes_a_manifest_of_every_file(cli, tmp_path):
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Embedder().eval(), (torch.zeros(2, 1, 8, 8),)), str(tmp_path / "emb.pt2"))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((120, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "run"
    result = cli("quantize", tmp_path / "emb.pt2", "--data", tmp_path / "x.npz", "--format", "onnx", "--runs", "5", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())

    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))  # .lock: the run's own
    assert [f["path"] for f in manifest["files"]] == on_disk
    assert {"report.json", "report.md", "report.html", "model.fp32.onnx", "model.int8.onnx"} <= set(on_disk)
    for row in manifest["files"]:
        assert row["sha256"] == sha256_file(out / row["path"]) == manifest["outputs"][row["path"]]
        assert row["size_bytes"] == (out / row["path"]).stat().st_size
    rows = {f["path"]: f for f in manifest["files"]}
    picked = report["recommended"]["local-cpu"]["artifact"]
    for artifact in report["artifacts"]:
        row = rows[artifact["path"]]
        assert (row["artifact"], row["format"], row["precision"]) == (artifact["name"], artifact["format"], artifact["precision"])
        assert row["verified"] and row["verified_in"] == ["onnxruntime"] and row["recommended"] == (artifact["name"] == picked)
    assert rows["report.json"]["role"] == "report" and manifest["command"] == "quantize" and manifest["passed"] is True
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*manifest*"))  # written atomically: nothing left over
