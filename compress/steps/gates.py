"""The one gate evaluator: every verb (quantize, prune, distill, qat, run, tune) judges artifacts here.

Gates are on by default. With labels, an artifact may lose at most ``max_degradation`` of the task metric
(default ``DEFAULT_MAX_DEGRADATION``); outputs no label judges (all of them without labels) must keep the fidelity
floor of their kind (``compress.data.outputs.FIDELITY_FLOORS``). A degradation limit without labels is never compared
with a missing number: the verdict says the artifact was judged by fidelity instead.

Example:
    >>> gates = evaluate_gates(artifacts, GatePolicy(max_size_bytes=200_000))
    >>> [g.judged_by for g in gates]
    ['fidelity', 'size']
    >>> fidelity_floor_check(artifacts[1].metrics.fidelity)   # [] when every output keeps its floor
    []
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable

from compress.data.outputs import FIDELITY_FLOORS, floor_margin, floor_shortfalls
from compress.steps.resolve import resolve_gate, stream_gate, summary_tail  # gates judged with their intervals

if TYPE_CHECKING:  # the report models load with pydantic: only when something is judged, never at CLI start-up
    from compress.report.model import Artifact, Fidelity, Gate, Recommended, Verdict

# 1 pt of accuracy (or 0.01 of R²): int8 PTQ of the zoo models moves the metric by -0.006..+0.003 (bench/results/fidelity_floors.md),
# so a good artifact passes with room to spare, while a clearly damaged one (the 8.4 pt pruned ResNet) fails.
DEFAULT_MAX_DEGRADATION = 0.01
MAX_DEGRADATION_HELP = (f"Gate: metric loss allowed with labels, as a fraction (0.005 = 0.5 pt; default {DEFAULT_MAX_DEGRADATION:g}); "
                        "without labels the outputs' fidelity floors judge; for a decoder language model, the relative "
                        "perplexity increase allowed (0.02 = +2 %; default per precision).")
BASELINE_PREFIXES = ("dense-", "teacher-", "no-kd-")  # reference points written beside the candidates, never judged


@dataclass
class GatePolicy:
    """What the artifacts are judged by. ``enabled=False`` (``--no-gate``): nothing is judged, the report says so."""

    enabled: bool = True
    max_degradation: float | None = None           # None: DEFAULT_MAX_DEGRADATION when labels exist
    min_fidelity: dict[str, float] = field(default_factory=dict)   # extra floors on any output that has the measure
    max_size_bytes: int | None = None
    max_latency_ms: dict[str, float] = field(default_factory=dict)
    floors: dict[str, dict[str, float]] = field(default_factory=lambda: FIDELITY_FLOORS)

    @property
    def degradation_limit(self) -> float:
        return degradation_limit(self.max_degradation)


def degradation_limit(max_degradation: float | None) -> float:
    """The limit a ``max_degradation`` setting judges by: the default when none was given."""
    return DEFAULT_MAX_DEGRADATION if max_degradation is None else max_degradation


def max_degradation_field():
    """The one pydantic field of ``max_degradation`` (QuantizeConfig, TuneConfig, a recipe's gates): None or >= 0.

    Example:
        >>> class Limits(BaseModel):
        ...     max_degradation: float | None = max_degradation_field()
    """
    from pydantic import Field

    return Field(None, ge=0, description=MAX_DEGRADATION_HELP)


def is_failed(artifact: Artifact) -> bool:
    """Whether ``artifact`` failed verification (its file is under failed/; it is never judged or recommended)."""
    return artifact.status == "failed"


def verification_gate(artifact: Artifact) -> Gate:
    """The gate every artifact must pass before any other: it loads and runs in its runtime (failed: value 0)."""
    failed = is_failed(artifact)
    return _gate("verified", artifact, 1, 0 if failed else 1, not failed, "runtime",
                 f"failed verification: {artifact.failure}" if failed else "loaded and ran in its runtime")


def is_candidate(artifact: Artifact) -> bool:
    """An artifact to judge and maybe recommend: anything but a baseline written beside the candidates."""
    return not is_failed(artifact) and not artifact.name.startswith(BASELINE_PREFIXES)


def is_compressed(artifact: Artifact) -> bool:
    """A candidate below fp32 (quantize and recipes gate these; their fp32 files are the speed baseline)."""
    return is_candidate(artifact) and artifact.precision != "fp32"


def fidelity_floor_check(fidelity: Fidelity | dict | None, floors: dict | None = None, unlabelled_only: bool = False) -> list[dict]:
    """Every floor an artifact's outputs miss: ``[{"output", "kind", "measure", "value", "floor"}]`` (empty: all kept).

    ``unlabelled_only``: skip outputs that labels judge (a labelled classifier beside an embedding head).
    ``fidelity``: an artifact's (compress.report.model.Fidelity) or as report.json holds it.
    """
    if not fidelity:
        return []
    outputs = [(o["name"], o["kind"], o.get("labelled"), o["measures"]) for o in fidelity.get("outputs", [])] if isinstance(
        fidelity, dict) else [(o.name, o.kind, o.labelled, o.measures) for o in fidelity.outputs]
    return [{"output": name, "kind": kind, **miss} for name, kind, labelled, measures in outputs
            if not (unlabelled_only and labelled) for miss in floor_shortfalls(kind, measures, floors)]


def _gate(name: str, artifact: Artifact, limit, value, passed: bool, judged_by: str, reason: str, **extra) -> Gate:
    from compress.report.model import Gate

    return Gate(name=name, artifact=artifact.name, limit=limit, value=value, passed=bool(passed), judged_by=judged_by,
                reason=reason, **extra)


def degradation_gate(artifact: Artifact, policy: GatePolicy) -> Gate:
    value, limit = artifact.metrics.degradation, policy.degradation_limit
    default = " (default limit)" if policy.max_degradation is None else ""
    passed = value <= limit + 1e-12
    return _gate("max_degradation", artifact, limit, value, passed, "labels",
                 f"metric loss {value:.4f} {'<=' if passed else '>'} {limit}{default}")


def floor_gate(artifact: Artifact, policy: GatePolicy, labelled: bool) -> Gate | None:
    """The fidelity floor gate over the outputs labels do not judge, named by the weakest; None when there are none."""
    fidelity = artifact.metrics.fidelity
    judged = [o for o in (fidelity.outputs if fidelity else []) if not (labelled and o.labelled) and o.kind in policy.floors]
    if not judged:
        return None
    (_, measure), output = min(((floor_margin(o.kind, o.measures, policy.floors), o) for o in judged), key=lambda pair: pair[0][0])
    value, limit = output.measures.get(measure), policy.floors[output.kind].get(measure)
    misses = fidelity_floor_check(fidelity, policy.floors, unlabelled_only=labelled)
    reason = ("; ".join(f"{m['kind']} {m['output']} {m['measure']} {m['value']:.4g} < {m['floor']}" for m in misses) if misses
              else f"weakest: {output.kind} {output.name} {measure} {value:.4g} >= {limit}")
    return _gate("fidelity_floor", artifact, limit, value, not misses, "fidelity", reason,
                 output=output.name, kind=output.kind, measure=measure)


def perplexity_gate(artifact: Artifact, policy: GatePolicy) -> Gate:
    """A decoder language model's gate: its perplexity increase over the float reference on held-out text, at most
    ``policy.max_degradation`` when given, else its precision's default (compress.lm.quality.DEFAULT_GATES); never
    passed without a generation having run."""
    from compress.lm.quality import DEFAULT_GATES

    lm = artifact.metrics.perplexity
    limit = policy.max_degradation if policy.max_degradation is not None else DEFAULT_GATES.get(artifact.precision, 0.15)
    value = lm.perplexity_increase
    if not lm.generation_ran:
        return _gate("max_perplexity_increase", artifact, limit, value, False, "perplexity",
                     f"no verdict: generation did not run ({getattr(lm, 'generation_error', None)})")
    passed = value is not None and value <= limit + 1e-12
    low, high = lm.ratio_interval
    shown = f"{value:+.2%}" if value is not None else "not finite"
    default = " (default for " + artifact.precision + ")" if policy.max_degradation is None else ""
    return _gate("max_perplexity_increase", artifact, limit, value, passed, "perplexity",
                 f"perplexity {shown} vs the float reference (ratio 95 % interval {_round(low)}..{_round(high)}) "
                 f"{'<=' if passed else '>'} {limit:+.2%}{default}")


def _round(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _measure_gate(artifact: Artifact, measure: str, limit: float) -> Gate:
    fidelity = artifact.metrics.fidelity
    values = [(o.measures[measure], o.name) for o in (fidelity.outputs if fidelity else []) if o.measures.get(measure) is not None]
    value, output = min(values) if values else (None, None)
    passed = value is not None and value >= limit
    reason = f"{measure} of {output} {value:.4g} {'>=' if passed else '<'} {limit}" if value is not None else f"no output has {measure}"
    return _gate(f"min_fidelity:{measure}", artifact, limit, value, passed, "fidelity", reason, output=output)


def evaluate_gates(artifacts: list[Artifact], policy: GatePolicy | None = None,
                   candidate: Callable[[Artifact], bool] = is_candidate) -> list[Gate]:
    """One gate entry per (gate, candidate artifact); each says what it judged by and why it passed or failed, judged
    by its figure's interval where it has one (compress.steps.resolve: passed, failed or undecided)."""
    from compress.report.model import Gate

    policy = policy or GatePolicy()
    if not policy.enabled:
        return []
    gates = []
    for artifact in (a for a in artifacts if candidate(a) and not is_failed(a)):
        labelled = artifact.metrics.degradation is not None
        if artifact.metrics.perplexity:
            gates.append(perplexity_gate(artifact, policy))
        if labelled:
            gates.append(degradation_gate(artifact, policy))
        floor = floor_gate(artifact, policy, labelled)
        if floor is not None:
            gates.append(floor)
        gates += [_measure_gate(artifact, m, limit) for m, limit in policy.min_fidelity.items()]
        gates += [Gate.model_validate(g) for g in [stream_gate(document(artifact), policy.floors)] if g is not None]
        if policy.max_size_bytes is not None:
            size, limit = artifact.size_bytes, policy.max_size_bytes
            gates.append(_gate("max_size_bytes", artifact, limit, size, size <= limit, "size", f"{size:,} bytes vs limit {limit:,}"))
        for target, limit in policy.max_latency_ms.items():
            entries = [e for e in artifact.latency if e.target.startswith(target) and e.batch == 1 and not e.skipped]
            value = entries[0].p50_ms if entries else None
            passed = value is not None and value <= limit
            gates.append(_gate("max_latency_ms", artifact, limit, value, passed, "latency",
                               f"p50 {value} ms vs limit {limit} ms on {target}", target=target, batch=1))
    documents = {a.name: document(a) for a in artifacts}  # compress.steps.resolve reads report.json's form
    return [Gate.model_validate(resolve_gate(g.model_dump(exclude_unset=True), documents[g.artifact], policy.floors))
            for g in gates]


def document(artifact) -> dict:
    """An Artifact as report.json holds it."""
    return artifact.model_dump(by_alias=True, exclude_unset=True)


def verdict(artifacts: list[Artifact], gates: list[Gate], policy: GatePolicy, candidate: Callable[[Artifact], bool] = is_candidate) -> Verdict:
    """What was judged and why, for report.json's ``verdict``: gates on/off, labels or fidelity, the failures in words."""
    from compress.report.model import Verdict

    judged = [a for a in artifacts if candidate(a) and not is_failed(a)]
    measured = [a for a in judged if a.metrics.fidelity]
    labelled = any(a.metrics.degradation is not None for a in measured)
    notes = []
    if not policy.enabled:
        return Verdict(gates="off", judged_by=[], summary="gates off (--no-gate): nothing was judged", notes=notes)
    if any(a.metrics.perplexity for a in judged):
        limit = (f"max_degradation {policy.max_degradation} (relative perplexity increase)" if policy.max_degradation
                 is not None else "the default perplexity increase of each precision")
        failures = [f"{g.artifact}: {g.reason}" for g in gates if not g.passed]  # perplexity: no intervals yet
        summary = (f"language model: judged by perplexity on held-out text vs the float reference, {limit}"
                   + ("; FAILED " + "; ".join(failures) if failures else "; every candidate passed"))
        return Verdict(gates="on", judged_by=sorted({g.judged_by for g in gates}), summary=summary, notes=notes)
    if not measured:
        return Verdict(gates="on", judged_by=[], summary="no data: nothing could be judged (pass --data)", notes=notes)
    judged_by = sorted({g.judged_by for g in gates})
    floors = "; ".join(f"{kind} " + ", ".join(f"{m} >= {v}" for m, v in policy.floors[kind].items())
                       for kind in sorted({o.kind for a in measured for o in a.metrics.fidelity.outputs
                                           if not (labelled and o.labelled)}))
    if labelled:
        head = f"labels: judged by max_degradation {policy.degradation_limit}" + (" (default)" if policy.max_degradation is None else "")
        head += f"; outputs without labels by fidelity floor {floors}" if floors else ""
    else:
        head = f"no labels: judged by fidelity floor {floors}"
        if policy.max_degradation is not None:
            notes.append(f"no labels: max_degradation {policy.max_degradation} cannot be measured; judged by fidelity instead")
    summary = head + summary_tail([g.model_dump() for g in gates])
    return Verdict(gates="on", judged_by=judged_by, summary=summary, notes=notes)


def failure_message(report: dict, run_dir) -> str | None:
    """The one line a failed run ends with (None when every gate passed)."""
    failed = [g for g in report["gates"] if not g["passed"]]
    if not failed:
        return None
    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    result = "" if first.get("outcome") == "undecided" else " failed"  # an undecided reason starts "undecided: "
    what = f"{first['artifact']} {first['reason']}" if first["name"] == "verified" else f"gate {first['name']}{result} for {first['artifact']}: {first['reason']}"
    return f"{what}{more} (artifacts are still in {run_dir})"


def judge(artifacts: list[Artifact], policy: GatePolicy,
          candidate: Callable[[Artifact], bool] = is_candidate) -> tuple[list[Gate], Verdict, Recommended]:
    """The report's ``gates`` (on the ``candidate`` artifacts), ``verdict`` (with the ``policy`` it judged by) and
    ``recommended``.

    Every artifact that may be recommended is judged by ``policy`` (even with gates off, even an fp32 export the gates
    skip): a file below its floors is never recommended. Call after latency is measured.
    """
    gates = evaluate_gates(artifacts, policy, candidate)
    judgement = verdict(artifacts, gates, policy, candidate)
    judgement.policy = asdict(policy)
    return gates, judgement, recommend_judged(artifacts, policy)


def recommend_judged(artifacts: list[Artifact], policy: GatePolicy) -> Recommended:
    """compress.steps.advice.recommend among the candidates, each judged by ``policy`` (gates on) first."""
    from compress.steps.advice import recommend

    pool = [a for a in artifacts if is_candidate(a)]
    return recommend(pool, evaluate_gates(pool, replace(policy, enabled=True), lambda a: True))


def policy_of(report) -> GatePolicy:
    """The GatePolicy a report (compress.report.model.Report) was judged by (recorded in ``verdict.policy``; default
    gates for older reports)."""
    return GatePolicy(**(getattr(report.verdict, "policy", None) or {}))
