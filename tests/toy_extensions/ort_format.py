"""A toy format: onnxruntime's ORT format (``.ort``), converted from the run's ONNX file by onnxruntime's own
converter (``onnxruntime.tools.convert_onnx_models_to_ort``, fixed optimizations) and run by onnxruntime.

Every ONNX precision is an ORT precision: the ONNX file is made by the ONNX format's exporter and quantizer (in a
temporary folder when the run writes no ONNX file of that precision), then converted. Registered with one call,
``register(ort_format())``.

Example:
    >>> ort_format().filename("int8"), ort_format().runtime
    ('model.int8.ort', 'onnxruntime')
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from compress.backends import ArtifactFormat, QuantizeJob, get

CONVERTED = "convert:ort-format (onnxruntime.tools.convert_onnx_models_to_ort, fixed optimizations)"


def convert(onnx_file: Path, out: Path) -> None:
    """``onnx_file`` as an ORT format file at ``out`` (the converter's progress lines are kept off stdout)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="compress-ort-") as work:
        source = Path(work) / "model.onnx"
        shutil.copyfile(onnx_file, source)
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(source, output_dir=Path(work) / "out", optimization_styles=[OptimizationStyle.Fixed])
        shutil.copyfile(Path(work) / "out" / "model.ort", out)


def _onnx_of(out: Path, precision: str) -> Path:
    """The run's ONNX file of ``precision`` beside ``out`` (verified or staged), when it writes one."""
    name = get("onnx").filename(precision)
    return next((p for p in (out.parent / name, out.parent.parent / name) if p.is_file()), out.parent / name)


def export_fp32(handle, out: Path) -> None:
    """The run's fp32 ONNX file converted; exported to a temporary folder first when the run has none."""
    onnx_fp32 = _onnx_of(out, "fp32")
    if onnx_fp32.is_file():
        return convert(onnx_fp32, out)
    with tempfile.TemporaryDirectory(prefix="compress-ort-") as work:
        get("onnx").export_fp32(handle, Path(work) / onnx_fp32.name)
        convert(Path(work) / onnx_fp32.name, out)


def quantize(job: QuantizeJob):
    """The ONNX format's quantizer on an fp32 ONNX file, its output converted; the result names the ``.ort`` file."""
    onnx = get("onnx")
    with tempfile.TemporaryDirectory(prefix="compress-ort-") as work:
        fp32 = _onnx_of(job.out, "fp32")
        if not fp32.is_file():
            fp32 = Path(work) / fp32.name
            onnx.export_fp32(job.handle, fp32)
        quantized = Path(work) / onnx.filename(job.precision)
        result = onnx.quantize(replace(job, out=quantized, fp32=fp32))
        convert(Path(result.path), job.out)
    result.path = job.out
    result.techniques = [*result.techniques, CONVERTED]
    return result


def ort_format() -> ArtifactFormat:
    """The record, with a quantizer for every precision the ONNX format has now (a toy precision registered first
    for ONNX is an ORT precision too)."""
    return ArtifactFormat("ort", (".ort",), ("onnxruntime",), quantizers=dict.fromkeys(get("onnx").precisions, quantize),
                          export_fp32=export_fp32, calibrates_with="onnxruntime")
