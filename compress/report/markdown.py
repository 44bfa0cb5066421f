"""report.md: the same facts as report.json, as tables for people.

Example:
    >>> write_markdown("runs/mnist", report)
"""
from __future__ import annotations

from pathlib import Path

from compress.io import write_text_atomic


def _metric(task: dict | None) -> str:
    return "-" if not task else f"{task['name']} {task['value']:.4f}"


def _num(value, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def artifact_rows(report: dict) -> list[list[str]]:
    rows = []
    for a in report["artifacts"]:
        fid = a["metrics"].get("fidelity") or {}
        lat = next((l for l in a["latency"] if l.get("batch") == 1 and l.get("p50_ms") is not None and not l.get("emulated")), None)
        rows.append([
            a["name"], a["format"], a["precision"], f"{a['size_bytes']:,}", _metric(a["metrics"]["task"]),
            _num(a["metrics"]["degradation"]), _num(fid.get("top1_agreement")), _num(fid.get("sqnr_db"), "{:.1f}"),
            _num(lat["p50_ms"] if lat else None, "{:.3f}"), _num(a.get("speedup_vs_fp32"), "{:.2f}x"), ", ".join(a["verified_in"]),
        ])
    return rows


ARTIFACT_COLUMNS = ["artifact", "format", "precision", "bytes", "metric", "degradation", "top-1 agree", "SQNR dB",
                    "p50 ms (b=1)", "vs fp32", "verified in"]


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    source, dataset, ref = report["source"], report["dataset"], report["reference"]
    parts = [
        f"# compress report ({report.get('command', 'run')})",
        f"- source: `{source['path']}` ({source['format']}, sha256 `{source['sha256'][:12]}…`)",
        f"- data: {dataset['name']} {dataset['split']} split, {dataset['samples']} samples" if dataset else "- data: **none** (random calibration; no accuracy claim)",
        f"- reference: {_metric(ref['metrics'].get('task'))}, {ref['size_bytes']:,} bytes",
        f"- created {report['created']} by compress {report['tool']['version']}; passed: **{report['passed']}**",
        "",
        "## Artifacts",
        _table(ARTIFACT_COLUMNS, artifact_rows(report)),
    ]
    recommended = report.get("recommended") or {}
    if recommended.get("local-cpu"):
        parts += ["", "## Recommended for this CPU", f"**{recommended['local-cpu']['artifact']}**: {recommended['local-cpu']['why']}"]
        for fmt, pick in (recommended.get("by_format") or {}).items():
            if pick:
                parts.append(f"- {fmt}: {pick['artifact']}")
    if report["gates"]:
        parts += ["", "## Gates", _table(["gate", "artifact", "limit", "value", "passed"],
                  [[g["name"], str(g.get("artifact")), str(g["limit"]), _num(g["value"]), "yes" if g["passed"] else "**NO**"] for g in report["gates"]])]
    notes = [(a["name"], n) for a in report["artifacts"] for n in a.get("notes", [])] + [("run", n) for n in report.get("notes", [])]
    if notes:
        parts += ["", "## Notes"] + [f"- {name}: {note}" for name, note in notes]
    if report.get("preflight"):
        parts += ["", "## Pre-flight"] + [f"- [{f['severity']}] {f['format']}: {f['message']} — {f['suggestion']}" for f in report["preflight"]]
    if report.get("sensitivity"):
        parts += ["", "## Layer sensitivity (quantizing one layer alone)",
                  _table(["layer", "SQNR dB", "top-1 agree"], [[r["layer"], _num(r.get("sqnr_db"), "{:.1f}"), _num(r.get("top1_agreement"))] for r in report["sensitivity"]])]
    return "\n".join(parts) + "\n"


def write_markdown(run_dir: str | Path, report: dict) -> Path:
    path = Path(run_dir) / "report.md"
    write_text_atomic(path, render_markdown(report))
    return path
