"""Which latency entry speaks for an artifact: batch 1, timed (a p50), on a real device (not emulated).

Example:
    >>> device_timing({"latency": [{"batch": 1, "p50_ms": 0.4, "emulated": False}]})["p50_ms"]
    0.4
    >>> device_p50({"latency": [{"batch": 1, "p50_ms": 9.0, "emulated": True}]}) is None    # qemu: not a device latency
    True
"""
from __future__ import annotations


def is_device_timing(entry: dict) -> bool:
    """A batch-1 latency entry with a p50, measured on a device (qemu's emulated timings never count)."""
    return entry.get("batch", 1) == 1 and entry.get("p50_ms") is not None and not entry.get("emulated")


def device_timing(artifact: dict) -> dict | None:
    """The artifact's first :func:`is_device_timing` entry, or None."""
    return next((entry for entry in artifact.get("latency", []) if is_device_timing(entry)), None)


def device_p50(artifact: dict) -> float | None:
    entry = device_timing(artifact)
    return entry["p50_ms"] if entry else None
