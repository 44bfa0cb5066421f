"""The ONNX format: exported with the dynamo exporter, quantized with onnxruntime.quantization, run in onnxruntime.

Example:
    >>> from compress.backends import get
    >>> get("onnx").runtime, get("onnx").filename("fp16")
    ('onnxruntime', 'model.fp16.onnx')
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from compress.backends.onnx.ops import DYNAMIC_OP_TYPES
from compress.catalog import Technique
from compress.backends.registry import ArtifactFormat, QuantizeJob

PRECISIONS = ("int8", "int8-dynamic", "fp16", "int8-weight", "int4-weight")  # beside fp32 (export_fp32), one quantizer each


def export_fp32(handle, out: Path) -> None:
    """The fp32 ONNX file: the source itself for an ONNX source, else exported from the torch module (with its
    transformer fusions where they are faster here, see compress.backends.onnx.choose)."""
    if handle.module is None:
        shutil.copyfile(handle.onnx_path, out)
        return
    from compress.backends.onnx.export import add_export_note, export_onnx
    from compress.backends.onnx.choose import fuse_fp32_if_faster

    export_onnx(handle, out)
    note = fuse_fp32_if_faster(out, tuple(t.numpy() for t in handle.input_spec.example_inputs(batch=1, seed=0)))
    if note:
        add_export_note(out, note)


def quantize(job: QuantizeJob):
    """``job`` with onnxruntime.quantization; a plain int8 request (no dynamic ops, no layers kept float) on a
    transformer or LSTM graph gets the fastest faithful variant measured here (compress.backends.onnx.choose)."""
    import onnx

    from compress.backends.onnx.choose import quantize_fastest_int8, worth_choosing
    from compress.backends.onnx.quantize import quantize_onnx, random_calibration

    def run(source: Path, out: Path, dynamic_op_types) -> object:
        return quantize_onnx(replace(job, fp32=source, out=out, dynamic_op_types=list(dynamic_op_types)))

    if job.precision != "int8":
        return run(job.fp32, job.out, ())
    if job.dynamic_op_types or job.exclude or not worth_choosing(onnx.load(str(job.fp32), load_external_data=False)):
        return run(job.fp32, job.out, job.dynamic_op_types)  # a configuration spelled out (or a repair step) is kept
    inputs = job.calib_data if job.calib_data is not None else random_calibration(job.fp32, job.seed)
    return quantize_fastest_int8(job.fp32, job.out, run, inputs, job.output_kinds)


def preflight(job: QuantizeJob) -> list:
    from compress.backends.onnx.preflight import onnx_preflight

    return onnx_preflight(job.fp32, job.precision)


def float_ops(path: Path, handle, precision: str) -> list[dict]:
    """Weighted ops whose weights are still float32 initializers in the file."""
    import onnx

    from compress.backends.onnx.quantize import WEIGHTED_OPS

    model = onnx.load(str(path))
    initializers = {i.name: i.data_type for i in model.graph.initializer}
    return [{"op": node.op_type, "node": node.name, "layer": None, "reason": "PT2E did not annotate this op: its weights stay float"}
            for node in model.graph.node
            if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and initializers.get(node.input[1]) == onnx.TensorProto.FLOAT]


def write_qat(converted, path: Path, float_handle=None) -> list[dict]:
    """A QDQ ONNX file from a converted QAT graph; the weighted ops it left in float."""
    from compress.passes.qat import export_int8_onnx

    export_int8_onnx(converted, path)
    return float_ops(path, float_handle or converted, "int8")


def estimate_costs(path: Path, batch: int) -> dict:
    from compress.backends.onnx.costs import onnx_costs

    return onnx_costs(path, batch)


def export_decoder(module, out: Path, precision: str, *, max_context: int, block_size: int, layers=None, grids=None,
                   progress=None):
    """A decoder language model as ONNX with past/present key-values and MatMulNBits (compress.lm.onnx_kv)."""
    import dataclasses

    from compress.lm.onnx_kv import export_onnx_lm

    if layers is not None:  # MatMulNBits stores every 8-bit layer in blocks too (int8 per channel = one block size)
        layers = [c if c.precision == "fp32" or c.block_size else dataclasses.replace(c, block_size=block_size)
                  for c in layers]
    return export_onnx_lm(module, out, precision, max_context=max_context, block_size=block_size, layers=layers,
                          grids=grids)


FORMAT = ArtifactFormat("onnx", (".onnx",), ("onnxruntime",), quantizers=dict.fromkeys(PRECISIONS, quantize), export_fp32=export_fp32,
                        preflight=preflight, float_ops=float_ops, calibrates_with="onnxruntime", quantizes_fp32_file=True,
                        default=True, write_qat=write_qat, qat_technique=Technique("export", precision="int8", scheme="static", written="int8-qdq"), estimate_costs=estimate_costs,
                        export_decoder=export_decoder, decoder_precisions=("fp32", "int8-weight", "int4-weight", "8da4w"),
                        packages=("onnx", "onnxscript", "onnx-ir", "onnxruntime"), loggers=("onnxscript", "onnxruntime"))
