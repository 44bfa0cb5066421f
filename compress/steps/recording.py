"""Measurements recorded into the report of the run that made an artifact: the entry put in report.json (replacing
the one it supersedes), every figure derived from a latency judged again (speedups, speed notes, the
recommendation), report.md and report.html rendered again.

Example:
    >>> entry = benchmark_artifact("runs/mnist/model.int8.onnx", target="local")
    >>> record_latencies([(Path("runs/mnist/model.int8.onnx"), entry)])[0]["report"]
    PosixPath('runs/mnist/report.json')
"""
from __future__ import annotations

import json
from pathlib import Path

from compress.safety.jsonsafe import loads


def record_in_report(artifact: str | Path, key: str, entry: dict, same: tuple[str, ...]) -> Path | None:
    """Put ``entry`` into ``artifact``'s ``key`` list (``latency`` or ``parity``) in the report.json next to it,
    replacing an entry that agrees on the ``same`` fields; rewrite report.json/.md/.html. None when no report lists it."""
    recorded = record_entries([(Path(artifact), entry)], key, same)
    return recorded[0]["report"] if recorded else None


def record_entries(entries: list[tuple[Path, dict]], key: str, same: tuple[str, ...]) -> list[dict]:
    """:func:`record_in_report` for many files at once: each report.json is read and rewritten once, and its
    recommendation is judged once, on all the new figures together. One ``{"report", "changed", "recommended"}`` per
    report rewritten; ``changed`` (None when the pick stayed) says ``{"from", "to", "why"}``, also recorded in the
    report's ``recommended.changed``; ``recommended`` is the pick for the local CPU now (latency only)."""
    from compress.report import write_report_files

    by_report: dict[Path, list[tuple[Path, dict]]] = {}
    for artifact, entry in entries:
        by_report.setdefault(Path(artifact).parent / "report.json", []).append((Path(artifact), entry))
    recorded = []
    for report_path, items in by_report.items():
        report = _read(report_path)
        listed = {Path(a.path).name: a for a in (report.artifacts if report else [])}
        items = [(artifact, entry) for artifact, entry in items if artifact.name in listed]
        if not items:
            continue
        for artifact, entry in items:
            kept = [_document(e) for e in getattr(listed[artifact.name], key, None) or []]
            setattr(listed[artifact.name], key, [e for e in kept if any(e.get(f) != entry.get(f) for f in same)] + [entry])
        changed = _rejudge_speed(report, report_path.parent) if key == "latency" else None
        write_report_files(report_path.parent, report)
        pick = report.recommended.local_cpu if key == "latency" and report.recommended else None
        recorded.append({"report": report_path, "changed": changed, "recommended": _document(pick) if pick else None})
    return recorded


def _read(report_path: Path):
    """The report.json at ``report_path`` as compress.report.model.Report; None when there is none or it is not JSON.
    A report that breaks the contract is exit 2: it cannot be written back."""
    from compress.errors import UsageError
    from compress.report import ReportInvalid, read_report

    try:
        document = loads(report_path.read_text()) if report_path.is_file() else None
    except json.JSONDecodeError:
        return None
    if document is None:
        return None
    try:
        return read_report(document)
    except ReportInvalid as exc:
        raise UsageError(f"{report_path}: {exc}; it was not updated (pass --no-report to leave it alone)") from None


def _document(item) -> dict:
    """A report entry as report.json holds it (entries kept as extra fields are already dicts)."""
    return item if isinstance(item, dict) else item.model_dump(by_alias=True, exclude_unset=True)


def _rejudge_speed(report, run_dir: Path) -> dict | None:
    """Every figure derived from a latency follows it: speedups, speed notes, the recommendation (an undecided one
    after its files are re-timed side by side: compress.steps.remeasure). A changed pick is said:
    ``{"from", "to", "why"}``, kept in ``recommended.changed``."""
    from compress.steps.advice import explain_speed
    from compress.steps.gates import policy_of, recommend_judged
    from compress.steps.remeasure import remeasure_undecided

    explain_speed(report.artifacts)
    if not report.recommended:
        return None
    before = report.recommended.local_cpu.artifact if report.recommended.local_cpu else None
    policy = policy_of(report)

    def judge():
        explain_speed(report.artifacts)
        return recommend_judged(report.artifacts, policy)

    report.recommended, _ = remeasure_undecided(run_dir, report.artifacts, judge)
    pick = report.recommended.local_cpu
    if (pick.artifact if pick else None) == before:
        return None
    changed = {"from": before, "to": pick.artifact if pick else None, "why": pick.why if pick else "no artifact was timed"}
    report.recommended.changed = changed
    return changed


def record_latencies(entries: list[tuple[Path, dict]]) -> list[dict]:
    """Add (or replace: same target, runtime, batch, threads) each ``(artifact, entry)`` latency in the report.json
    next to the artifact, each report judged once on all of them (see :func:`record_entries`)."""
    return record_entries(entries, "latency", LATENCY_KEY)


def record_tokens(artifact: Path, tokens: dict) -> Path | None:
    """Put a decoder language model's token metrics (compress.steps.lm_verify.measure_tokens) into its entry of the
    report.json next to it (replacing the ones it had), judge the recommendation again and re-render; None when no
    report lists it."""
    from compress.report import write_report_files
    from compress.steps.gates import policy_of, recommend_judged

    report_path = Path(artifact).parent / "report.json"
    report = _read(report_path)
    listed = {Path(a.path).name: a for a in (report.artifacts if report else [])}
    if Path(artifact).name not in listed:
        return None
    listed[Path(artifact).name].tokens = tokens
    if report.recommended:
        report.recommended = recommend_judged(report.artifacts, policy_of(report))
    write_report_files(report_path.parent, report)
    return report_path


LATENCY_KEY = ("target", "runtime", "batch", "threads")  # a new entry replaces the one that agrees on these
