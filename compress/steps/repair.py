"""Repair an int8 artifact that fails its quality gates: cheap fixes first, then layers kept in float.

Quality gates are the ones judged by labels (``max_degradation``) or, without labels, by fidelity (the floor of each
output kind): compress.steps.gates. When the int8 file as configured fails them, these steps are tried in order, each
written, verified in its runtime and judged like any artifact; the first that passes is kept:

1. dynamic int8 for MatMul/Gemm (ONNX; activation ranges measured on every call) or dynamic-range int8 (TFLite);
2. per-channel weights, when they were off;
3. each other calibration method (minmax, percentile, entropy);
4. the most sensitive layers kept in float, one more each step (at most ``max_fallback_layers``), on top of the
   setting nearest to passing so far (dynamic MatMul/Gemm when that was it: compress.steps.repair_plan).

A step that cannot change the file is skipped and listed with why (compress.steps.repair_plan.skip_reason); every
step draws on the run's time budget and announces itself ("repair 2/9: percentile calibration [0:41 of the 10:00
repair budget]"); once the budget is spent, the steps left are listed as not tried (compress.steps.repair_budget).

Every attempt goes into the artifact's ``repair`` entry (step, techniques, size, the judged figures, passed). When
nothing passes, the file as configured is written back and the run fails its gates as before. When the fp32 export of
the same model already fails the gates, the loss is not quantization's and nothing is tried.

Example:
    >>> entry = repair(attempt, entry, config, "onnx", policy, rank_layers, step=print)
    >>> [s.step for s in entry.repair.steps]
    ['as configured', 'dynamic int8 for MatMul, Gemm', 'percentile calibration', 'keep float: proj']
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from compress.backends import registry
from compress.backends.calibration import calibration_names
from compress.catalog import PRECISIONS
from compress.steps.gates import GatePolicy, evaluate_gates, is_failed, verification_gate
from compress.steps.repair_budget import RepairBudget
from compress.steps.repair_plan import base_step, skip_reason
from compress.steps.resolve import is_quality_failure

if TYPE_CHECKING:
    from compress.report.model import Artifact, Gate

QUALITY_JUDGES = ("labels", "fidelity", "perplexity")


@dataclass(frozen=True)
class RepairStep:
    """One thing to try: QuantizeConfig fields to change, a precision to use instead, or layers to keep in float."""

    label: str
    update: dict = field(default_factory=dict)
    precision: str | None = None
    keep_float: tuple[str, ...] = ()


Attempt = Callable[[RepairStep], "Artifact"]  # writes, verifies and returns the artifact entry for one step


def quality_gates(entry: Artifact, policy: GatePolicy) -> list[Gate]:
    """The quality gates of ``entry`` under ``policy`` (gates on); a file that failed verification fails them all."""
    if is_failed(entry):
        return [verification_gate(entry)]
    gates = evaluate_gates([entry], replace(policy, enabled=True), lambda a: True)
    return [g for g in gates if g.judged_by in QUALITY_JUDGES]


def quality_failures(entry: Artifact, policy: GatePolicy) -> list[Gate]:
    """The quality gates ``entry`` fails (empty: it may be kept)."""
    return [g for g in quality_gates(entry, policy) if is_quality_failure(g)]


def should_repair(entry: Artifact, precision: str, policy: GatePolicy, fp32: Artifact | None) -> str | None:
    """Why repair is skipped (None: try it). Only a calibrated (static) file that fails a quality gate is repaired."""
    if not policy.enabled:
        return "gates off"
    if not PRECISIONS[precision].calibrated or not quality_failures(entry, policy):
        return "not needed"
    if entry.metrics.fidelity is None:
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


def _record(step: RepairStep, entry: Artifact, gates: list[Gate]) -> dict:
    """What one attempt bought: its size and every quality gate's figure."""
    judged = [{"gate": g.name, "value": g.value, "limit": g.limit, "passed": g.passed, "reason": g.reason} for g in gates]
    return {"step": step.label, "techniques": list(entry.techniques), "size_bytes": entry.size_bytes,
            "passed": not any(is_quality_failure(g) for g in gates), "gates": judged}


def repair(attempt: Attempt, entry: Artifact, config, fmt: str, policy: GatePolicy,
           rank_layers: Callable[[], list[str]], step: Callable[[str], None] = lambda message: None,
           budget: RepairBudget | None = None, op_types: frozenset[str] | None = None) -> Artifact:
    """Try the repair steps after ``entry`` (the file as configured) failed; the entry to keep, with ``repair``.

    ``budget``: the run's repair time (compress.steps.repair_budget; default: a fresh DEFAULT_REPAIR_BUDGET);
    ``op_types``: the fp32 graph's op types, which let steps that cannot change the file be skipped
    (compress.steps.repair_plan)."""
    budget = budget or RepairBudget()
    first = RepairStep("as configured")
    records = [_record(first, entry, quality_gates(entry, policy))]
    tried, skipped, not_tried = [(first, records[0])], [], []
    kept = None
    with budget.spending():
        cheap = []
        for candidate in cheap_steps(config, fmt):
            why = skip_reason(candidate, records[0], op_types)
            (skipped.append({"step": candidate.label, "why": why}) if why else cheap.append(candidate))
        total = len(cheap) + config.max_fallback_layers  # at most: fewer layers may be ranked
        for candidate in _walk(cheap, tried, config, rank_layers, budget):
            if budget.exhausted():
                not_tried.append(candidate.label)
                continue
            step(budget.line(len(tried), max(total, len(tried)), candidate.label))
            result = attempt(candidate)
            records.append(_record(candidate, result, quality_gates(result, policy)))
            tried.append((candidate, records[-1]))
            if records[-1]["passed"]:
                kept, entry = candidate, result
                break
        if kept is None:
            step("repair: nothing met the gates; writing the file as configured again")
            entry = attempt(first)  # nothing reached the gates: the file as configured, failing as before
    entry.repair = {"steps": records, "kept": kept.label if kept else None, "skipped": skipped,
                    "budget": budget.record(not_tried), "summary": _summary(records, kept, skipped, not_tried, budget)}
    entry.notes = [*entry.notes, entry.repair.summary]
    return entry


def _walk(cheap: list[RepairStep], tried: list[tuple], config, rank_layers: Callable[[], list[str]], budget: RepairBudget):
    """The cheap steps, then layers kept in float on top of the best setting so far (repair_plan.base_step); with
    the budget spent by then, the layers are not ranked (that analysis takes time too): one step stands for them."""
    yield from cheap
    base = base_step(tried)
    prefix = "" if not base.update and not base.precision else f"{base.label} + "
    if budget.exhausted():
        yield RepairStep(f"{prefix}keep float: up to {config.max_fallback_layers} of the most sensitive layers")
        return
    ranked = [layer for layer in rank_layers() if layer not in config.exclude]
    for count in range(1, min(config.max_fallback_layers, len(ranked)) + 1):
        layers = tuple(ranked[:count])
        yield RepairStep(f"{prefix}keep float: {', '.join(layers)}", base.update, base.precision, keep_float=layers)


def _summary(records: list[dict], kept: RepairStep | None, skipped: list[dict], not_tried: list[str],
             budget: RepairBudget) -> str:
    before = "; ".join(g["reason"] for g in records[0]["gates"] if not g["passed"])
    if kept is None:
        said = f"repair: {len(records) - 1} steps tried, none met the gates ({before}); kept the file as configured"
        if skipped:
            said += f"; skipped {len(skipped)} that could not change the file ({'; '.join(s['step'] + ': ' + s['why'] for s in skipped)})"
        if not_tried:
            said += (f"; the {budget.seconds:g} s repair budget ran out (spent {budget.spent():.0f} s): not tried "
                     f"{', '.join(not_tried)} (raise --repair-budget to try them)")
        return said
    after = "; ".join(g["reason"] for g in records[-1]["gates"])
    return (f"repaired by {kept.label} (step {len(records) - 1} of the repair): was {before}; now {after}; "
            f"{records[-1]['size_bytes']:,} bytes (was {records[0]['size_bytes']:,})")
