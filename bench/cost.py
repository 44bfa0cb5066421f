"""`python -m bench.cost`: what `compress quantize` costs, wall and CPU time, end to end and per phase.

Each model runs through ``python -m compress.cli quantize MODEL --out DIR`` with the default settings (formats
onnx,tflite, int8, latency bench on) as a child process: wall time by ``time.perf_counter``, CPU time (user +
system, every thread and child) by ``resource.getrusage(RUSAGE_CHILDREN)``. Per-phase times come from the run's
report.json ``timings`` ({phase, wall_s, cpu_s}) where compress writes them. Models: zoo checkpoints (2 epochs,
cached) and two built in code with random weights (bench/cost_models.py: a ~20M-parameter BERT-like encoder and a
3-layer LSTM encoder), which get compress's random inputs (no ``--data``). Targets are the speed issue's, for a quiet
2-core machine; the load average at start and end is recorded beside them.
Writes bench/results/cost.json and cost.md (``python -m bench.pages`` puts the table in docs/benchmarks.md).
``--quick`` builds the code models small (2 × 128 encoder, 128-wide LSTM), prints, and writes nothing.

Example:
    $ python -m bench.cost                                  # every model, several minutes
    $ python -m bench.cost --models mnist_cnn,lstm_encoder --quick
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
ZOO_MODELS = ("mnist_cnn", "cnn64", "transformer")
TARGET_S = {"mnist_cnn": 15, "cnn64": 15, "transformer": 15, "bert_encoder": 60, "lstm_encoder": 180}
ZOO_EPOCHS = 2
SHOWN_PHASES = 3  # the slowest phases named per model


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_quantize(model: Path, out: Path, timeout_s: float) -> dict:
    """Run ``compress quantize model --out out`` as a child; its exit code, wall and CPU seconds, and phases if reported.

    >>> timed_quantize(Path("mnist_cnn.pt"), Path("/tmp/run"), 600)["wall_s"]
    9.8
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cpu_before, start = _cpu_seconds(), time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(model), "--out", str(out)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout_s)
        exit_code, tail = done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        exit_code, tail = None, [f"killed after {timeout_s:.0f} s"]
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_before
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    phases = [{"phase": t["phase"], "wall_s": round(t["wall_s"], 2), "cpu_s": round(t["cpu_s"], 2)} for t in (report.get("timings") or {}).get("phases", [])]
    return {"exit_code": exit_code, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "phases": phases,
            "last_line": tail[0][:200] if exit_code not in (0, 1) and tail else None}


def _model_file(name: str, folder: Path, quick: bool) -> tuple[Path, int, str]:
    """(path, parameters, how it was made) of a zoo checkpoint or a model built in code."""
    if name in ZOO_MODELS:
        from compress.loading.model import load_model
        from compress.zoo import train_zoo_model

        path = train_zoo_model(name, epochs=ZOO_EPOCHS).path
        params = sum(p.numel() for p in load_model(path).module.parameters())
        return path, params, f"zoo checkpoint ({ZOO_EPOCHS} epochs), its dataset"
    from bench.cost_models import save_program

    path, params = save_program(name, folder, quick)
    return path, params, "torch.export .pt2, random weights and inputs"


def bench_model(name: str, workdir: Path, quick: bool, timeout_s: float) -> dict:
    path, params, source = _model_file(name, workdir, quick)
    timing = timed_quantize(path, workdir / f"run-{name}", timeout_s)
    target = TARGET_S[name]
    return {"model": name, "parameters": params, "source": source, "target_s": target,
            "met": timing["exit_code"] is not None and timing["wall_s"] <= target, **timing}


def slowest_phases(row: dict) -> str:
    """The SHOWN_PHASES slowest phases, like ``export-tflite 6.1 s · calibrate 2.0 s``; ``-`` when none were reported."""
    phases = sorted(row["phases"], key=lambda p: -p["wall_s"])[:SHOWN_PHASES]
    return " · ".join(f"{p['phase']} {p['wall_s']:.1f} s" for p in phases) or "-"


COLUMNS = ["model", "parameters", "wall s", "CPU s", "target s", "met", "slowest phases (wall)"]


def _cells(row: dict) -> list[str]:
    outcome = {0: "", 1: " (gate failed)", None: " (timed out)"}.get(row["exit_code"], f" (exit {row['exit_code']})")
    return [row["model"], f"{row['parameters']:,}", f"{row['wall_s']:.1f}{outcome}", f"{row['cpu_s']:.1f}", f"≤ {row['target_s']}",
            "met" if row["met"] else "not met", slowest_phases(row)]


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [f"Measured {results['date']} on {machine['description']} (load average {machine['loadavg_1m_at_start']} → "
             f"{machine['loadavg_1m_at_end']}; `python -m bench.cost`). `compress quantize MODEL --out DIR` with default "
             "settings (onnx,tflite, int8, latency bench) as a child process; CPU s is user + system of every thread. "
             "Targets are for a quiet 2-core machine; wall time includes waiting for a core, so with the load average above "
             "the core count it overstates a quiet machine's, CPU s much less.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in results["models"]]
    lines += [f"- {row['model']}: {row['source']}" for row in results["models"]]
    lines += [f"- {row['model']} ended with: {row['last_line']}" for row in results["models"] if row.get("last_line")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(TARGET_S), help=f"comma-separated, of {', '.join(TARGET_S)}")
    parser.add_argument("--quick", action="store_true", help="small code-built models; print only, write no results")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one quantize run may take before it is killed")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    if unknown := [n for n in names if n not in TARGET_S]:
        parser.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(TARGET_S)}")
    console = Console(width=160)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
               "machine": {"description": f"{platform.machine()}, {os.cpu_count()} cpus",
                           "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}, "models": []}
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as work:
        for name in names:
            console.rule(name)
            results["models"].append(row := bench_model(name, Path(work), args.quick, args.timeout))
            console.print(f"{name}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, exit {row['exit_code']}")
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    table = Table(title="compress quantize: wall and CPU time" + (" (--quick sizes)" if args.quick else ""))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "met", "slowest phases (wall)") else "right")
    for row in results["models"]:
        table.add_row(*_cells(row))
    console.print(table)
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cost.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "cost.md").write_text(markdown(results))
    console.print(f"wrote {RESULTS / 'cost.json'} and {RESULTS / 'cost.md'}")


if __name__ == "__main__":
    main()
