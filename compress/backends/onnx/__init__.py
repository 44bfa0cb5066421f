"""ONNX: exported with the dynamo exporter, quantized with onnxruntime.quantization, run in ONNX Runtime.

- adapter: the format's record (suffixes, runtimes, exporter, quantizer per precision), registered in compress.backends.
- export: torch -> one ONNX file; fusions: transformer graph fusions; choose: the fastest equivalent file.
- preflight: what a precision leaves in float, before calibrating; quantize: onnxruntime.quantization.
- cpu_features: the int8 instructions of this CPU; session: the file run in ONNX Runtime.
"""
