"""A toy precision for ONNX only: "int4-weight-sym", 4-bit symmetric weights in blocks of 64, made by ONNX's own
weight-only quantizer (MatMulNBits) with the record's options instead of int4-weight's (block 32, asymmetric).
``tunable``: `compress tune` may search it (a weight-only precision: its trials draw no calibration knobs).

Registered with one call, ``register_precision(INT4_WEIGHT_SYM, quantizers())``.

Example:
    >>> INT4_WEIGHT_SYM.block_size, INT4_WEIGHT_SYM.symmetric
    (64, True)
"""
from __future__ import annotations

from compress.backends import Precision, get

INT4_WEIGHT_SYM = Precision("int4-weight-sym", "4-bit symmetric weights in blocks of 64", 4, "float", block_size=64,
                            symmetric=True, tunable=True)


def quantizers() -> dict:
    """``{format: quantize}``: ONNX's int4-weight quantizer, which reads bits, block and symmetry from the record."""
    return {"onnx": get("onnx").quantizers["int4-weight"]}
