"""Pre-flight for the ONNX path: before calibrating, say which ops the chosen precision leaves in float or cannot run.

A precision without an entry in ``COVERED_OPS`` (one a plugin registered) is checked for runnability only, with
an info finding saying what was not checked.

Example:
    >>> [f.message for f in onnx_preflight("model.fp32.onnx", "int8")]
    ['LSTM (lstm) stays float under static int8: quantized dynamically instead (DynamicQuantizeLSTM, int8 weights)']
"""
from __future__ import annotations

from pathlib import Path

import onnx

from compress.errors import CompressError
from compress.backends.findings import Finding
from compress.backends.onnx.export import node_layer
from compress.backends.onnx.quantize import COVERED_OPS, WEIGHTED_OPS, check_precision
from compress.catalog import PRECISIONS


def onnx_preflight(fp32_path: str | Path, precision: str) -> list[Finding]:
    """Findings for quantizing ``fp32_path`` to ``precision`` with onnxruntime (errors mean: do not start)."""
    check_precision(precision)
    model = onnx.load(str(fp32_path))
    findings = _runnable(Path(fp32_path))
    if findings:
        return findings
    initializers = {i.name for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and _has_weight(n, initializers)]
    if precision not in COVERED_OPS:
        findings.append(Finding("onnx", "*", None, None, "info",
                                f"pre-flight has no table of the ops {precision} covers: which of the {len(weighted)} "
                                "weighted ops stay float was not checked", "read float_ops in report.json after the run"))
    for node in weighted if precision in COVERED_OPS else []:
        finding = _op_finding(node, precision, node_layer(node, initializers))
        if finding:
            findings.append(finding)
    if PRECISIONS[precision].weight_only and not any(n.op_type in ("MatMul", "Gemm") for n in weighted):
        findings.append(Finding("onnx", "MatMul", None, None, "error",
                                f"{precision} quantizes MatMul/Gemm weights only and this model has none: nothing would change",
                                "use --precision int8 (covers Conv too) or fp16"))
    if precision == "fp16":
        findings.append(Finding("onnx", "*", None, None, "info",
                                "onnxruntime's CPU kernels compute most fp16 ops in fp32 behind inserted Casts",
                                "fp16 halves the file; for CPU speed prefer int8"))
    fixed = _fixed_batch(model)
    if fixed:
        findings.append(Finding("onnx", "*", None, None, "info", f"the batch axis is fixed at {fixed}: inputs are fed in chunks of {fixed}",
                                "re-export with a dynamic batch axis for batched inference"))
    return findings


def _has_weight(node: onnx.NodeProto, initializers: set[str]) -> bool:
    if node.op_type == "Gather":
        return node.input[0] in initializers  # an embedding table, not indexing into an activation
    return any(name in initializers for name in node.input[1:])


def _op_finding(node: onnx.NodeProto, precision: str, layer: str | None) -> Finding | None:
    op, where = node.op_type, f" ({layer})" if layer else ""
    if op in COVERED_OPS[precision]:
        if precision == "int8" and op == "LSTM":
            return Finding("onnx", op, node.name, layer, "info",
                           f"LSTM{where} stays float under static int8: quantized dynamically instead (DynamicQuantizeLSTM, int8 weights)",
                           "nothing to do; --precision int8-dynamic quantizes every layer this way")
        return None
    if op in ("GRU", "RNN"):
        return Finding("onnx", op, node.name, layer, "warning",
                       f"{op}{where} stays float: onnxruntime has no int8 kernel for {op}",
                       "expect no size gain for this layer; --precision fp16 halves it")
    if PRECISIONS[precision].weight_only:
        return Finding("onnx", op, node.name, layer, "warning",
                       f"{op}{where} stays float under {precision} (MatMul/Gemm weights only)",
                       "use --precision int8 to quantize it too")
    return Finding("onnx", op, node.name, layer, "warning", f"{op}{where} stays float under {precision}",
                   "use --precision int8" if precision != "int8" else "use --precision int8-dynamic or fp16")


def _runnable(path: Path) -> list[Finding]:
    """An error finding when onnxruntime cannot load the fp32 file at all (e.g. an op without a CPU kernel)."""
    from compress.backends.onnx.session import MissingKernel, OrtRunner

    try:
        OrtRunner(path, threads=1)
    except MissingKernel as exc:
        return [Finding("onnx", exc.op, exc.node, None, "error", str(exc), "replace that op in the model or use --format tflite")]
    except CompressError as exc:
        return [Finding("onnx", "*", None, None, "error", str(exc), "re-export the model")]
    return []


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    """The first input's batch when the file fixes it: no input has a symbolic dim (a state ``(2, batch, H)`` does)."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v.type.tensor_type.shape.dim for v in model.graph.input if v.name not in initializers]
    if not inputs or any(d.dim_param for dims in inputs for d in dims):
        return None
    return inputs[0][0].dim_value if inputs[0] and inputs[0][0].dim_value > 0 else None
