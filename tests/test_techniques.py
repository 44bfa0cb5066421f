"""Technique records: built where the technique happens, label and report.json record derived from the fields."""
from __future__ import annotations

import json

import pytest

from compress.catalog import FP32_EXPORT, Technique, technique_label, technique_record
from compress.passes.distill import DistillConfig
from compress.passes.prune import PruneConfig
from compress.passes.qat import QatConfig


@pytest.mark.parametrize("technique, record", [
    (Technique("ptq", precision="int8", scheme="static", calibration="minmax", per_channel=True, reduce_range=True),
     {"kind": "ptq", "precision": "int8", "scheme": "static", "calibration": "minmax", "per_channel": True,
      "reduce_range": True, "label": "ptq:int8-static:minmax:per-channel:reduce-range"}),
    (Technique("ptq", precision="int8", scheme="dynamic", op_types=("LSTM", "MatMul")),
     {"kind": "ptq", "precision": "int8", "scheme": "dynamic", "op_types": ["LSTM", "MatMul"], "label": "ptq:int8-dynamic:LSTM+MatMul"}),
    (Technique("wq", precision="int4-weight", scheme="weight-only", block_size=32, symmetric=False),
     {"kind": "wq", "precision": "int4-weight", "scheme": "weight-only", "block_size": 32, "symmetric": False,
      "label": "wq:int4-weight:block32:asymmetric"}),
    (Technique("ptq", precision="int8-weight", scheme="weight-only", per_channel=False, written="int8-weight-only"),
     {"kind": "ptq", "precision": "int8-weight", "scheme": "weight-only", "per_channel": False, "label": "ptq:int8-weight-only:per-tensor"}),
    (Technique("cast", precision="fp16", variant="weights"), {"kind": "cast", "precision": "fp16", "variant": "weights", "label": "cast:fp16-weights"}),
    (FP32_EXPORT, {"kind": "export", "precision": "fp32", "label": "export:fp32"}),
    (Technique("keep-float", layer="features.0"), {"kind": "keep-float", "layer": "features.0", "label": "keep-float:features.0"}),
    (Technique("graph-fusion", settings=(("Attention", 1), ("SkipLayerNormalization", 2))),
     {"kind": "graph-fusion", "Attention": 1, "SkipLayerNormalization": 2, "label": "graph-fusion:Attention=1:SkipLayerNormalization=2"}),
])
def test_label_and_record_are_derived_from_the_fields(technique, record):
    assert technique.as_dict() == record and technique.label == record["label"]
    assert json.dumps(technique_record(technique)) == json.dumps(record)  # key order too: report.json is byte-stable


def test_pass_configs_build_their_records():
    prune = PruneConfig(method="l1-structured", sparsity=0.5, finetune_epochs=2).technique()
    assert prune.as_dict() == {"kind": "prune", "method": "l1-structured", "sparsity": 0.5, "scope": "layer", "finetune": 2,
                               "label": "prune:l1-structured:0.5:layer:finetune=2"}
    assert PruneConfig(method="2:4").technique().as_dict() == {"kind": "prune", "method": "2:4", "sparsity": 0.5, "label": "prune:2:4:0.5"}
    assert QatConfig(epochs=1, weight_bits=4).technique().label == "qat:w4a8:per-channel:epochs=1"
    distill = DistillConfig(student="mnist_cnn:width=0.45", temperature=4.0, alpha=0.7).technique().as_dict()
    assert distill == {"kind": "distill", "method": "kd", "T": 4, "alpha": 0.7, "student": "mnist_cnn", "width": 0.45,
                       "label": "distill:kd:T=4:alpha=0.7:student=mnist_cnn:width=0.45"}


def test_plain_labels_and_records_read_back_from_files_are_kept():
    """``Technique.named`` for a caller with only a label; dicts (report.json, .pt2 metadata) and old labels as they are."""
    named = Technique.named("export:onnx:kv-cache")
    assert named.as_dict() == {"kind": "export", "args": ["onnx", "kv-cache"], "label": "export:onnx:kv-cache"}
    read_back = {"kind": "ptq", "precision": "int8", "label": "ptq:int8"}
    assert technique_record(read_back) is read_back and technique_label(read_back) == "ptq:int8"
    assert technique_label("prune:l1:0.5") == "prune:l1:0.5" and technique_label(named) == "export:onnx:kv-cache"

