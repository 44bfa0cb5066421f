"""What one inference of an ONNX file costs: multiply-accumulates (int8 and float apart) and bytes moved, counted from
the graph with inferred shapes (the ONNX record's ``estimate_costs``; compress.targets.estimate turns it into a roofline).

Example:
    >>> onnx_costs(Path("model.int8.onnx"), batch=1)["int8_macs"] > 0
    True
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def empty_costs() -> dict:
    """What a backend's cost reader fills in (compress.targets.estimate reads it)."""
    return {"int8_macs": 0, "float_macs": 0, "weight_bytes": 0, "bytes_moved": 0, "uncounted_ops": set()}


def onnx_costs(path: Path, batch: int) -> dict:
    import onnx
    from onnx import numpy_helper, shape_inference

    from compress.backends.onnx.quantize import INTEGER_OPS

    model = onnx.load(str(path))
    for value in model.graph.input:  # fix the batch axis so every shape is known
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    model = shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*graph.input, *graph.value_info, *graph.output)}
    sizes = {v.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).itemsize
             for v in (*graph.input, *graph.value_info, *graph.output) if v.type.tensor_type.elem_type}
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for name, array in initializers.items():
        shapes[name] = list(array.shape)
    costs = empty_costs()
    costs["weight_bytes"] = sum(a.nbytes for a in initializers.values())
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    activations = 0
    for node in graph.node:
        for name in node.output:
            if name in shapes and all(shapes[name]):
                activations += 2 * math.prod(shapes[name]) * sizes.get(name, 4)  # written once, read once
        macs = _onnx_macs(node, shapes)
        if macs is None:
            if node.op_type in ("If", "Loop", "Scan"):
                costs["uncounted_ops"].add(node.op_type)
            continue
        int8 = node.op_type in INTEGER_OPS or any(i in dequantized for i in node.input[:2])
        costs["int8_macs" if int8 else "float_macs"] += macs
    costs["bytes_moved"] = costs["weight_bytes"] + activations
    return costs


def _onnx_macs(node, shapes: dict) -> int | None:
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if not out or not all(out):
        return None
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        weight = shapes.get(node.input[3 if op == "QLinearConv" else 1])
        return math.prod(out) * math.prod(weight[1:]) if weight and all(weight) else None
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "FusedMatMul", "DynamicQuantizeMatMul"):
        first = shapes.get(node.input[0])
        if not first or not all(first):
            return None
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        depth = first[0] if op == "Gemm" and trans_a else first[-1]
        return math.prod(out) * depth
    if op in ("LSTM", "GRU", "RNN"):
        x, w, r = (shapes.get(node.input[i]) for i in range(3))
        if not (x and w and r and all(x) and all(w) and all(r)):
            return None
        sequence, batch = x[0], x[1]
        return sequence * batch * w[0] * w[1] * (w[2] + r[2])  # directions x gates*hidden x (input + hidden)
    return None
