"""Transformer graph fusions (onnxruntime's transformer optimizer) for an exported fp32 ONNX graph.

onnxruntime.transformers.optimizer (model_type "bert") rewrites attention blocks into one ``Attention`` op (Q, K, V
projections in one GEMM), residual Add + LayerNormalization into ``SkipLayerNormalization`` (with the bias Add) and
GELU patterns into ``Gelu``/``BiasGelu``. Heads and hidden size are read from the graph (the Q path's Reshape).

The dynamo exporter writes a residual ``x + attention(x)`` as ``Add(x, attention)``; when ``x`` is itself an Add (token
embedding + position), the optimizer's matcher takes that first Add for the attention output and gives up. Putting the
branch that ends in a MatMul (+ bias Add) first in residual Adds feeding a LayerNormalization (the sum is the same) lets
the Attention fusion match.

Whether a fused graph is kept is measured, not assumed (compress.backends.onnx.choose): on a 2-core AVX2 CPU the
fused SkipLayerNormalization kernel is slower than LayerNormalization + Add, and QAttention slower than four int8
MatMuls.

Example:
    >>> fusion = fuse_transformer(onnx.load("model.fp32.onnx"))
    >>> fusion.describe()
    'Attention ×1, SkipLayerNormalization ×2'
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import onnx

from compress.backends.onnx.export import quiet_logger

FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "Gelu", "BiasGelu",
             "FastGelu", "LayerNormalization")


@dataclass
class Fusion:
    """A fused copy of a graph and how many of each fused op it gained (``{"Attention": 1, ...}``)."""

    model: onnx.ModelProto
    counts: dict[str, int]

    def describe(self) -> str:
        return ", ".join(f"{op} ×{count}" for op, count in self.counts.items())


def has_transformer_patterns(model: onnx.ModelProto) -> bool:
    """A LayerNormalization, or a Softmax between MatMuls (attention): the graphs the fusions can rewrite."""
    ops = {node.op_type for node in model.graph.node}
    return "LayerNormalization" in ops or {"Softmax", "MatMul"} <= ops


def fuse_transformer(model: onnx.ModelProto) -> Fusion | None:
    """The graph with attention, LayerNorm and GELU patterns fused, or None when nothing fuses."""
    if not has_transformer_patterns(model):
        return None
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    _residual_branch_first(prepared.graph)
    with quiet_logger(), quiet_logger("onnxruntime.transformers"):
        optimized = optimize_model(prepared, model_type="bert", num_heads=0, hidden_size=0,
                                   optimization_options=FusionOptions("bert"), opt_level=0, use_gpu=False)
    fused = optimized.model
    before, after = _op_counts(model), _op_counts(fused)
    counts = {op: after[op] - before[op] for op in FUSED_OPS if after[op] > before[op]}
    if not counts:
        return None
    if not any(o.domain == "com.microsoft" for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    del fused.metadata_props[:]
    fused.metadata_props.extend(model.metadata_props)  # the export notes travel with the file
    return Fusion(fused, counts)


def _op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def _residual_branch_first(graph: onnx.GraphProto) -> None:
    """In each Add feeding a LayerNormalization, put first the input made by a MatMul (directly or through its bias
    Add): the order onnxruntime's attention matcher expects."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def from_matmul(name: str) -> bool:
        node = producers.get(name)
        if node is not None and node.op_type == "Add":
            node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), node)
        return node is not None and node.op_type == "MatMul"

    for node in graph.node:
        feeds_norm = any(c.op_type == "LayerNormalization" for c in consumers[node.output[0]]) if node.output else False
        if node.op_type == "Add" and feeds_norm and len(node.input) == 2 and not from_matmul(node.input[0]) and from_matmul(node.input[1]):
            node.input[0], node.input[1] = node.input[1], node.input[0]
