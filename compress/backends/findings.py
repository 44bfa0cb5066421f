"""A pre-flight finding: what a precision does to one op, and what to do about it.

Example:
    >>> Finding("onnx", "GRU", "gru_0", "gru", "warning", "GRU (gru) stays float", "--precision fp16 halves it").severity
    'warning'
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """One pre-flight fact about an op: what happens to it, and what to do."""

    format: str            # "onnx" | "tflite"
    op: str
    node: str | None
    layer: str | None
    severity: str          # "info" | "warning" | "error"
    message: str
    suggestion: str
