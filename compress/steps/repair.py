"""Repair an int8 artifact that fails its quality gates: cheap fixes first, then layers kept in float.

Quality gates are the ones judged by labels (``max_degradation``) or, without labels, by fidelity (the floor of each
output kind): compress.steps.gates. When the int8 file as configured fails them, these steps are tried in order, each
written, verified in its runtime and judged like any artifact; the first that passes is kept:

1. dynamic int8 for MatMul/Gemm (ONNX; activation ranges measured on every call) or dynamic-range int8 (TFLite);
2. per-channel weights, when they were off;
3. each other calibration method (minmax, percentile, entropy);
4. the most sensitive layers kept in float, one more each step (at most ``max_fallback_layers``).

Every attempt goes into the artifact's ``repair`` entry (step, techniques, size, the judged figures, passed). When
nothing passes, the file as configured is written back and the run fails its gates as before. When the fp32 export of
the same model already fails the gates, the loss is not quantization's and nothing is tried.

Example:
    >>> entry = repair(attempt, entry, config, "onnx", policy, rank_layers, step=print)
    >>> [s["step"] for s in entry["repair"]["steps"]]
    ['as configured', 'dynamic int8 for MatMul, Gemm', 'percentile calibration', 'keep float: proj']
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from compress.backends import registry
from compress.backends.calibration import calibration_names
from compress.catalog import PRECISIONS
from compress.steps.gates import GatePolicy, evaluate_gates, is_failed
from compress.steps.resolve import is_quality_failure

QUALITY_JUDGES = ("labels", "fidelity", "perplexity")


@dataclass(frozen=True)
class RepairStep:
    """One thing to try: QuantizeConfig fields to change, a precision to use instead, or layers to keep in float."""

    label: str
    update: dict = field(default_factory=dict)
    precision: str | None = None
    keep_float: tuple[str, ...] = ()


Attempt = Callable[[RepairStep], dict]  # writes, verifies and returns the artifact entry for one step


def quality_gates(entry: dict, policy: GatePolicy) -> list[dict]:
    """The quality gates of ``entry`` under ``policy`` (gates on); a file that failed verification fails them all."""
    if is_failed(entry):
        return [{"name": "verified", "value": 0, "limit": 1, "passed": False, "reason": f"failed verification: {entry.get('failure')}"}]
    gates = evaluate_gates([entry], replace(policy, enabled=True), lambda a: True)
    return [g for g in gates if g["judged_by"] in QUALITY_JUDGES]


def quality_failures(entry: dict, policy: GatePolicy) -> list[dict]:
    """The quality gates ``entry`` fails (empty: it may be kept)."""
    return [g for g in quality_gates(entry, policy) if is_quality_failure(g)]


def should_repair(entry: dict, precision: str, policy: GatePolicy, fp32: dict | None) -> str | None:
    """Why repair is skipped (None: try it). Only a calibrated (static) file that fails a quality gate is repaired."""
    if not policy.enabled:
        return "gates off"
    if not PRECISIONS[precision].calibrated or not quality_failures(entry, policy):
        return "not needed"
    if entry["metrics"].get("fidelity") is None:
        return "no data to judge by"
    if fp32 is not None and quality_failures(fp32, policy):
        return "the fp32 export already fails the gates: the loss is not quantization's"
    return None


def cheap_steps(config, fmt: str) -> list[RepairStep]:
    """Steps 1-3 for ``config`` (a QuantizeConfig) on format ``fmt``."""
    steps = []
    dynamic = ["MatMul", "Gemm"]
    if fmt == "onnx" and not set(dynamic) <= set(config.dynamic_op_types):
        steps.append(RepairStep("dynamic int8 for MatMul, Gemm", {"dynamic_op_types": sorted({*config.dynamic_op_types, *dynamic})}))
    elif "int8-dynamic" in registry.get(fmt).precisions:
        steps.append(RepairStep("dynamic-range int8", precision="int8-dynamic"))
    if not config.per_channel:
        steps.append(RepairStep("per-channel weights", {"per_channel": True}))
    steps += [RepairStep(f"{method} calibration", {"calibration": method}) for method in calibration_names(fmt) if method != config.calibration]
    return steps


def _record(step: RepairStep, entry: dict, gates: list[dict]) -> dict:
    """What one attempt bought: its size and every quality gate's figure."""
    judged = [{"gate": g["name"], "value": g["value"], "limit": g["limit"], "passed": g["passed"], "reason": g["reason"]} for g in gates]
    return {"step": step.label, "techniques": list(entry["techniques"]), "size_bytes": entry["size_bytes"],
            "passed": not any(is_quality_failure(g) for g in gates), "gates": judged}


def repair(attempt: Attempt, entry: dict, config, fmt: str, policy: GatePolicy,
           rank_layers: Callable[[], list[str]], step: Callable[[str], None] = lambda message: None) -> dict:
    """Try the repair steps after ``entry`` (the file as configured) failed; the entry to keep, with ``repair``."""
    first = RepairStep("as configured")
    records = [_record(first, entry, quality_gates(entry, policy))]
    kept = None
    for candidate in _steps(config, fmt, rank_layers):
        step(f"repair: {candidate.label}")
        tried = attempt(candidate)
        records.append(_record(candidate, tried, quality_gates(tried, policy)))
        if records[-1]["passed"]:
            kept, entry = candidate, tried
            break
    if kept is None:
        entry = attempt(first)  # nothing reached the gates: the file as configured, failing as before
    entry["repair"] = {"steps": records, "kept": kept.label if kept else None,
                       "summary": _summary(records, kept)}
    entry["notes"].append(entry["repair"]["summary"])
    return entry


def _steps(config, fmt: str, rank_layers: Callable[[], list[str]]):
    yield from cheap_steps(config, fmt)
    ranked = [layer for layer in rank_layers() if layer not in config.exclude]
    for count in range(1, min(config.max_fallback_layers, len(ranked)) + 1):
        layers = tuple(ranked[:count])
        yield RepairStep(f"keep float: {', '.join(layers)}", keep_float=layers)


def _summary(records: list[dict], kept: RepairStep | None) -> str:
    before = "; ".join(g["reason"] for g in records[0]["gates"] if not g["passed"])
    if kept is None:
        return f"repair: {len(records) - 1} steps tried, none met the gates ({before}); kept the file as configured"
    after = "; ".join(g["reason"] for g in records[-1]["gates"])
    return (f"repaired by {kept.label} (step {len(records) - 1} of the repair): was {before}; now {after}; "
            f"{records[-1]['size_bytes']:,} bytes (was {records[0]['size_bytes']:,})")
