"""`python -m bench.zoo`: train every zoo model with its defaults and seed, and record what it reaches.

docs/benchmarks.md's zoo table comes from bench/results/zoo.json. Always trains afresh (and refreshes the checkpoint cache
that `python -m bench` then reuses). Training time is wall clock on this machine (noisy);
the metric is deterministic for a seed on one machine and torch build.
Options: --models a,b  --seed S
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> None:
    from compress.data.evaluate import metric_text
    from compress.zoo import ZOO, train_zoo_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        result = train_zoo_model(name, seed=args.seed, reuse=False)  # the train time is measured, never a cache hit
        entry = ZOO[name]
        parameters = sum(p.numel() for p in result.model.parameters())
        rows.append({"model": name, "dataset": entry.dataset, "epochs": entry.epochs, "seed": args.seed, "parameters": parameters,
                     "task": result.metrics["task"], "test_samples": result.metrics["samples"], "train_seconds": round(result.seconds, 1),
                     "loadavg_1m": round(os.getloadavg()[0], 2)})
        Console().print(f"{name}: {metric_text(result.metrics['task'], digits=4)} in {result.seconds:.0f} s")
    table = Table(title=f"zoo, seed {args.seed}")
    for column in ("model", "dataset", "parameters", "epochs", "test metric", "train s"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["model"], row["dataset"], f"{row['parameters']:,}", str(row["epochs"]), metric_text(row["task"], digits=4), f"{row['train_seconds']:.0f}")
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "zoo.json"
    document = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "rows": rows}
    if out.exists() and args.models != ",".join(ZOO):
        kept = [r for r in json.loads(out.read_text())["rows"] if r["model"] not in {row["model"] for row in rows}]
        document["rows"] = sorted(kept + rows, key=lambda r: list(ZOO).index(r["model"]))
    out.write_text(json.dumps(document, indent=2) + "\n")
    Console().print(f"wrote {out}")


if __name__ == "__main__":
    main()
