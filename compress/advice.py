"""Speed honesty and recommendations, from measured numbers only.

Example:
    >>> explain_speed(artifacts)          # adds speedup_vs_fp32 and a plain note when int8 is not faster
    >>> recommend(artifacts, 0.005)["local-cpu"]["artifact"]
    'int8-onnx'
"""
from __future__ import annotations

DEFAULT_DEGRADATION_LIMIT = 0.005   # 0.5 pt: what "recommended" tolerates when no gate is set
NEAR_FASTEST = 1.10                 # within 10 % of the fastest counts as equally fast
TINY_MODEL_MS = 0.2                 # below this, per-op overhead dominates


def _p50(artifact: dict) -> float | None:
    local = [entry for entry in artifact.get("latency", []) if not entry.get("emulated") and entry.get("batch", 1) == 1
             and entry.get("p50_ms") is not None]
    return local[0]["p50_ms"] if local else None


def _reasons(artifact: dict, fp32_ms: float) -> list[str]:
    from compress.export.cpu_features import cpu_int8_features, int8_speed_explanation

    reasons = []
    if artifact.get("float_ops"):
        ops = sorted({op["op"] for op in artifact["float_ops"]})
        reasons.append(f"{len(artifact['float_ops'])} op(s) stay in float ({', '.join(ops)}), with conversions around them")
    if fp32_ms < TINY_MODEL_MS:
        reasons.append(f"the model is tiny (fp32 runs in {fp32_ms:.3f} ms): quantize/dequantize overhead outweighs the arithmetic saved")
    if artifact["precision"] in ("int8", "mixed", "int8-dynamic"):
        reasons.append(int8_speed_explanation(cpu_int8_features()))
    if artifact["precision"] in ("int8-dynamic", "mixed"):
        reasons.append("dynamic quantization measures activation ranges at run time on every call")
    if artifact["precision"] in ("int4-weight", "int8-weight"):
        reasons.append("weight-only quantization dequantizes weights at run time: it saves size, not compute")
    if artifact["precision"] == "fp16" and artifact["format"] == "onnx":
        reasons.append("x86 CPUs have no fp16 arithmetic in ONNX Runtime's CPU kernels: fp16 saves size, not time")
    return reasons


def explain_speed(artifacts: list[dict]) -> None:
    """Set ``speedup_vs_fp32`` on each compressed artifact and explain, in ``notes``, when it is not faster."""
    fp32 = {a["format"]: _p50(a) for a in artifacts if a["precision"] == "fp32"}
    for artifact in artifacts:
        base, own = fp32.get(artifact["format"]), _p50(artifact)
        if artifact["precision"] == "fp32" or base is None or own is None or own == 0:
            continue
        speedup = round(base / own, 3)
        artifact["speedup_vs_fp32"] = speedup
        if speedup < 1.0 / 0.95:
            why = "; ".join(_reasons(artifact, base)) or "no single cause found"
            artifact["notes"].append(f"not faster than fp32 on this CPU ({own:.3f} ms vs {base:.3f} ms at batch 1): {why}")
        else:
            artifact["notes"].append(f"{speedup:.2f}x faster than fp32 on this CPU at batch 1")


def _pick(candidates: list[dict], limit: float) -> dict | None:
    timed = [a for a in candidates if _p50(a) is not None]
    if not timed:
        return None
    fastest = min(_p50(a) for a in timed)
    near = [a for a in timed if _p50(a) <= fastest * NEAR_FASTEST]
    choice = min(near, key=lambda a: (a["size_bytes"], _p50(a)))
    loss = choice["metrics"]["degradation"]
    return {
        "artifact": choice["name"],
        "why": (f"smallest ({choice['size_bytes']:,} bytes) of the artifacts within 10 % of the fastest "
                f"(p50 {_p50(choice):.3f} ms vs best {fastest:.3f} ms), losing "
                f"{'an unmeasured amount' if loss is None else f'{loss:.4f}'} (limit {limit})"),
    }


def recommend(artifacts: list[dict], max_degradation: float | None) -> dict:
    """The artifact to ship for this CPU, overall and per format, by measured speed and size under the gate."""
    limit = DEFAULT_DEGRADATION_LIMIT if max_degradation is None else max_degradation
    from compress.gates import is_failed

    artifacts = [a for a in artifacts if not is_failed(a)]  # a file that failed verification is never recommended
    within = [a for a in artifacts if a["metrics"]["degradation"] is None or a["metrics"]["degradation"] <= limit]
    result = {"degradation_limit": limit, "local-cpu": _pick(within, limit), "by_format": {}}
    for fmt in sorted({a["format"] for a in artifacts}):
        result["by_format"][fmt] = _pick([a for a in within if a["format"] == fmt], limit)
    return result
