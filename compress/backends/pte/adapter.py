"""The ExecuTorch format: a ``.pte`` program lowered to the XNNPACK delegate, run in ExecuTorch's runtime.

Optional: needs ``pip install 'compress[executorch]'``; without it every ``.pte`` step fails with one line naming the
extra. Precisions: fp32, static int8 and dynamic int8 (XNNPACK lowers nothing else; compress.backends.pte.export says why).

Example:
    >>> from compress.backends import get
    >>> get("pte").runtime, get("pte").filename("int8")
    ('executorch', 'model.int8.pte')
"""
from __future__ import annotations

from pathlib import Path

from compress.catalog import Technique
from compress.backends.registry import ArtifactFormat, Conversion, QuantizeJob, note_static_only

PRECISIONS = ("int8", "int8-dynamic")  # beside fp32 (export_fp32); = compress.backends.pte.export.PRECISIONS


def export_fp32(handle, out: Path) -> None:
    from compress.backends.pte.export import export_pte

    export_pte(QuantizeJob(handle, "fp32", out))


def quantize(job: QuantizeJob):
    from compress.backends.pte.export import export_pte

    result = export_pte(job)
    return note_static_only(job, result, " (use --precision int8-dynamic for dynamic linears)")


def preflight(job: QuantizeJob) -> list:
    from compress.backends.pte.preflight import pte_preflight

    return pte_preflight(job)


def unreachable(handle) -> str | None:
    if handle.module is None:
        return f"{handle.source_path} is an ONNX model: a .pte needs the torch model (use --format onnx)"
    if handle.source_format == "torchscript":
        return ("pte needs a torch.export-able model; TorchScript cannot be lowered: save a .pt2 with "
                "torch.export.save, or use --format onnx")
    return None


def write_qat(converted, path: Path, float_handle=None) -> list[dict]:
    """An XNNPACK int8 ``.pte`` from a converted QAT graph; it keeps no layer names, so the ops left in float come
    from the lowering."""
    from compress.passes.qat import export_int8_pte

    return export_int8_pte(converted, path).float_ops("int8", [])


def conversion_key(*args) -> tuple:
    from compress.backends.pte.export import conversion_key

    return conversion_key(*args)


def build(*args):
    from compress.backends.pte.export import build_pte

    return build_pte(*args)


def export_decoder(module, out: Path, precision: str, *, max_context: int, block_size: int, layers=None, grids=None,
                   progress=None):
    """A decoder language model as a ``.pte`` with a static KV cache, XNNPACK (compress.lm.pte_kv); GGUF grids are
    not read (8da4w's symmetric grid cannot hold an asymmetric source)."""
    from compress.lm.pte_kv import export_pte_lm

    return export_pte_lm(module, out, precision, max_context=max_context, block_size=block_size, layers=layers,
                         progress=progress or (lambda message: None))


FORMAT = ArtifactFormat("pte", (".pte",), ("executorch",), quantizers=dict.fromkeys(PRECISIONS, quantize),
                        export_fp32=export_fp32, preflight=preflight, calibrates_with="pt2e", unreachable=unreachable,
                        write_qat=write_qat, qat_technique=Technique("export", args=("executorch", "xnnpack")),
                        converted_ahead=Conversion(conversion_key, build), device_tool="executor_runner",
                        export_decoder=export_decoder, decoder_precisions=("fp32", "8da4w"),
                        packages=("executorch",))
