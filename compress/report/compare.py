"""Put several run directories side by side: one table row per artifact, trade-off plots across runs.

Example:
    >>> html_text = compare_runs(["runs/ptq", "runs/prune-int8"])
"""
from __future__ import annotations

import html
from pathlib import Path

from compress.errors import UsageError
from compress.safety.jsonsafe import read_json
from compress.steps.latency import document_p50 as device_p50
from compress.report.contract import ReportInvalid, validate_report
from compress.report.html import STYLE, html_table, img_tag, metric_name, trade_points
from compress.report.plots import tradeoff_plot

COMPARE_COLUMNS = ["run", "artifact", "precision", "bytes", "metric", "degradation", "p50 ms (b=1)", "verified in"]


def load_run(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run directory (no report.json); give directories written by compress")
    report = read_json(path)
    try:
        validate_report(report)
    except ReportInvalid as exc:
        raise UsageError(f"{path}: {exc}") from None
    return report


def compare_rows(runs: dict[str, dict]) -> list[list[str]]:
    rows = []
    for label, report in runs.items():
        for a in report["artifacts"]:
            task = a["metrics"]["task"]
            rows.append([label, a["name"], a["precision"], f"{a['size_bytes']:,}", "-" if not task else f"{task['name']} {task['value']:.4f}",
                         "-" if a["metrics"]["degradation"] is None else f"{a['metrics']['degradation']:.4f}",
                         "-" if device_p50(a) is None else f"{device_p50(a):.3f}", ", ".join(a["verified_in"])])
    return rows


def data_warnings(runs: dict[str, dict]) -> list[str]:
    """Runs measured on different data are not comparable: say so, and name a recorded data file that changed since."""
    from compress.data.origin import recorded_data

    datasets = {name: report.get("dataset") for name, report in runs.items() if report.get("dataset")}
    warnings = [f"{name}: {warning}" for name, dataset in datasets.items() if (warning := recorded_data(dataset)[1])]
    seen = {(d.get("fingerprint"), d.get("split_seed")) for d in datasets.values()}
    if len(seen) > 1:
        which = ", ".join(f"{name}: {d['name']} ({d['samples']} samples, split seed {d.get('split_seed')})" for name, d in datasets.items())
        warnings.append(f"the runs were measured on different test data ({which}): metrics are not directly comparable")
    return warnings


def compare_runs(run_dirs: list[str | Path]) -> tuple[dict[str, dict], str]:
    """Load and validate every run; return them and a self-contained HTML page comparing them."""
    runs = {Path(d).name or str(d): load_run(d) for d in run_dirs}
    plots = []
    for cost, label in (("size", "file size (KB)"), ("latency", "p50 latency at batch 1 (ms)")):
        points = [p for name, report in runs.items() for p in trade_points(report, cost, f"{name}/")]
        if len(points) >= 2:
            metric = metric_name(list(runs.values()))
            plots.append(img_tag(tradeoff_plot(points, label, f"{metric} on the test split", f"{metric} vs {cost}, all runs"), f"compare {cost}"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>compress: comparing {len(runs)} runs</title><style>{STYLE}</style></head><body>
<h1>compress: {len(runs)} runs side by side</h1>{html_table(COMPARE_COLUMNS, compare_rows(runs))}<h2>Plots</h2>{''.join(plots)}
<p>Runs: {', '.join(html.escape(str(d)) for d in run_dirs)}</p></body></html>
"""
    return runs, page
