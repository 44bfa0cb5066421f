"""The TFLite format: converted with litert-torch (PT2E / ai-edge-quantizer for the precisions), run in LiteRT.

Example:
    >>> from compress.backends import get
    >>> get("tflite").runtime, get("tflite").filename("int8")
    ('litert', 'model.int8.tflite')
"""
from __future__ import annotations

from pathlib import Path

from compress.catalog import Technique
from compress.backends.registry import ArtifactFormat, Conversion, QuantizeJob, note_static_only

PRECISIONS = ("int8", "int8-dynamic", "fp16", "int8-weight", "int4-weight")  # beside fp32 (export_fp32), one quantizer each
NEEDS_EXPORT = ("tflite needs a torch.export-able model; TorchScript cannot be converted: save a .pt2 with "
                "torch.export.save, or use --format onnx")


def export_fp32(handle, out: Path) -> None:
    from compress.backends.tflite.export import export_tflite

    export_tflite(QuantizeJob(handle, "fp32", out))


def quantize(job: QuantizeJob):
    from compress.backends.tflite.export import export_tflite

    result = export_tflite(job)
    return note_static_only(job, result)


def preflight(job: QuantizeJob) -> list:
    if job.handle.module is None:
        return []
    from compress.backends.tflite.preflight import tflite_preflight

    return tflite_preflight(job)


def float_ops(path: Path, handle, precision: str) -> list[dict]:
    from compress.backends.tflite.export import TfliteGraph

    return TfliteGraph(Path(path).read_bytes(), handle.module if handle is not None else None).float_ops(precision, [])


def unreachable(handle) -> str | None:
    if handle.module is None:
        return f"{handle.source_path} is an ONNX model: it can only be quantized to ONNX (use --format onnx)"
    if handle.source_format == "torchscript":
        return NEEDS_EXPORT
    return None


def write_qat(converted, path: Path, float_handle=None) -> list[dict]:
    """A full-integer TFLite file from a converted QAT graph; the weighted ops it left in float."""
    from compress.passes.qat import export_int8_tflite

    export_int8_tflite(converted, path)
    return float_ops(path, float_handle or converted, "int8")


def conversion_key(*args) -> tuple:
    from compress.backends.tflite.export import conversion_key

    return conversion_key(*args)


def build(*args):
    from compress.backends.tflite.export import build_tflite

    return build_tflite(*args)


def estimate_costs(path: Path, batch: int) -> dict:
    from compress.backends.tflite.costs import tflite_costs

    return tflite_costs(path, batch)


def export_decoder(module, out: Path, precision: str, *, max_context: int, block_size: int, layers=None, grids=None,
                   progress=None):
    """A decoder language model as a ``.tflite`` with prefill and decode signatures over an external KV cache
    (compress.lm.tflite_kv: litert-torch's generative path; per-layer plans and block sizes are its own)."""
    from compress.lm.tflite_kv import export_tflite_lm

    return export_tflite_lm(module, out, precision, max_context=max_context)


FORMAT = ArtifactFormat("tflite", (".tflite",), ("litert",), quantizers=dict.fromkeys(PRECISIONS, quantize),
                        export_fp32=export_fp32, preflight=preflight, float_ops=float_ops, calibrates_with="pt2e",
                        unreachable=unreachable, default=True, write_qat=write_qat, qat_technique=Technique("export", precision="int8", scheme="static", written="int8-static-qdq"),
                        converted_ahead=Conversion(conversion_key, build), device_tool="benchmark_model",
                        estimate_costs=estimate_costs,
                        export_decoder=export_decoder, decoder_precisions=("fp32", "int8-weight", "8da4w"),
                        no_cuda="LiteRT has no CUDA path in Python: skipped (time a .tflite on local, ssh://, adb or qemu-arm64)",
                        packages=("litert-torch", "litert-converter", "ai-edge-litert", "ai-edge-quantizer"),
                        loggers=("absl", "tensorflow", "litert_torch", "ai_edge_torch"))
