"""Exporters: ONNX (fp32, int8 QDQ, fp16, weight-only), TFLite (fp32, fp16, int8) and ExecuTorch ``.pte`` (fp32, int8,
int8-dynamic; the ``executorch`` extra), plus pre-flight checks.

Example:
    >>> from compress.export.onnx import export_onnx
    >>> export_onnx(handle, "model.onnx")
"""
