"""Speed honesty and recommendations, from measured numbers only.

"Faster" and "not faster" are said only when the two latencies' 95 % confidence intervals of the median separate;
otherwise the two run at the same speed. Choosing (compress.steps.benchmark.speed_pick), the smaller file wins among those
shown as fast as the fastest; intervals too wide to tell say "undecided: machine busy". ``explain_speed`` replaces any
speed note it wrote before, so running it again (a recipe, `compress bench` rewriting a latency) never stacks notes.

Example:
    >>> explain_speed(artifacts)          # adds speedup_vs_fp32 and a plain note when int8 is not faster
    >>> recommend(artifacts, evaluate_gates(artifacts)).local_cpu.artifact
    'int8-onnx'
"""
from __future__ import annotations

import re

from compress.report.model import Excluded, Gate, Recommendation, Recommended
from compress.steps.benchmark import session_of, speed_pick  # the pick: one timing session, intervals that decide
from compress.steps.latency import device_p50, device_timing

TINY_MODEL_MS = 0.2                 # below this, per-op overhead dominates
SPEED_NOTE = re.compile(r"^(not faster than fp32|same speed as fp32|\d+(\.\d+)?x faster than fp32|speed not compared with fp32)")
NO_SIZE_GAIN = 0.95                 # a quantized file at this fraction of the fp32 file's size or more saves nothing
ALL_FLOAT_NOTE = re.compile(r"^(repair kept everything float|nothing was quantized): this is (the|an) fp32 file")
NO_GAIN_NOTE = re.compile(r"^gains nothing in size: ")
NOTHING_QUANTIZED = "nothing was quantized"   # the note the ONNX writer leaves on a file with no integer op



def speed_verdict(candidate: dict, baseline: dict) -> str:
    """``"faster"``, ``"slower"`` or ``"same"``: faster/slower only when the medians' 95 % CIs do not overlap."""
    own, base = device_timing(candidate), device_timing(baseline)
    if not own or not base or not own.get("median_ci95_ms") or not base.get("median_ci95_ms"):
        return "same"
    (low, high), (base_low, base_high) = own["median_ci95_ms"], base["median_ci95_ms"]
    if high < base_low:
        return "faster"
    if low > base_high:
        return "slower"
    return "same"


def _reasons(artifact: dict, fp32_ms: float) -> list[str]:
    from compress.backends.onnx.cpu_features import cpu_int8_features, int8_speed_explanation
    from compress.catalog import PRECISIONS

    reasons = []
    if artifact.get("float_ops"):
        ops = sorted({op["op"] for op in artifact["float_ops"]})
        reasons.append(f"{len(artifact['float_ops'])} op(s) stay in float ({', '.join(ops)}), with conversions around them")
    if fp32_ms < TINY_MODEL_MS:
        reasons.append(f"the model is tiny (fp32 runs in {fp32_ms:.3f} ms): quantize/dequantize overhead outweighs the arithmetic saved")
    precision = PRECISIONS.get(artifact["precision"])
    if precision is None:
        return reasons
    if precision.int8_compute:
        reasons.append(int8_speed_explanation(cpu_int8_features()))
    if precision.activations in ("dynamic", "mixed"):
        reasons.append("dynamic quantization measures activation ranges at run time on every call")
    if precision.weight_only:
        reasons.append("weight-only quantization dequantizes weights at run time: it saves size, not compute")
    if artifact["precision"] == "fp16" and artifact["format"] == "onnx":
        reasons.append("x86 CPUs have no fp16 arithmetic in ONNX Runtime's CPU kernels: fp16 saves size, not time")
    return reasons


def explain_speed(artifacts: list[dict]) -> None:
    """Set ``speedup_vs_fp32`` on each compressed artifact and one speed note (replacing an earlier one): faster,
    not faster (with why), or the same speed when the confidence intervals overlap."""
    fp32 = {a["format"]: a for a in artifacts if a["precision"] == "fp32" and device_p50(a) is not None}
    for artifact in artifacts:
        artifact["notes"] = [n for n in artifact.get("notes", []) if not SPEED_NOTE.match(n)]
        base_entry, own = fp32.get(artifact["format"]), device_p50(artifact)
        if artifact["precision"] == "fp32" or base_entry is None or own is None or own == 0:
            artifact.pop("speedup_vs_fp32", None)
            continue
        if session_of(artifact) != session_of(base_entry):  # never a ratio of figures from two timing sessions
            artifact.pop("speedup_vs_fp32", None)
            artifact["notes"].append(f"speed not compared with fp32: timed in session {session_of(artifact)}, fp32 in "
                                     f"{session_of(base_entry)}; `compress bench` on both times them together")
            continue
        base = device_p50(base_entry)
        artifact["speedup_vs_fp32"] = round(base / own, 3)
        verdict = speed_verdict(artifact, base_entry)
        figures = f"{own:.3f} ms vs {base:.3f} ms at batch 1"
        if verdict == "faster":
            artifact["notes"].append(f"{base / own:.2f}x faster than fp32 on this CPU ({figures}; the 95 % intervals do not overlap)")
        elif verdict == "same":
            artifact["notes"].append(f"same speed as fp32 on this CPU ({figures}; the 95 % intervals overlap, so no difference "
                                     "is shown): the smaller file wins")
        else:
            why = "; ".join(_reasons(artifact, base)) or "no single cause found"
            artifact["notes"].append(f"not faster than fp32 on this CPU ({figures}; slower beyond the 95 % intervals): {why}")


def check_int8_gains(artifacts: list[dict]) -> None:
    """A quantized file that is the fp32 file (same bytes) or holds nothing quantized becomes precision fp32 with a
    note and is never recommended; one at >= ``NO_SIZE_GAIN`` of the fp32 size gets a note that it gains nothing in
    size (and is not recommended unless it is faster). Notes written before are replaced."""
    from compress.steps.gates import is_failed

    fp32 = {a["format"]: a for a in artifacts if a["precision"] == "fp32" and not is_failed(a) and not _all_float(a)}
    for artifact in artifacts:
        artifact["notes"] = [n for n in artifact.get("notes", []) if not NO_GAIN_NOTE.match(n)]
        base = fp32.get(artifact["format"])
        if base is None or artifact is base or is_failed(artifact) or artifact["precision"] == "fp16" or _all_float(artifact):
            continue
        same = artifact["sha256"] == base["sha256"]
        if same or any(n.startswith(NOTHING_QUANTIZED) for n in artifact["notes"]):
            who = "repair kept everything float" if artifact.get("repair") else NOTHING_QUANTIZED
            what = f"this is the fp32 file (same bytes as {base['name']})" if same else "this is an fp32 file (no integer weights)"
            artifact["notes"].append(f"{who}: {what}; listed as precision fp32, never recommended as {artifact['precision']}")
            artifact["precision"] = "fp32"
            continue
        ratio = artifact["size_bytes"] / max(base["size_bytes"], 1)
        if ratio >= NO_SIZE_GAIN:
            artifact["notes"].append(f"gains nothing in size: {ratio:.3f}x the fp32 file ({artifact['size_bytes']:,} vs "
                                     f"{base['size_bytes']:,} bytes); not recommended for size")


def _all_float(artifact: dict) -> bool:
    return any(ALL_FLOAT_NOTE.match(n) for n in artifact.get("notes", []))


def _no_gain_why(artifact: dict) -> str | None:
    """Why a file is never recommended though it passed: it is all float, or smaller by nothing and not faster."""
    for note in artifact.get("notes", []):
        if ALL_FLOAT_NOTE.match(note):
            return note
    gain = next((n for n in artifact.get("notes", []) if NO_GAIN_NOTE.match(n)), None)
    if gain and not any(re.match(r"^\d+(\.\d+)?x faster than fp32", n) for n in artifact["notes"]):
        return f"{gain.split(';')[0]}, and was not measured faster than fp32"
    return None


def evidence(artifact: dict) -> str:
    """What the artifact was judged on, in words: its measured loss, else its weakest output's fidelity."""
    metrics = artifact["metrics"]
    if metrics.get("perplexity"):
        return f"perplexity ratio {metrics['perplexity']['perplexity_ratio']} vs the float reference"
    if metrics["degradation"] is not None:
        return f"losing {metrics['degradation']:.4f} of {metrics['task']['name']}"
    worst = (metrics.get("fidelity") or {}).get("worst")
    if not worst:
        return "no labels: no per-output fidelity recorded"
    return f"no labels: weakest output {worst['output']} ({worst['kind']}) {worst['measure']} {worst['value']}"


def recommend(artifacts: list[dict], judged: list[Gate]) -> Recommended:
    """The artifact to ship for this CPU, overall and per format, by measured speed and size among those with evidence
    (measured on data) that failed no gate in ``judged``; the others are listed under ``excluded`` with the reason."""
    failed: dict[str, list[str]] = {}
    for gate in judged:
        if not gate.passed:
            failed.setdefault(gate.artifact, []).append(f"{gate.name}: {gate.reason}")
    from compress.steps.gates import is_failed

    excluded = [{"artifact": a["name"], "why": f"failed verification: {a.get('failure')}"} for a in artifacts if is_failed(a)]
    excluded += [{"artifact": a["name"], "why": "; ".join(failed[a["name"]]) if a["name"] in failed else "not measured on data"}
                 for a in artifacts if not is_failed(a) and (a["name"] in failed or not (a["metrics"].get("fidelity")
                                                                           or a["metrics"].get("perplexity")))]
    excluded += [{"artifact": a["name"], "why": _no_gain_why(a)} for a in artifacts
                 if not is_failed(a) and a["name"] not in {e["artifact"] for e in excluded} and _no_gain_why(a)]
    names = {e["artifact"] for e in excluded}
    eligible = [a for a in artifacts if a["name"] not in names]
    from compress.steps.lm_verify import lm_pick

    language_model = any(a["metrics"].get("perplexity") for a in artifacts)  # language models: by decode tokens/s

    def pick(candidates: list[dict]) -> dict | None:
        return lm_pick(candidates) if language_model else speed_pick(candidates, evidence)

    formats = sorted({a["format"] for a in artifacts})
    return Recommended(local_cpu=_recommendation(pick(eligible)), excluded=[Excluded(**e) for e in excluded],
                       by_format={fmt: _recommendation(pick([a for a in eligible if a["format"] == fmt])) for fmt in formats})


def _recommendation(pick: dict | None) -> Recommendation | None:
    return None if pick is None else Recommendation.model_validate(pick)
