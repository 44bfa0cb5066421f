"""`python -m bench` (or `make bench`): every seed model vs the tools users would otherwise pick.

Prints one table per model, writes bench/results/latest.json and bench/results/latest.md.
Options: --models a,b  --runs N (timed runs per variant and batch, interleaved)

Every latency in the tables and in the recommendation lines is one measurement (bench.suite.interleaved_timing): in
this process, interleaved, on test samples, onnxruntime spinning off; the output says so (``timing`` in the JSON).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import peers
from bench.suite import BATCHES, bench_model, timing_conditions
from compress.steps.benchmark import describe_conditions
from compress.backends.onnx.cpu_features import cpu_int8_features
from compress.zoo import ZOO

RESULTS = Path(__file__).parent / "results"
WIN_KEYS = (("degradation", "metric loss", ".4f"), ("size_bytes", "bytes", ",d"),
            *((f"p50_ms_b{b}", f"p50 at batch {b} ms", ".3f") for b in BATCHES))
OLDER_RUN = ("Timed before the suite recorded its conditions: the table in-process and interleaved, while a "
             "recommendation line quotes compress's own timing (a child process, random inputs); rerun `python -m bench`.")
MARGIN = 0.05  # differences under 5 % are noise on this machine
COLUMNS = ["variant", "runtime", "metric", "degr.", "bytes", "x limit", *[f"p50 b{b} ms" for b in BATCHES], *[f"vs fp32 b{b}" for b in BATCHES]]


def _cells(row: dict) -> list[str]:
    return [row["variant"], row["runtime"], f"{row['metric']:.4f}", f"{row['degradation']:+.4f}", f"{row['size_bytes']:,}",
            f"{row['size_vs_limit']:.2f}", *[f"{row[f'p50_ms_b{b}']:.3f}" for b in BATCHES], *[f"{row[f'vs_best_fp32_b{b}']:.2f}x" for b in BATCHES]]


def where_not_beaten(rows: list[dict]) -> list[str]:
    """Where a baseline int8 variant does better than compress's recommended file for the same runtime."""
    lines = []
    for ours in (r for r in rows if r["variant"].startswith("compress-") and r["variant"].endswith("*")):
        for other in (r for r in rows if r["runtime"] == ours["runtime"] and not r["variant"].startswith(("compress-", "fp32-"))):
            better = [f"{label} ({other[key]:{fmt}} vs {ours[key]:{fmt}})" for key, label, fmt in WIN_KEYS
                      if _better(key, other[key], ours[key])]
            if better:
                lines.append(f"{other['variant']} beats {ours['variant'].rstrip('*')} on " + ", ".join(better))
    return lines


def _better(key: str, theirs: float, ours: float) -> bool:
    """A metric loss lower at the precision shown (it can be negative, and a sample is its unit); a size or latency
    lower by more than MARGIN."""
    if key == "degradation":
        return round(theirs, 4) < round(ours, 4)
    return theirs < ours * (1 - MARGIN)


def markdown(results: dict) -> str:
    load = f"load average {results['machine'].get('loadavg_1m_at_start', '?')} → {results['machine'].get('loadavg_1m_at_end', '?')}"
    if results["machine"].get("note"):
        load += f"; {results['machine']['note']}"
    lines = [f"Measured {results['date']} on {results['machine']['description']} ({load}; `python -m bench --runs {results['runs']}`). "
             "`degr.` is the metric loss vs fp32 torch on the test split (positive = worse); `x limit` is the file size over "
             "parameters × bits / 8; `vs fp32` is the median latency over the best fp32 runtime's, timed interleaved in one run. `compress-*` rows run the model's shipped recipe (recipes/<model>.yaml); `*` marks the artifact compress recommends for that format.", "",
             timing_line(results), ""]
    if results.get("peers"):
        lines[-1:-1] = ["", "Peer quantizers, each in its own venv (bench/peers): " + "; ".join(results["peers"].values()) + "."]
    for model in results["models"]:
        lines += [f"### {model['model']} ({model['parameters']:,} parameters, {model['dataset']}, {model['test_samples']} test samples)", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(row)) + " |" for row in model["rows"]]
        lines += [f"- {f['variant']} failed: {f['error']}" for f in model["failures"]]
        lines += [f"- {note}" for note in model.get("notes", [])]
        lines += [f"- {OLDER_RUN}"] if results.get("timing") and not model.get("timing") else []
        lines += [f"- not beaten: {line}" for line in where_not_beaten(model["rows"])]
        lines.append("")
    return "\n".join(lines)


def timing_line(results: dict) -> str:
    """How every latency of the run was taken, in one line (one method for the tables and the recommendations)."""
    timing = results.get("timing")
    if not timing:
        return OLDER_RUN
    return (f"Every latency here (tables and recommendation lines) is one measurement: {describe_conditions(timing)}. "
            "Spinning is off (onnxruntime's session.intra_op/inter_op.allow_spinning = 0, OMP_WAIT_POLICY=PASSIVE for "
            "torch) because the runtimes share the cores: a spinning runtime starves the next one (p90 10-20x p50 on 2 cores). "
            "compress's recommendation is re-judged on these same timings.")


def _merged_with_earlier(models: list[dict]) -> list[dict]:
    """A run of some models (--models) keeps the other models' rows from the last full run."""
    latest = RESULTS / "latest.json"
    fresh = {m["model"] for m in models}
    kept = [m for m in json.loads(latest.read_text())["models"] if m["model"] not in fresh] if latest.exists() else []
    return sorted(kept + models, key=lambda m: list(ZOO).index(m["model"]))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo names")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    console = Console()
    features = cpu_int8_features()
    results = {"date": datetime.date.today().isoformat(), "runs": args.runs, "timing": timing_conditions(args.runs),
               "machine": {"description": f"{platform.machine()}, {features.get('model', 'CPU')}, "
                                          f"{'VNNI' if features.get('avx512_vnni') or features.get('avx_vnni') else 'no VNNI'}",
                           "cpu_features": features, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
               "peers": {peer: peers.version(peer) for peer in peers.PEERS}, "models": []}
    console.print(timing_line(results))
    for reason in filter(None, map(peers.missing, peers.PEERS)):
        console.print(f"[yellow]{reason}[/]: its rows are left out")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            console.rule(name)
            model = bench_model(name, args.runs, Path(workdir))
            results["models"].append(model)
            table = Table(title=f"{name}: {model['parameters']:,} parameters")
            for column in COLUMNS:
                table.add_column(column, justify="left" if column in ("variant", "runtime") else "right")
            for row in model["rows"]:
                table.add_row(*_cells(row))
            console.print(table)
            for failure in model["failures"]:
                console.print(f"[yellow]{failure['variant']} failed:[/] {failure['error']}")
            for note in model["notes"]:
                console.print(note)
    RESULTS.mkdir(exist_ok=True)
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["models"] = _merged_with_earlier(results["models"])
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(results))
    console.print(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
