"""Which latency entry speaks for an artifact: batch 1, timed (a p50), on a real device (not emulated).

``device_timing``/``device_p50`` read an artifact of the report model (compress.report.model.Artifact);
``document_timing``/``document_p50`` read one as report.json holds it (the renderers read the JSON document).

Example:
    >>> document_timing({"latency": [{"batch": 1, "p50_ms": 0.4, "emulated": False}]})["p50_ms"]
    0.4
    >>> document_p50({"latency": [{"batch": 1, "p50_ms": 9.0, "emulated": True}]}) is None    # qemu: not a device latency
    True
    >>> device_p50(artifact)      # an Artifact
    0.4
"""
from __future__ import annotations


def is_device_timing(entry: dict) -> bool:
    """A batch-1 latency entry (as report.json holds it) with a p50, measured on a device (qemu's emulated timings never count)."""
    return entry.get("batch", 1) == 1 and entry.get("p50_ms") is not None and not entry.get("emulated")


def device_timing(artifact):
    """The first latency of ``artifact`` (compress.report.model.Artifact) that :func:`is_device_timing`, or None."""
    return next((entry for entry in artifact.latency if entry.batch == 1 and entry.p50_ms is not None and not entry.emulated), None)


def device_p50(artifact) -> float | None:
    entry = device_timing(artifact)
    return entry.p50_ms if entry else None


def document_timing(artifact: dict) -> dict | None:
    """:func:`device_timing` of an artifact as report.json holds it."""
    return next((entry for entry in artifact.get("latency", []) if is_device_timing(entry)), None)


def document_p50(artifact: dict) -> float | None:
    entry = document_timing(artifact)
    return entry["p50_ms"] if entry else None
