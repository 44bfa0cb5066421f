"""What tune leaves behind: the Pareto front (markdown table + plot) and the winner as a runnable recipe.

Example:
    >>> write_outputs(result, config, handle, data)      # pareto.md, pareto.png, recipe.yaml
"""
from __future__ import annotations

from pathlib import Path

import yaml

from compress.io import write_text_atomic
from compress.model import ModelHandle


def _row(record: dict) -> str:
    params = record.get("params", {})
    described = ", ".join(f"{k}={v}" for k, v in params.items())
    latency = "-" if record.get("p50_ms") is None else f"{record['p50_ms']:.3f}"
    return f"| {record['number']} | {record['size_bytes']:,} | {latency} | {record['degradation']:.4f} | {described} |"


def pareto_markdown(result, config) -> str:
    lines = [f"# compress tune: max degradation {config.max_degradation}, objective {config.objective}", ""]
    if result.best:
        lines.append(f"Best valid trial: #{result.best['number']} ({result.best['size_bytes']:,} bytes, degradation {result.best['degradation']:.4f}).")
    else:
        lines.append(f"**No trial met the constraint.** Closest: #{result.closest['number']} with degradation {result.closest['degradation']:.4f}." if result.closest else "**No trial finished.**")
    if result.baseline:
        lines.append(f"Plain int8 PTQ (trial #{result.baseline['number']}): {result.baseline['size_bytes']:,} bytes, "
                     f"p50 {result.baseline['p50_ms']:.3f} ms, degradation {result.baseline['degradation']:.4f}.")
    lines += ["", "## Pareto front (valid trials)", "", "| trial | bytes | p50 ms | degradation | configuration |", "|---|---|---|---|---|"]
    lines += [_row(r) for r in result.pareto]
    lines += ["", f"## All {len(result.trials)} completed trials", "", "| trial | bytes | p50 ms | degradation | configuration |", "|---|---|---|---|---|"]
    lines += [_row(r) for r in result.trials if "size_bytes" in r]
    return "\n".join(lines) + "\n"


def winning_recipe(record: dict, config, handle: ModelHandle, data: str | None) -> dict:
    """A recipe that `compress run` executes to reproduce the trial."""
    from compress.tune.trial import prune_config_for, quantize_config_for

    ranked = [t.split(":", 1)[1] for t in record.get("techniques", []) if t.startswith("keep-float:")]
    params = {**record["params"], "keep_float": len(ranked)}
    stages = []
    prune = prune_config_for(params)
    if prune is not None:
        stages.append({"prune": prune.model_dump(mode="json")})
    quantize = quantize_config_for(params, ranked, config.format, config.seed, 50).model_dump(mode="json")
    stages += [{"quantize": quantize}]
    return {
        "seed": config.seed,
        "model": {"source": handle.source_path},
        "data": {"name": data},
        "stages": stages,
        "targets": [config.target],
        "gates": {"max_degradation": config.max_degradation},
        "output": {"dir": "runs/tuned"},
    }


def write_outputs(result, config, handle: ModelHandle, data: str | None) -> None:
    from compress.report.plots import Point, tradeoff_plot

    out: Path = result.out_dir
    write_text_atomic(out / "pareto.md", pareto_markdown(result, config))
    points = [Point(f"#{r['number']}", r["size_bytes"] / 1024, -r["degradation"], "valid" if r["degradation"] <= config.max_degradation else "over limit")
              for r in result.trials if r.get("size_bytes") and r.get("degradation") is not None]
    if len(points) >= 2:
        (out / "pareto.png").write_bytes(tradeoff_plot(points, "file size (KB)", "-degradation (higher is better)", "tune trials"))
    chosen = result.best or result.closest
    if chosen and "params" in chosen:
        header = (f"# written by `compress tune` from trial #{chosen['number']}: {chosen['size_bytes']:,} bytes, "
                  f"degradation {chosen['degradation']:.4f}{'' if result.best else ' (did NOT meet the limit)'}\n")
        write_text_atomic(out / "recipe.yaml", header + yaml.safe_dump(winning_recipe(chosen, config, handle, data), sort_keys=False))
