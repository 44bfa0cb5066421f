"""Report-model artifacts for tests that judge a few fields by hand: what a test does not say is filled in with the
values of a verified, untimed file (compress.report.model.Artifact), so gates, advice and picks read real models.

Example:
    >>> artifact_model(name="int8-onnx", size_bytes=100, latency=[latency_entry(p50_ms=1.0, session="s1")]).precision
    'int8'
"""
from __future__ import annotations

from compress.report.model import Artifact, Latency

NO_METRICS = {"task": None, "degradation": None, "fidelity": None}


def latency_entry(session: str | None = None, **fields) -> dict:
    """A local-CPU batch-1 latency entry with ``fields`` (summarize's figures); ``session``: its timing session."""
    entry = {"target": "local-cpu", "runtime": "onnxruntime", "device": "test", "batch": 1, "threads": None, "runs": 1,
             "warmup": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "emulated": False, **fields}
    if session is not None:
        entry["measured_on"] = {"host": "test", "node": "test", "window": [0.0, 1.0], "wait_s": 0.0, "session": session}
    return Latency.model_validate(entry).model_dump(exclude_unset=True)


def artifact_model(**fields) -> Artifact:
    """An Artifact with ``fields``; the rest: an int8 ONNX file, verified in onnxruntime, no metrics, no latency."""
    return Artifact.model_validate({"name": "int8-onnx", "path": "model.int8.onnx", "format": "onnx", "precision": "int8",
                                    "techniques": [], "size_bytes": 1, "sha256": "0" * 64, "verified_in": ["onnxruntime"],
                                    "metrics": NO_METRICS, "latency": [], "notes": [], **fields})
