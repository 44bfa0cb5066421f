"""`python -m bench.fleet`: wall time of a fleet vs the same recipes one after another, on the same resources.

Four small recipes (mnist_cnn, 1 epoch, int8 ONNX + TFLite with their latency timed, so the per-host timing lock is
in play) run three ways: `run_fleet` with 1 local worker (one after another), with 2 local workers, and as Ray tasks
on a local Ray with 2 CPUs. Every way gets a fresh output folder; the zoo checkpoint is trained once beforehand so no
way pays for it. Writes bench/results/fleet.json (with the load average: the machine may be shared).

Example:
    $ python -m bench.fleet --recipes 4 --workers 2
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import yaml

RESULTS = Path(__file__).parent / "results"


def recipes(folder: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        recipe = {"seed": index, "model": {"source": "zoo:mnist_cnn", "epochs": 1}, "data": {"name": "digits28"},
                  "stages": [{"quantize": {"formats": ["onnx", "tflite"], "precisions": ["int8"], "bench_runs": 50,
                                           "calibration": ["minmax", "percentile"][index % 2]}}],
                  "targets": ["local"], "gates": {"max_degradation": 0.05}}
        path = folder / f"mnist-{index}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        paths.append(path)
    return paths


def main() -> None:
    from compress.recipe.fleet import run_fleet
    from compress.zoo import train_zoo_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    files = recipes(folder, args.recipes)
    for seed in range(args.recipes):  # trained once here: every way below reuses the cached checkpoints
        train_zoo_model("mnist_cnn", epochs=1, seed=seed)
    ways = {"one after another (1 local worker)": ("local", 1), f"fleet, {args.workers} local workers": ("local", args.workers),
            f"fleet, Ray with {args.workers} CPUs": ("ray", args.workers)}
    measured = []
    for label, (executor, workers) in ways.items():
        load = os.getloadavg()[0]
        result = run_fleet(files, folder / label.replace(" ", "_"), executor=executor, workers=workers)
        waits = [l["measured_on"]["wait_s"] for r in result.rows if "run_dir" in r
                 for a in json.loads((Path(r["run_dir"]) / "report.json").read_text())["artifacts"] for l in a["latency"]]
        measured.append({"way": label, "executor": executor, "workers": workers, "wall_s": result.wall_s,
                         "exit_codes": [r["exit_code"] for r in result.rows], "load_average_before": round(load, 2),
                         "timing_lock_wait_s_total": round(sum(waits), 2)})
        print(f"{label}: {result.wall_s:.1f} s (exit codes {measured[-1]['exit_codes']}, load {load:.1f})")
    document = {"date": datetime.date.today().isoformat(), "cpus": os.cpu_count(), "platform": platform.platform(),
                "recipes": args.recipes, "note": "the machine was shared with other jobs: see load_average_before",
                "ways": measured}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
