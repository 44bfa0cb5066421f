"""Backends: one package per artifact format, each registering its record (compress.catalog) from its adapter.

- onnx/, tflite/, pte/, pytorch/: ``adapter`` (the record: suffixes, runtimes, exporter, quantizer per precision,
  pre-flight), ``export``, ``preflight``, ``quantize`` or ``choose``, and ``session`` (the file run in its runtime).
- pt2e: what the PT2E exports (TFLite, ``.pte``) share; reuse: one conversion per model and inputs; faithful: compare
  candidate files with fp32; findings: a pre-flight finding.
- registry: the catalog's format records plus artifact sizes and digests; calibration: the built-in calibration
  methods, one implementation per calibration backend.

Adding a format is one package with an adapter that builds an ``ArtifactFormat`` plus one ``register`` call (README:
"Extending compress"). The built-in formats are registered here: onnx, tflite (produced by `compress quantize` by
default), pte (ExecuTorch, with --format pte), pt2 and torchscript (verified and timed).

Example:
    >>> from compress.backends import format_of, get, quantizable
    >>> quantizable(), format_of("model.int8.tflite").runtime
    (('onnx', 'tflite'), 'litert')
"""
from compress import catalog
from compress.errors import UsageError
from compress.backends.onnx import adapter as _onnx
from compress.backends.pte import adapter as _pte
from compress.backends.pytorch import adapter as _pytorch
from compress.backends.tflite import adapter as _tflite
from compress.backends.calibration import (CALIBRATIONS, CalibrationMethod, OrtCalibrater, Pt2eObserver,
                                          register_calibration, unregister_calibration)
from compress.backends.extensions import extensions, install, remember_built_ins
from compress.catalog import PRECISIONS, Precision, register_precision, unregister_precision
from compress.backends.registry import (ArtifactFormat, Conversion, QuantizeJob, add_quantizer, artifact_files, artifact_sha256,
                                       artifact_size, default_formats, estimated_suffixes, find_format, format_loggers, format_of,
                                       format_packages, formats, get,
                                       qat_formats, quantizable,
                                       register, runtime_by_suffix, runtime_of, schema_choices, unregister)

catalog.usage_error = UsageError  # a record's refusal (a precision its format does not make) is a usage error, exit 2
for _format in (_onnx.FORMAT, _tflite.FORMAT, _pte.FORMAT, _pytorch.PT2, _pytorch.TORCHSCRIPT):
    register(_format)
remember_built_ins()

__all__ = ["ArtifactFormat", "CALIBRATIONS", "CalibrationMethod", "Conversion", "OrtCalibrater", "PRECISIONS", "Precision",
           "Pt2eObserver", "QuantizeJob", "add_quantizer", "artifact_files", "artifact_sha256", "artifact_size",
           "default_formats", "estimated_suffixes", "extensions", "find_format", "format_loggers", "format_of", "format_packages", "formats", "get", "install", "qat_formats", "quantizable", "register", "register_calibration", "register_precision", "runtime_by_suffix",
           "runtime_of", "schema_choices", "unregister", "unregister_calibration", "unregister_precision"]
