"""An analytic latency estimate for a device you cannot reach: MACs and bytes per inference, and a roofline.

Counted from the file itself (ONNX graph with inferred shapes, or the TFLite interpreter's ops): multiply-accumulates
of Conv / depthwise Conv / MatMul / Gemm / FullyConnected / BatchMatMul / LSTM / GRU / RNN, split into int8 and
float work, plus the bytes of every weight and every intermediate tensor. The estimate is
``max(compute time, memory time)`` on one core of a named ARM CPU, whose nominal peaks (NEON width x issue rate x a
typical clock; single-core sustained DRAM bandwidth of a board or phone with that core) are assumptions, not
measurements: override them with ``peak_gops`` / ``bandwidth_gbs``. Results are labelled ``estimate``, never latency.

Example:
    >>> result = estimate_artifact("model.int8.tflite", core="cortex-a53")
    >>> result["label"], result["bound"], result["macs"]
    ('estimate', 'compute', 762112)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import UsageError


@dataclass(frozen=True)
class Core:
    """One core's nominal peaks: MACs per cycle for fp32 and int8 NEON code, clock, and DRAM bandwidth."""

    name: str
    ghz: float
    fp32_macs_per_cycle: float
    int8_macs_per_cycle: float
    bandwidth_gbs: float
    note: str

    def peak_gops(self, int8: bool) -> float:
        """Giga-operations per second (1 MAC = 2 operations)."""
        return 2 * self.ghz * (self.int8_macs_per_cycle if int8 else self.fp32_macs_per_cycle)


CORES = {
    "cortex-a53": Core("Arm Cortex-A53", 1.8, 2, 8, 3.0, "in-order, 64-bit NEON datapath, no dot product (Raspberry Pi 3, low-end phones)"),
    "cortex-a55": Core("Arm Cortex-A55", 2.0, 4, 16, 6.0, "in-order, SDOT (little cores of recent phones)"),
    "cortex-a72": Core("Arm Cortex-A72", 1.8, 4, 8, 4.0, "out-of-order, no dot product (Raspberry Pi 4)"),
    "cortex-a76": Core("Arm Cortex-A76", 2.4, 8, 32, 10.0, "2 x 128-bit FMA/SDOT pipes (Raspberry Pi 5, 2019+ phone big cores)"),
    "cortex-a78": Core("Arm Cortex-A78", 2.8, 8, 32, 15.0, "2 x 128-bit FMA/SDOT pipes (2021+ phone big cores)"),
    "cortex-x1": Core("Arm Cortex-X1", 3.0, 16, 64, 20.0, "4 x 128-bit FMA/SDOT pipes (flagship prime cores)"),
}
DEFAULT_CORE = "cortex-a76"


def estimate_artifact(path: str | Path, core: str | None = None, batch: int = 1, peak_gops: float | None = None,
                      bandwidth_gbs: float | None = None) -> dict:
    """MACs, bytes moved and a roofline time for one inference of ``path`` on one core of ``core``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"artifact {path} not found; check the path")
    core = core or DEFAULT_CORE
    if core not in CORES:
        raise UsageError(f"unknown core {core!r} for the estimate; choose {', '.join(CORES)} (or give --peak-gops and --bandwidth-gbs)")
    if batch < 1 or (peak_gops is not None and peak_gops <= 0) or (bandwidth_gbs is not None and bandwidth_gbs <= 0):
        raise UsageError("--batch, --peak-gops and --bandwidth-gbs must be positive")
    from compress.backends import estimated_suffixes, find_format

    fmt = find_format(path)
    if fmt is None or fmt.estimate_costs is None:
        raise UsageError(f"{path.name}: the estimate reads {' and '.join(estimated_suffixes())} files")
    costs = fmt.estimate_costs(path, batch)
    spec = CORES[core]
    int8_peak = peak_gops or spec.peak_gops(int8=True)
    fp32_peak = peak_gops or spec.peak_gops(int8=False)
    bandwidth = bandwidth_gbs or spec.bandwidth_gbs
    compute_ms = (2 * costs["int8_macs"] / (int8_peak * 1e9) + 2 * costs["float_macs"] / (fp32_peak * 1e9)) * 1e3
    memory_ms = costs["bytes_moved"] / (bandwidth * 1e9) * 1e3
    estimate = max(compute_ms, memory_ms)
    assumptions = [
        f"{spec.name}: {spec.note}; nominal {spec.ghz} GHz, {spec.fp32_macs_per_cycle:g} fp32 / {spec.int8_macs_per_cycle:g} int8 MACs "
        f"per cycle, {spec.bandwidth_gbs:g} GB/s" + (" (overridden)" if peak_gops or bandwidth_gbs else ""),
        "one core at its peak, every weight and intermediate tensor through DRAM once; real kernels reach a fraction of "
        "peak and small models live in cache, so treat this as an order of magnitude, not a latency",
    ]
    if costs["uncounted_ops"]:
        assumptions.append(f"not counted (no MAC formula): {', '.join(sorted(costs['uncounted_ops']))}")
    return {
        "label": "estimate", "target": f"estimate:{core}", "core": core, "batch": batch,
        "macs": int(costs["int8_macs"] + costs["float_macs"]), "int8_macs": int(costs["int8_macs"]), "float_macs": int(costs["float_macs"]),
        "weight_bytes": int(costs["weight_bytes"]), "bytes_moved": int(costs["bytes_moved"]),
        "peak_gops": {"int8": round(int8_peak, 2), "fp32": round(fp32_peak, 2)}, "bandwidth_gbs": bandwidth,
        "compute_ms": round(compute_ms, 6), "memory_ms": round(memory_ms, 6), "estimate_ms": round(estimate, 6),
        "bound": "compute" if compute_ms >= memory_ms else "memory", "assumptions": assumptions,
    }


def _costs() -> dict:
    return {"int8_macs": 0, "float_macs": 0, "weight_bytes": 0, "bytes_moved": 0, "uncounted_ops": set()}


# --- ONNX -----------------------------------------------------------------------------------------------------------


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
    costs = _costs()
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


# --- TFLite ---------------------------------------------------------------------------------------------------------


def tflite_costs(path: Path, batch: int) -> dict:
    from compress.backends.tflite.session import open_session

    interpreter = open_session(path, None).interpreter
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    first = interpreter.get_input_details()[0]["shape"] if graph_inputs else [1]
    scale = batch / first[0] if len(first) and first[0] > 0 else 1.0  # litert-torch files have a fixed batch of 1
    costs = _costs()
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
