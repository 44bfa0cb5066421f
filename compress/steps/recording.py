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
    from compress.report import write_report

    by_report: dict[Path, list[tuple[Path, dict]]] = {}
    for artifact, entry in entries:
        by_report.setdefault(Path(artifact).parent / "report.json", []).append((Path(artifact), entry))
    recorded = []
    for report_path, items in by_report.items():
        try:
            report = loads(report_path.read_text()) if report_path.is_file() else None
        except json.JSONDecodeError:
            report = None
        listed = {Path(a.get("path", "")).name: a for a in (report or {}).get("artifacts", [])}
        items = [(artifact, entry) for artifact, entry in items if artifact.name in listed]
        if not items:
            continue
        for artifact, entry in items:
            kept = listed[artifact.name].setdefault(key, [])
            kept[:] = [e for e in kept if any(e.get(f) != entry.get(f) for f in same)] + [entry]
        changed = _rejudge_speed(report, report_path.parent) if key == "latency" else None
        write_report(report_path.parent, report)
        _rerender(report_path.parent, report)
        recorded.append({"report": report_path, "changed": changed,
                         "recommended": ((report.get("recommended") or {}).get("local-cpu") if key == "latency" else None)})
    return recorded


def _rejudge_speed(report: dict, run_dir: Path) -> dict | None:
    """Every figure derived from a latency follows it: speedups, speed notes, the recommendation (an undecided one
    after its files are re-timed side by side: compress.steps.remeasure). A changed pick is said:
    ``{"from", "to", "why"}``, kept in ``recommended.changed``."""
    from compress.steps.advice import explain_speed
    from compress.steps.gates import policy_of, recommend_judged
    from compress.steps.remeasure import remeasure_undecided

    explain_speed(report["artifacts"])
    if not report.get("recommended"):
        return None
    before = (report["recommended"].get("local-cpu") or {}).get("artifact")

    def judge() -> dict:
        explain_speed(report["artifacts"])
        return recommend_judged(report["artifacts"], policy_of(report))

    report["recommended"], _ = remeasure_undecided(run_dir, report["artifacts"], judge)
    pick = report["recommended"].get("local-cpu") or {}
    if pick.get("artifact") == before:
        return None
    changed = {"from": before, "to": pick.get("artifact"), "why": pick.get("why", "no artifact was timed")}
    report["recommended"]["changed"] = changed
    return changed


def _rerender(run_dir: Path, report: dict) -> None:
    from compress.report.html import write_html
    from compress.report.markdown import write_markdown

    write_markdown(run_dir, report)
    write_html(run_dir, report)


def record_latencies(entries: list[tuple[Path, dict]]) -> list[dict]:
    """Add (or replace: same target, runtime, batch, threads) each ``(artifact, entry)`` latency in the report.json
    next to the artifact, each report judged once on all of them (see :func:`record_entries`)."""
    return record_entries(entries, "latency", LATENCY_KEY)


def record_tokens(artifact: Path, tokens: dict) -> Path | None:
    """Put a decoder language model's token metrics (compress.steps.lm_verify.measure_tokens) into its entry of the
    report.json next to it (replacing the ones it had), judge the recommendation again and re-render; None when no
    report lists it."""
    from compress.report import write_report
    from compress.steps.gates import policy_of, recommend_judged

    report_path = Path(artifact).parent / "report.json"
    try:
        report = loads(report_path.read_text()) if report_path.is_file() else None
    except json.JSONDecodeError:
        return None
    listed = {Path(a.get("path", "")).name: a for a in (report or {}).get("artifacts", [])}
    if Path(artifact).name not in listed:
        return None
    listed[Path(artifact).name]["tokens"] = tokens
    if report.get("recommended"):
        report["recommended"] = recommend_judged(report["artifacts"], policy_of(report))
    write_report(report_path.parent, report)
    _rerender(report_path.parent, report)
    return report_path


LATENCY_KEY = ("target", "runtime", "batch", "threads")  # a new entry replaces the one that agrees on these
