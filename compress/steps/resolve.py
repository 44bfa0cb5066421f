"""Gates judged with their confidence intervals: a gate passes only when the whole 95 % interval of its figure is on
the good side of the limit, fails when it is all on the bad side, and is ``undecided`` otherwise, saying how many
samples would resolve it. An undecided gate is not passed: the run exits 1 (like a failed gate) and the artifact is
never recommended, but repair is not tried (no file can fix a sample that is too small).

Example:
    >>> gate = resolve_gate(degradation_gate(artifact, policy), artifact, policy.floors)
    >>> gate["outcome"], gate["reason"]
    ('undecided', 'undecided: 360 test samples cannot resolve a 0.5 pt gate: metric loss 0.56 pt, 95 % interval -0.18 pt..0.56 pt; about 63,000 would')
"""
from __future__ import annotations

from compress.data.intervals import outcome, samples_needed, wilson

STREAM_FLOORS = {"decision_agreement": 0.98}  # streamed decisions that agree with eager PyTorch's (same as a classifier's top-1)


def resolve_gate(gate: dict, artifact: dict, floors: dict[str, dict[str, float]]) -> dict:
    """``gate`` (from compress.steps.gates) judged by its figure's interval where the artifact has one.

    Adds ``outcome`` (passed | failed | undecided), ``interval``, ``point_passed`` (the figure alone against the limit)
    and, when undecided, ``samples_needed``; ``passed`` is true only for ``outcome == "passed"``.
    """
    if "outcome" in gate:  # judged by its interval already (stream_gate)
        return gate
    if gate["name"] == "max_degradation":
        return _degradation(gate, artifact)
    if gate["name"] == "fidelity_floor":
        return _floor(gate, artifact, floors)
    if gate["name"].startswith("min_fidelity:"):
        return _min_fidelity(gate, artifact)
    return {**gate, "outcome": "passed" if gate["passed"] else "failed"}


def is_quality_failure(gate) -> bool:
    """A gate (compress.report.model.Gate, or its report.json form) that repair may fix: not passed, and not merely
    undecided with its figure on the good side."""
    gate = gate if isinstance(gate, dict) else gate.model_dump()
    return not gate["passed"] and not (gate.get("outcome") == "undecided" and gate.get("point_passed"))


def _judged(gate: dict, interval: dict | None, value, limit: float, higher_is_better: bool, what: str, figure: str,
            unit=lambda v: f"{v:.4g}") -> dict:
    """``gate`` with ``outcome``, ``interval`` and ``passed`` from the interval; when undecided, the reason in words."""
    if interval is None or value is None:
        return {**gate, "outcome": "passed" if gate["passed"] else "failed"}
    result = outcome(interval, limit, higher_is_better)
    gate = {**gate, "outcome": result, "interval": interval, "passed": result == "passed", "point_passed": gate["passed"]}
    shown = f"95 % interval {unit(interval['low'])}..{unit(interval['high'])}"
    if result != "undecided":
        return {**gate, "reason": f"{gate['reason']} ({shown}, {interval['samples']:,} samples)"}
    needed = samples_needed(value, interval, limit, interval["samples"])
    more = f"about {needed:,} would" if needed else "no sample size would: the figure sits on the limit"
    return {**gate, "samples_needed": needed,
            "reason": f"undecided: {interval['samples']:,} {what}: {figure} {unit(value)}, {shown}; {more}"}


def _degradation(gate: dict, artifact: dict) -> dict:
    metrics = artifact["metrics"]
    unit = (lambda v: f"{v * 100:.2g} pt") if (metrics.get("task") or {}).get("name") == "accuracy" else (lambda v: f"{v:.3g}")
    return _judged(gate, metrics.get("degradation_interval"), gate["value"], gate["limit"], False,
                   f"test samples cannot resolve a {unit(gate['limit'])} gate", "metric loss", unit)


def _floor(gate: dict, artifact: dict, floors: dict[str, dict[str, float]]) -> dict:
    """Every floor measure of every judged output by its interval: failed if one is decidedly below its floor, else
    undecided if one interval straddles its floor (that one is named), else passed."""
    labelled = artifact["metrics"]["degradation"] is not None
    checks = []
    for output in artifact["metrics"]["fidelity"]["outputs"]:
        if labelled and output.get("labelled"):
            continue
        for measure, limit in floors.get(output["kind"], {}).items():
            interval, value = (output.get("intervals") or {}).get(measure), output["measures"].get(measure)
            if interval is not None and value is not None:
                checks.append((outcome(interval, limit, True), output, measure, interval, limit))
    if not checks:
        return {**gate, "outcome": "passed" if gate["passed"] else "failed"}
    order = {"failed": 0, "undecided": 1, "passed": 2}
    checks.sort(key=lambda c: (order[c[0]], not (c[1]["name"] == gate.get("output") and c[2] == gate.get("measure"))))
    result, output, measure, interval, limit = checks[0]
    if result == "passed":
        return _judged(gate, interval, gate["value"], gate["limit"], True, "", "")
    point = {**gate, "passed": output["measures"][measure] >= limit, "limit": limit, "value": output["measures"][measure],
             "output": output["name"], "kind": output["kind"], "measure": measure}
    if result == "failed":
        return {**_judged(point, interval, point["value"], limit, True, "", ""), "reason": gate["reason"] + f" (95 % interval "
                f"{interval['low']:.4g}..{interval['high']:.4g}, {interval['samples']:,} samples)"}
    return _judged(point, interval, point["value"], limit, True,
                   f"test samples cannot resolve the {output['kind']} {output['name']} {measure} floor {limit:g}", measure)


def _min_fidelity(gate: dict, artifact: dict) -> dict:
    """A ``--min-fidelity``/recipe floor on one measure, judged by that output's interval of it."""
    measure = gate["name"].split(":", 1)[1]
    output = next((o for o in (artifact["metrics"].get("fidelity") or {}).get("outputs", []) if o["name"] == gate.get("output")), {})
    interval = (output.get("intervals") or {}).get(measure)
    return _judged(gate, interval, gate["value"], gate["limit"], True,
                   f"test samples cannot resolve the {output.get('name')} {measure} floor {gate['limit']:g}", measure)


def stream_gate(artifact: dict, floors: dict[str, dict[str, float]]) -> dict | None:
    """The gate on an artifact's streamed decisions (``metrics.stream``, compress.data.streams), judged with the
    Wilson interval of the decisions that agree; None when the model has no stream or no decision output."""
    stream = artifact["metrics"].get("stream")
    if not stream:
        return None
    limit = {**STREAM_FLOORS, **floors.get("stream", {})}["decision_agreement"]
    base = {"name": "stream_decisions", "artifact": artifact["name"], "limit": limit, "judged_by": "fidelity"}
    if stream.get("error"):
        return {**base, "value": None, "passed": False, "outcome": "failed", "reason": f"the stream did not run: {stream['error']}"}
    value = stream.get("decision_agreement")
    if value is None:
        return None
    interval = wilson(stream["decisions_agreed"], stream["decisions"])
    passed = value >= limit
    gate = {**base, "value": value, "passed": passed,
            "reason": f"streamed decisions agree {value:.4g} {'>=' if passed else '<'} {limit} over {stream['decisions']:,} decisions"}
    return _judged(gate, interval, value, limit, True, f"streamed decisions cannot resolve the decision_agreement floor {limit:g}",
                   "agreement")


def summary_tail(gates: list[dict]) -> str:
    """The end of the verdict's summary: the failed gates, then the undecided ones, or that every candidate passed."""
    failed = [f"{g['artifact']}: {g['reason']}" for g in gates if not g["passed"] and g.get("outcome") != "undecided"]
    undecided = [f"{g['artifact']}: {g['reason']}" for g in gates if g.get("outcome") == "undecided"]
    parts = (["FAILED " + "; ".join(failed)] if failed else []) + undecided  # an undecided reason starts "undecided: "
    return "; " + "; ".join(parts) if parts else "; every candidate passed"
