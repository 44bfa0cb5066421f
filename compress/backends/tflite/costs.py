"""What one inference of a TFLite file costs: multiply-accumulates (int8 and float apart) and bytes moved, read from
the interpreter's ops and tensors (the TFLite record's ``estimate_costs``; compress.targets.estimate turns it into a
roofline).

Example:
    >>> tflite_costs(Path("model.int8.tflite"), batch=1)["bytes_moved"] > 0
    True
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from compress.backends.onnx.costs import empty_costs


def tflite_costs(path: Path, batch: int) -> dict:
    from compress.backends.tflite.session import open_session

    interpreter = open_session(path, None).interpreter
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    first = interpreter.get_input_details()[0]["shape"] if graph_inputs else [1]
    scale = batch / first[0] if len(first) and first[0] > 0 else 1.0  # litert-torch files have a fixed batch of 1
    costs = empty_costs()
    constants = {i for op in ops for i in op["inputs"] if i >= 0 and i not in produced and i not in graph_inputs}
    costs["weight_bytes"] = sum(_nbytes(tensors[i]) for i in constants)
    activations = sum(2 * _nbytes(tensors[int(i)]) for op in ops for i in op["outputs"])
    for op in ops:
        macs = _tflite_macs(op, tensors)
        if macs is None:
            continue
        weight = tensors[int(op["inputs"][1])] if len(op["inputs"]) > 1 and op["inputs"][1] >= 0 else None
        int8 = np.dtype(tensors[int(op["inputs"][0])]["dtype"]).kind in "iu" or (weight is not None and np.dtype(weight["dtype"]).kind in "iu")
        costs["int8_macs" if int8 else "float_macs"] += macs * scale
    costs["bytes_moved"] = costs["weight_bytes"] + activations * scale
    return costs


def _nbytes(tensor: dict) -> int:
    return int(math.prod(int(d) for d in tensor["shape"])) * np.dtype(tensor["dtype"]).itemsize


def _tflite_macs(op: dict, tensors: dict) -> int | None:
    name = op["op_name"]
    out = [int(d) for d in tensors[int(op["outputs"][0])]["shape"]]
    inputs = [int(i) for i in op["inputs"]]
    weight = [int(d) for d in tensors[inputs[1]]["shape"]] if len(inputs) > 1 and inputs[1] >= 0 else None
    if name == "CONV_2D" and weight:
        return math.prod(out) * math.prod(weight[1:])          # filter [out, kh, kw, in]
    if name == "DEPTHWISE_CONV_2D" and weight:
        return math.prod(out) * weight[1] * weight[2]          # filter [1, kh, kw, out]
    if name == "FULLY_CONNECTED" and weight:
        return math.prod(out) * weight[-1]                     # weights [units, depth]
    if name == "BATCH_MATMUL":
        return math.prod(out) * [int(d) for d in tensors[inputs[0]]["shape"]][-1]
    if name == "TRANSPOSE_CONV" and len(inputs) > 2:
        source = [int(d) for d in tensors[inputs[2]]["shape"]]
        filt = [int(d) for d in tensors[inputs[1]]["shape"]]   # [out, kh, kw, in]
        return math.prod(source) * filt[0] * filt[1] * filt[2]
    return None
