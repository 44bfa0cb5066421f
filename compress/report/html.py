"""report.html: one self-contained page (plots embedded as data URIs): the recommendation, tables, plots and the
environment (library versions, CPU model, load while timing).

Example:
    >>> write_html("runs/mnist", report)
"""
from __future__ import annotations

import base64
import html
import platform
from pathlib import Path

from compress.safety.io import write_text_atomic
from compress.steps.latency import document_p50 as device_p50, document_timing as device_timing
from compress.report.markdown import ARTIFACT_COLUMNS, Section, artifact_rows, technique_sections, timing_lines
from compress.report.plots import Point, latency_plot, layer_sparsity_plot, sensitivity_plot, tradeoff_plot

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.bad{color:#b00020;font-weight:bold}.good{color:#0a7d32}
.note{color:#7a5a00}img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
"""


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def trade_points(report: dict, cost: str, run_label: str = "") -> list[Point]:
    points = []
    for a in report["artifacts"]:
        task = a["metrics"].get("task")
        if not task:
            continue
        if cost == "size":
            x = a["size_bytes"] / 1024
        else:
            x = device_p50(a)
            if x is None:
                continue
        points.append(Point(f"{run_label}{a['name']}", x, task["value"], a["format"]))
    return points


def metric_name(reports: list[dict]) -> str:
    """The task metric of the reports by name (``accuracy``, ``r2``): what a trade-off plot's y axis shows."""
    return " / ".join(sorted({(r["reference"]["metrics"].get("task") or {}).get("name") for r in reports} - {None})) or "task metric"


def section_html(section: Section) -> str:
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in section.lines)
    tables = "".join(f"<h3>{html.escape(caption)}</h3>{html_table(columns, rows)}" for caption, columns, rows in section.tables)
    return f"<h2>{html.escape(section.title)}</h2>{lines}{tables}"


def plots_html(report: dict) -> str:
    parts = []
    for cost, label in (("size", "file size (KB)"), ("latency", "p50 latency at batch 1 (ms, local CPU)")):
        points = trade_points(report, cost)
        if len(points) >= 2:
            metric = metric_name([report])
            parts.append(img_tag(tradeoff_plot(points, label, f"{metric} on the test split", f"{metric} vs {cost}"), f"{metric} vs {cost}"))
    if report.get("sensitivity"):
        parts.append(img_tag(sensitivity_plot(report["sensitivity"]), "per-layer sensitivity"))
    if report.get("prune"):
        parts.append(img_tag(layer_sparsity_plot(report["prune"]["layers"]), "per-layer parameters before and after pruning"))
    timed = {a["name"]: device_timing(a) for a in report["artifacts"] if device_timing(a) is not None}
    if timed:
        parts.append(img_tag(latency_plot(timed), "latency distributions"))
    return "\n".join(parts)


def recommended_html(recommended: dict) -> str:
    """The Recommended section: the pick for this CPU and why, an undecided verdict, a changed pick, the pick per
    format, and every artifact left out with the reason.

    Example:
        >>> recommended_html(report["recommended"])[:36]
        '<h2 id="recommended">Recommended</h2>'
    """
    parts = ['<h2 id="recommended">Recommended</h2>']
    pick = recommended.get("local-cpu")
    if not pick:
        parts.append("<p>Nothing is recommended: no artifact passed its gates and was timed on this CPU.</p>")
    else:
        parts.append(f"<p><b>For this CPU: {html.escape(pick['artifact'])}</b> — {html.escape(pick['why'])}</p>")
        if pick.get("verdict"):
            parts.append(f'<p class="bad">{html.escape(pick["verdict"])}: not yet told apart from the fastest: '
                         f'{html.escape(", ".join(pick.get("undecided", [])))}</p>')
    changed = recommended.get("changed")
    if changed:
        parts.append(f'<p class="note">The pick changed: {html.escape(str(changed["from"]))} → {html.escape(str(changed["to"]))}: '
                     f'{html.escape(changed["why"])}</p>')
    rows = [[fmt, p["artifact"] if p else "-", p["why"] if p else "none passed its gates and was timed"]
            for fmt, p in (recommended.get("by_format") or {}).items()]
    if rows:
        parts.append("<h3>Per format</h3>" + html_table(["format", "artifact", "why"], rows))
    left_out = [[e["artifact"], e["why"]] for e in recommended.get("excluded", [])]
    left_out += [[n["artifact"], f"{n['why']} ({n.get('session')})"] for n in (pick or {}).get("not_compared", [])]
    if left_out:
        parts.append("<h3>Not recommended</h3>" + html_table(["artifact", "why"], left_out))
    return "".join(parts)


def environment_rows(report: dict) -> list[list[str]]:
    """What the report ran with: library versions (executorch among them), and the CPU, its count and the load
    average when each timing session measured (from the latency entries' ``measured_on``)."""
    versions = report.get("environment") or {}
    rows = [["python", versions.get("python", platform.python_version())], ["machine", platform.machine()],
            *[[k, str(v)] for k, v in versions.items() if k != "python"]]
    if "executorch" not in versions:
        rows.append(["executorch", "not recorded (not installed, or a report from before compress recorded it)"])
    seen = {}
    for artifact in report["artifacts"]:
        for entry in artifact.get("latency", []):
            where = entry.get("measured_on") or {}
            if where.get("cpu") is not None:
                seen.setdefault(where.get("session"), where)
    for session, where in seen.items():
        label = f" (timing session {session})" if len(seen) > 1 else ""
        rows += [[f"CPU{label}", f"{where['cpu'] or 'unknown model'}, {where.get('cpus')} cores"],
                 [f"load average, 1 min, when timed{label}", "-" if where.get("loadavg_1m") is None else f"{where['loadavg_1m']:.2f}"]]
    if not seen:
        timed = any(device_timing(a) for a in report["artifacts"])
        rows.append(["CPU and load", "not recorded with the timings (a report from before compress recorded them)" if timed
                     else "not recorded: nothing was timed in this run"])
    return rows


def render_html(report: dict) -> str:
    source, dataset, ref = report["source"], report["dataset"], report["reference"]
    task = ref["metrics"].get("task")
    recommended = recommended_html(report.get("recommended") or {})
    gates = ""
    if report["gates"]:
        rows = [[g["name"], g.get("artifact"), g.get("judged_by", "-"), g["limit"], g["value"], "passed" if g["passed"] else "FAILED",
                 g.get("reason", "")] for g in report["gates"]]
        gates = "<h2>Gates</h2>" + html_table(["gate", "artifact", "judged by", "limit", "value", "result", "why"], rows)
    summary = (report.get("verdict") or {}).get("summary")
    gates = (f"<p><b>Verdict:</b> {html.escape(summary)}</p>" if summary else "") + gates
    notes = "".join(f'<li class="note">{html.escape(a["name"])}: {html.escape(n)}</li>' for a in report["artifacts"] for n in a.get("notes", []))
    notes += "".join(f'<li class="bad">{html.escape(n)}</li>' for n in report.get("notes", []))
    status = '<span class="good">passed</span>' if report["passed"] else '<span class="bad">FAILED</span>'
    timing = "".join(f"<p>{html.escape(line.removeprefix('- '))}</p>" for line in ["How the p50 was timed:", *timing_lines(report)]) if timing_lines(report) else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>compress report: {html.escape(source['path'])}</title>
<style>{STYLE}</style></head><body>
<h1>compress report ({html.escape(report.get('command', 'run'))}) — {status}</h1>
<p>Source <code>{html.escape(source['path'])}</code> ({html.escape(source['format'])}), sha256 <code>{source['sha256'][:16]}…</code>.
{'Data: ' + html.escape(str(dataset['name'])) + f" {dataset['split']} split, {dataset['samples']} samples." if dataset else '<span class="bad">No data: no accuracy claim.</span>'}
Reference: {html.escape(f"{task['name']} {task['value']:.4f}") if task else '-'}, {ref['size_bytes']:,} bytes.</p>
{recommended}
<h2>Artifacts</h2>{html_table(ARTIFACT_COLUMNS, artifact_rows(report))}{timing}
{''.join(section_html(section) for section in technique_sections(report))}
{gates}
<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>
<h2>Plots</h2>{plots_html(report)}
<h2>Environment</h2>{html_table(["what", "value"], environment_rows(report))}
<p>Created {html.escape(report['created'])} by compress {html.escape(report['tool']['version'])}.</p>
</body></html>
"""


def write_html(run_dir: str | Path, report: dict) -> Path:
    path = Path(run_dir) / "report.html"
    write_text_atomic(path, render_html(report))
    return path
