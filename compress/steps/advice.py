"""Speed honesty and recommendations, from measured numbers only.

"Faster" and "not faster" are said only when the two latencies' 95 % confidence intervals of the median separate;
otherwise the two run at the same speed. Choosing (compress.steps.benchmark.speed_pick), the smaller file wins among those
shown as fast as the fastest; intervals too wide to tell say "undecided: machine busy". ``explain_speed`` replaces any
speed note it wrote before, so running it again (a recipe, `compress bench` rewriting a latency) never stacks notes.

Example:
    >>> explain_speed(artifacts)          # sets speed (a SpeedFinding), speedup_vs_fp32 and the note derived from speed
    >>> recommend(artifacts, evaluate_gates(artifacts)).local_cpu.artifact
    'int8-onnx'
"""
from __future__ import annotations

from compress.report.model import Artifact, Excluded, Gate, GainFinding, Recommendation, Recommended, SpeedFinding, unset
from compress.steps.benchmark import session_of, speed_pick  # the pick: one timing session, intervals that decide
from compress.steps.latency import device_p50, device_timing

TINY_MODEL_MS = 0.2                 # below this, per-op overhead dominates
NO_SIZE_GAIN = 0.95                 # a quantized file at this fraction of the fp32 file's size or more saves nothing
NOTHING_QUANTIZED = "nothing was quantized"   # the cause named when a quantizer left no integer op (holds_integer_ops False)


def speed_verdict(candidate: Artifact, baseline: Artifact) -> str:
    """``"faster"``, ``"slower"`` or ``"same"``: faster/slower only when the medians' 95 % CIs do not overlap."""
    own, base = device_timing(candidate), device_timing(baseline)
    own_ci, base_ci = getattr(own, "median_ci95_ms", None), getattr(base, "median_ci95_ms", None)
    if not own or not base or not own_ci or not base_ci:
        return "same"
    (low, high), (base_low, base_high) = own_ci, base_ci
    if high < base_low:
        return "faster"
    if low > base_high:
        return "slower"
    return "same"


def _reasons(artifact: Artifact, fp32_ms: float) -> list[str]:
    from compress.backends.onnx.cpu_features import cpu_int8_features, int8_speed_explanation
    from compress.catalog import PRECISIONS

    reasons = []
    if artifact.float_ops:
        ops = sorted({op["op"] for op in artifact.float_ops})
        reasons.append(f"{len(artifact.float_ops)} op(s) stay in float ({', '.join(ops)}), with conversions around them")
    if fp32_ms < TINY_MODEL_MS:
        reasons.append(f"the model is tiny (fp32 runs in {fp32_ms:.3f} ms): quantize/dequantize overhead outweighs the arithmetic saved")
    precision = PRECISIONS.get(artifact.precision)
    if precision is None:
        return reasons
    if precision.int8_compute:
        reasons.append(int8_speed_explanation(cpu_int8_features()))
    if precision.activations in ("dynamic", "mixed"):
        reasons.append("dynamic quantization measures activation ranges at run time on every call")
    if precision.weight_only:
        reasons.append("weight-only quantization dequantizes weights at run time: it saves size, not compute")
    if artifact.precision == "fp16" and artifact.format == "onnx":
        reasons.append("x86 CPUs have no fp16 arithmetic in ONNX Runtime's CPU kernels: fp16 saves size, not time")
    return reasons


def _speed_finding(artifact: Artifact, fp32: dict[str, Artifact]) -> SpeedFinding | None:
    """How ``artifact`` compares with its format's fp32 file; None when there is nothing to compare."""
    base_entry, own = fp32.get(artifact.format), device_p50(artifact)
    if artifact.precision == "fp32" or base_entry is None or own is None or own == 0:
        return None
    base = device_p50(base_entry)
    if session_of(artifact) != session_of(base_entry):  # never a ratio of figures from two timing sessions
        return SpeedFinding(verdict="not compared", ms=own, fp32_ms=base, session=session_of(artifact),
                            fp32_session=session_of(base_entry))
    verdict = speed_verdict(artifact, base_entry)
    why = ("; ".join(_reasons(artifact, base)) or "no single cause found") if verdict == "slower" else None
    return SpeedFinding(verdict=verdict, ms=own, fp32_ms=base, why=why)


def explain_speed(artifacts: list[Artifact]) -> None:
    """Set ``speed`` (and ``speedup_vs_fp32``) on each compressed artifact and the one speed note derived from it
    (replacing the earlier one): faster, not faster (with why), or the same speed when the confidence intervals overlap."""
    fp32 = {a.format: a for a in artifacts if a.precision == "fp32" and device_p50(a) is not None}
    for artifact in artifacts:
        earlier = artifact.speed.note if artifact.speed else None
        artifact.notes = [n for n in artifact.notes if n != earlier]
        unset(artifact, "speed")
        unset(artifact, "speedup_vs_fp32")
        finding = _speed_finding(artifact, fp32)
        if finding is None:
            continue
        if finding.verdict != "not compared":
            artifact.speedup_vs_fp32 = round(finding.fp32_ms / finding.ms, 3)
        artifact.speed = finding
        artifact.notes = [*artifact.notes, finding.note]


def check_int8_gains(artifacts: list[Artifact]) -> None:
    """A quantized file that is the fp32 file (same bytes) or holds nothing quantized becomes precision fp32 with a
    note and is never recommended; one at >= ``NO_SIZE_GAIN`` of the fp32 size gets a note that it gains nothing in
    size (and is not recommended unless it is faster). Each note is derived from the artifact's ``gain``; notes written
    before are replaced."""
    from compress.steps.gates import is_failed

    fp32 = {a.format: a for a in artifacts if a.precision == "fp32" and not is_failed(a) and not _all_float(a)}
    for artifact in artifacts:
        if artifact.gain and artifact.gain.finding == "no size gain":
            artifact.notes = [n for n in artifact.notes if n != artifact.gain.note]
            unset(artifact, "gain")
        base = fp32.get(artifact.format)
        if base is None or artifact is base or is_failed(artifact) or artifact.precision == "fp16" or _all_float(artifact):
            continue
        same = artifact.sha256 == base.sha256
        sizes = {"fp32": base.name, "size_bytes": artifact.size_bytes, "fp32_size_bytes": base.size_bytes}
        if same or artifact.holds_integer_ops is False:
            cause = "repair kept everything float" if artifact.repair else NOTHING_QUANTIZED
            artifact.gain = GainFinding(finding="all float", cause=cause, same_bytes=same, listed_as=artifact.precision, **sizes)
            artifact.notes = [*artifact.notes, artifact.gain.note]
            artifact.precision = "fp32"
            continue
        if artifact.size_bytes / max(base.size_bytes, 1) >= NO_SIZE_GAIN:
            artifact.gain = GainFinding(finding="no size gain", **sizes)
            artifact.notes = [*artifact.notes, artifact.gain.note]


def _all_float(artifact: Artifact) -> bool:
    return bool(artifact.gain and artifact.gain.finding == "all float")


def _no_gain_why(artifact: Artifact) -> str | None:
    """Why a file is never recommended though it passed: it is all float, or smaller by nothing and not faster."""
    if _all_float(artifact):
        return artifact.gain.note
    if artifact.gain and not (artifact.speed and artifact.speed.verdict == "faster"):
        return f"{artifact.gain.headline}, and was not measured faster than fp32"
    return None


def evidence(artifact: Artifact) -> str:
    """What the artifact was judged on, in words: its measured loss, else its weakest output's fidelity."""
    metrics = artifact.metrics
    if metrics.perplexity:
        return f"perplexity ratio {metrics.perplexity.perplexity_ratio} vs the float reference"
    if metrics.degradation is not None:
        return f"losing {metrics.degradation:.4f} of {metrics.task.name}"
    worst = metrics.fidelity.worst if metrics.fidelity else None
    if not worst:
        return "no labels: no per-output fidelity recorded"
    return f"no labels: weakest output {worst.output} ({worst.kind}) {worst.measure} {worst.value}"


def recommend(artifacts: list[Artifact], judged: list[Gate]) -> Recommended:
    """The artifact to ship for this CPU, overall and per format, by measured speed and size among those with evidence
    (measured on data) that failed no gate in ``judged``; the others are listed under ``excluded`` with the reason."""
    failed: dict[str, list[str]] = {}
    for gate in judged:
        if not gate.passed:
            failed.setdefault(gate.artifact, []).append(f"{gate.name}: {gate.reason}")
    from compress.steps.gates import is_failed

    excluded = [{"artifact": a.name, "why": f"failed verification: {a.failure}"} for a in artifacts if is_failed(a)]
    excluded += [{"artifact": a.name, "why": "; ".join(failed[a.name]) if a.name in failed else "not measured on data"}
                 for a in artifacts if not is_failed(a) and (a.name in failed or not (a.metrics.fidelity
                                                                           or a.metrics.perplexity))]
    excluded += [{"artifact": a.name, "why": _no_gain_why(a)} for a in artifacts
                 if not is_failed(a) and a.name not in {e["artifact"] for e in excluded} and _no_gain_why(a)]
    names = {e["artifact"] for e in excluded}
    eligible = [a for a in artifacts if a.name not in names]
    from compress.steps.lm_verify import lm_pick

    language_model = any(a.metrics.perplexity for a in artifacts)  # language models: by decode tokens/s

    def pick(candidates: list[Artifact]) -> dict | None:
        return lm_pick(candidates) if language_model else speed_pick(candidates, evidence)

    formats = sorted({a.format for a in artifacts})
    return Recommended(local_cpu=_recommendation(pick(eligible)), excluded=[Excluded(**e) for e in excluded],
                       by_format={fmt: _recommendation(pick([a for a in eligible if a.format == fmt])) for fmt in formats})


def _recommendation(pick: dict | None) -> Recommendation | None:
    return None if pick is None else Recommendation.model_validate(pick)
