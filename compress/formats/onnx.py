"""The ONNX format: exported with the dynamo exporter, quantized with onnxruntime.quantization, run in onnxruntime.

Example:
    >>> from compress.formats import get
    >>> get("onnx").runtime, get("onnx").filename("fp16")
    ('onnxruntime', 'model.fp16.onnx')
"""
from __future__ import annotations

import shutil
from pathlib import Path

from compress.formats.precisions import quantized
from compress.formats.registry import ArtifactFormat, QuantizeJob

DYNAMIC_OP_TYPES = ("Conv", "Gemm", "MatMul")  # weighted ops an int8 (static) run may quantize dynamically instead


def export_fp32(handle, out: Path) -> None:
    """The fp32 ONNX file: the source itself for an ONNX source, else exported from the torch module."""
    if handle.module is None:
        shutil.copyfile(handle.onnx_path, out)
        return
    from compress.export.onnx import export_onnx

    export_onnx(handle, out)


def quantize(job: QuantizeJob):
    from compress.export.onnx_quantize import quantize_onnx

    return quantize_onnx(job.fp32, job.out, job.precision, job.calib_data, calibration=job.calibration,
                         per_channel=job.per_channel, exclude=job.exclude, seed=job.seed,
                         dynamic_op_types=job.dynamic_op_types if job.precision == "int8" else ())


def preflight(job: QuantizeJob) -> list:
    from compress.export.onnx_preflight import onnx_preflight

    return onnx_preflight(job.fp32, job.precision)


def float_ops(path: Path, handle, precision: str) -> list[dict]:
    """Weighted ops whose weights are still float32 initializers in the file."""
    import onnx

    from compress.export.onnx_quantize import WEIGHTED_OPS

    model = onnx.load(str(path))
    initializers = {i.name: i.data_type for i in model.graph.initializer}
    return [{"op": node.op_type, "node": node.name, "layer": None, "reason": "PT2E did not annotate this op: its weights stay float"}
            for node in model.graph.node
            if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and initializers.get(node.input[1]) == onnx.TensorProto.FLOAT]


FORMAT = ArtifactFormat("onnx", (".onnx",), ("onnxruntime",), precisions=quantized(), export_fp32=export_fp32,
                        quantize=quantize, preflight=preflight, float_ops=float_ops, quantizes_fp32_file=True, default=True)
