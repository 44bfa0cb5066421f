"""Quality gates evaluated on the real artifacts: degradation, fidelity, size, latency.

Example:
    >>> gates = evaluate_gates(artifacts, max_degradation=0.005, max_size_bytes=200_000)
    >>> all(g["passed"] for g in gates)
    True
"""
from __future__ import annotations


def _gate(name: str, artifact: dict, limit: float, value: float | None, passed: bool, **extra) -> dict:
    return {"name": name, "artifact": artifact["name"], "limit": limit, "value": value, "passed": bool(passed), **extra}


def is_failed(artifact: dict) -> bool:
    """Whether ``artifact`` failed verification (its file is under failed/; it is never recommended)."""
    return artifact.get("status") == "failed"


def verification_gate(artifact: dict) -> dict:
    """The gate every artifact must pass before any other: it loads and runs in its runtime (failed: value 0)."""
    return _gate("verified", artifact, 1, 0 if is_failed(artifact) else 1, not is_failed(artifact), reason=artifact.get("failure"))


def describe(gate: dict) -> str:
    """One line for a failed gate, e.g. ``int8-onnx failed verification: ...`` or ``gate max_degradation failed ...``."""
    if gate["name"] == "verified":
        return f"{gate['artifact']} failed verification: {gate.get('reason')}"
    return f"gate {gate['name']} failed for {gate['artifact']}: value {gate['value']} vs limit {gate['limit']}"


def degradation_gate(artifact: dict, limit: float) -> dict:
    value = artifact["metrics"]["degradation"]
    return _gate("max_degradation", artifact, limit, value, value is not None and value <= limit + 1e-12)


def evaluate_gates(
    artifacts: list[dict],
    max_degradation: float | None = None,
    min_fidelity: dict[str, float] | None = None,
    max_size_bytes: int | None = None,
    max_latency_ms: dict[str, float] | None = None,
) -> list[dict]:
    """One gate entry per (gate, compressed artifact); fp32 baselines are reference points, not candidates."""
    gates = []
    for artifact in (a for a in artifacts if a["precision"] != "fp32"):
        if max_degradation is not None:
            gates.append(degradation_gate(artifact, max_degradation))
        for measure, limit in (min_fidelity or {}).items():
            value = (artifact["metrics"].get("fidelity") or {}).get(measure)
            gates.append(_gate(f"min_fidelity:{measure}", artifact, limit, value, value is not None and value >= limit))
        if max_size_bytes is not None:
            gates.append(_gate("max_size_bytes", artifact, max_size_bytes, artifact["size_bytes"], artifact["size_bytes"] <= max_size_bytes))
        for target, limit in (max_latency_ms or {}).items():
            entries = [e for e in artifact["latency"] if e["target"].startswith(target) and e["batch"] == 1 and not e.get("skipped")]
            value = entries[0]["p50_ms"] if entries else None
            gates.append(_gate("max_latency_ms", artifact, limit, value, value is not None and value <= limit, target=target, batch=1))
    return gates
