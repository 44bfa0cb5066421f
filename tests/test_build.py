"""compress.build: the one build path every command's files go through (issue 28)."""
from __future__ import annotations

from pathlib import Path

import pytest


def test_specs_name_the_files_each_command_writes():
    from compress.passes.qat import QatConfig
    from compress.passes.qat_export import qat_spec
    from compress.passes.quantize import QuantizeConfig, artifact_specs

    specs = artifact_specs(QuantizeConfig(formats=["onnx", "tflite"], precisions=["int8", "fp16"]))
    assert [(s.name, s.filename, s.source) for s in specs] == [
        ("fp32-onnx", "model.fp32.onnx", "fp32 export"), ("int8-onnx", "model.int8.onnx", "quantizer"),
        ("fp16-onnx", "model.fp16.onnx", "quantizer"), ("fp32-tflite", "model.fp32.tflite", "fp32 export"),
        ("int8-tflite", "model.int8.tflite", "quantizer"), ("fp16-tflite", "model.fp16.tflite", "quantizer")]
    assert [s.filename for s in artifact_specs(QuantizeConfig(formats=["onnx"], include_fp32=False))] == ["model.int8.onnx"]

    class Trained:
        techniques = ["qat:int8"]

    spec = qat_spec(Trained(), QatConfig(weight_bits=4), "tflite")
    assert (spec.name, spec.filename, spec.techniques[-1].label) == ("qat-w4a8-per-channel-tflite", "model.qat-w4a8-per-channel.tflite", "export:int8-static-qdq")
    assert spec.notes and "4-bit range" in spec.notes[0]


def test_build_exports_verifies_and_measures_the_reference(zoo_checkpoint, tmp_path):
    """Without a reference, the first fp32 file's size becomes the reference's; each file is verified in its runtime."""
    from compress.build import FP32, QUANTIZER, ArtifactSpec, BuildContext, build
    from compress.catalog import Technique
    from compress.loading.model import load_model
    from compress.steps.pipeline import heads_for
    from compress.passes.quantize import QuantizeConfig
    from compress.passes.workflow_common import resolve_splits

    handle = load_model(zoo_checkpoint("linreg", epochs=1))
    _, plan = resolve_splits(handle, None)
    specs = [ArtifactSpec("onnx", "fp32", "base-onnx", "base.fp32.onnx", FP32),
             ArtifactSpec("onnx", "int8", "small-onnx", "small.int8.onnx", QUANTIZER, (Technique("prune", method="l1", sparsity=0.5),))]
    built = build(handle, specs, BuildContext(tmp_path, plan, heads_for(handle, plan), QuantizeConfig(), compressed_size=True))
    assert [(a.name, a.path, a.format, a.verified_in) for a in built.artifacts] == [
        ("base-onnx", "base.fp32.onnx", "onnx", ["onnxruntime"]), ("small-onnx", "small.int8.onnx", "onnx", ["onnxruntime"])]
    assert built.reference.size_bytes == Path(tmp_path, "base.fp32.onnx").stat().st_size
    small = built.artifacts[1]
    assert small.techniques[0].model_dump() == {"kind": "prune", "method": "l1", "sparsity": 0.5, "label": "prune:l1:0.5"}
    assert 0 < small.compressed_size_bytes < Path(tmp_path, "small.int8.onnx").stat().st_size  # deflated
    assert built.preflight == []


def test_build_without_refusals_stops_at_the_first_failure(zoo_checkpoint, tmp_path):
    """Only a build given ``refusals`` goes on past a format that cannot be made (quantize); prune, distill and qat stop."""
    from compress.build import QUANTIZER, ArtifactSpec, BuildContext, build
    from compress.errors import UsageError
    from compress.loading.model import load_model
    from compress.steps.pipeline import heads_for, measure_reference
    from compress.passes.quantize import QuantizeConfig
    from compress.passes.workflow_common import resolve_splits

    handle = load_model(zoo_checkpoint("linreg", epochs=1))
    _, plan = resolve_splits(handle, None)
    context = BuildContext(tmp_path, plan, heads_for(handle, plan), QuantizeConfig(), measure_reference(handle, plan))
    with pytest.raises(UsageError, match="not available for pte"):
        build(handle, [ArtifactSpec("pte", "fp16", "fp16-pte", "model.fp16.pte", QUANTIZER)], context)
