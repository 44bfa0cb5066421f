"""ONNX op-type vocabulary that records and options name without loading onnx or onnxruntime.

Example:
    >>> "MatMul" in DYNAMIC_OP_TYPES
    True
"""

DYNAMIC_OP_TYPES = ("Conv", "Gemm", "MatMul")  # weighted ops an int8 (static) run may quantize dynamically instead
