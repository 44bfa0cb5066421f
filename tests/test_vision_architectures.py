"""Real vision architectures through the door: torchvision's ResNet-18, MobileNetV3-small and EfficientNet-B0 (random
weights, never downloaded) saved with torch.export.save at batch 1, as a user would, and quantized through the CLI to
ONNX, TFLite and .pte, every file verified in its runtime.

A program saved at batch 1 has its batch fixed (torch.export specializes a dimension of size 1): the ONNX export keeps
that batch instead of failing, as the TFLite and .pte exports already did; the first test shows it on a small model
that needs no torchvision.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.models_for_tests import Embedder

FORMATS = ("onnx", "tflite", "pte")


def _quantize(cli, model, data, out, formats, *extra):
    result = cli("quantize", model, "--data", data, "--format", ",".join(formats), "--no-bench", "--calib-samples", "32",
                 "--out", out, *extra)
    report = json.loads((out / "report.json").read_text())
    assert result.exit_code == (0 if report["passed"] else 1), result.output
    return result, report


def test_a_program_saved_at_batch_1_exports_to_onnx_with_that_fixed_batch(cli, tmp_path):
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Embedder().eval(), (torch.zeros(1, 1, 8, 8),)), str(tmp_path / "emb.pt2"))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((100, 1, 8, 8)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / "emb.pt2", tmp_path / "x.npz", tmp_path / "run", ["onnx"])
    assert report["passed"] and "refused" not in report
    fp32 = next(a for a in report["artifacts"] if a["name"] == "fp32-onnx")
    assert fp32["verified_in"] == ["onnxruntime"]
    from compress.backends.onnx.export import export_notes

    assert any(n.startswith("the batch axis is fixed at 1: the torch.export program was saved with a fixed batch")
               for n in export_notes(tmp_path / "run" / fp32["path"]))  # said in the file's own metadata


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_architecture_quantizes_to_every_format(cli, tmp_path, name):
    models = pytest.importorskip("torchvision.models", reason="torchvision (a CPU build) is not installed")
    torch.manual_seed(0)
    model = getattr(models, name)(weights=None, num_classes=10).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 64, 64),)), str(tmp_path / f"{name}.pt2"))
    np.savez(tmp_path / "images.npz", x=np.random.default_rng(0).standard_normal((48, 3, 64, 64)).astype(np.float32))
    result, report = _quantize(cli, tmp_path / f"{name}.pt2", tmp_path / "images.npz", tmp_path / "run", FORMATS,
                               "--repair-budget", "120")
    assert "refused" not in report, report.get("refused")
    runtimes = {"onnx": "onnxruntime", "tflite": "litert", "pte": "executorch"}
    for fmt in FORMATS:
        files = [a for a in report["artifacts"] if a["format"] == fmt]
        assert {a["name"] for a in files} == {f"fp32-{fmt}", f"int8-{fmt}"}
        assert all(a["verified_in"] == [runtimes[fmt]] and (tmp_path / "run" / a["path"]).is_file() for a in files)
    fidelity = {a["name"]: a["metrics"]["fidelity"]["worst"] for a in report["artifacts"]}
    assert all(f["value"] is not None for f in fidelity.values()), fidelity
    assert "manifest.json" in {p.name for p in (tmp_path / "run").iterdir()}
