"""The format registry: the catalog's records (compress.catalog) and what they need from compress — the size and
sha256 of an artifact of one or several files, and the note a static-only format adds to a dynamic request.

Example:
    >>> format_of("runs/x/model.int8.tflite").name, runtime_of("m.onnx")
    ('tflite', 'onnxruntime')
    >>> get("onnx").filename("int8")
    'model.int8.onnx'
"""
from __future__ import annotations

from pathlib import Path

from compress.catalog import (FORMATS, SOURCE_FORMATS, ArtifactFormat, Conversion, QuantizeJob, add_quantizer,
                              artifact_files, artifact_sha256, artifact_size, default_formats, estimated_suffixes, find_format, format_loggers,
                              format_of, format_packages, formats, get, one_file, qat_formats, quantizable, reachable,
                              register, remove_quantizer, runtime_by_suffix, runtime_of, schema_choices, unregister)

__all__ = ["FORMATS", "SOURCE_FORMATS", "ArtifactFormat", "Conversion", "QuantizeJob", "add_quantizer",
           "artifact_files", "artifact_sha256", "artifact_size", "default_formats", "estimated_suffixes", "find_format",
           "format_loggers", "format_of", "format_packages", "formats", "get", "note_static_only", "one_file",
           "qat_formats", "quantizable", "reachable", "register", "remove_quantizer", "runtime_by_suffix", "runtime_of",
           "schema_choices", "unregister"]


def note_static_only(job: QuantizeJob, result, hint: str = ""):
    """``result`` with a note when ``job.dynamic_op_types`` (an ONNX-only knob) asked for dynamic ops in an int8 file
    this format writes static throughout; ``hint`` says what to use instead."""
    if job.dynamic_op_types and job.precision == "int8":
        result.notes.append(f"dynamic_op_types ({', '.join(job.dynamic_op_types)}) applies to ONNX only: "
                            f"this file is static int8 throughout{hint}")
    return result
