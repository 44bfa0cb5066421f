"""Exporters: ONNX (fp32, int8 QDQ, fp16, weight-only) and TFLite (fp32, fp16, int8), plus pre-flight checks.

Example:
    >>> from compress.export.onnx import export_onnx
    >>> export_onnx(handle, "model.onnx")
"""
