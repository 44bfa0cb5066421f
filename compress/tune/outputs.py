"""What tune leaves behind: the Pareto front (markdown table + plot) and the winner as a runnable recipe.

Example:
    >>> write_outputs(result, config, handle, data)      # pareto.md, pareto.png, recipe.yaml
"""
from __future__ import annotations

from pathlib import Path

import yaml

from compress.safety.io import write_text_atomic
from compress.loading.model import ModelHandle


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _degradation(record: dict) -> str:
    return "-" if record.get("degradation") is None else f"{record['degradation']:.4f}"


def _floor(record: dict) -> str:
    """The weakest unlabelled output relative to its fidelity floor (1.000: exactly at it)."""
    return "-" if record.get("floor_gap") is None else f"{1 - record['floor_gap']:.3f}x"


def quality(record: dict) -> str:
    """What a trial was judged by, in words: ``degradation 0.0040`` and/or ``fidelity 1.012x floor``."""
    parts = [f"degradation {_degradation(record)}"] if record.get("degradation") is not None else []
    parts += [f"fidelity {_floor(record)} floor"] if record.get("floor_gap") is not None else []
    return ", ".join(parts) or "not measured"


def _row(record: dict) -> str:
    described = ", ".join(f"{k}={v}" for k, v in record.get("params", {}).items())
    metric = "-" if record.get("metric") is None else f"{record['metric']:.4f}"
    cells = [record["number"], f"{record['size_bytes']:,}", _ms(record.get("p50_ms")), metric, _degradation(record), _floor(record), described]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _summary(label: str, record: dict) -> str:
    return f"{label} trial #{record['number']}: {record['size_bytes']:,} bytes, p50 {_ms(record.get('p50_ms'))} ms, {quality(record)}."


def judged_by(config) -> str:
    """The gates trials are held to: labels by the degradation limit, outputs without labels by their floors."""
    return f"degradation <= {config.degradation_limit} with labels, fidelity floors without"


def pareto_markdown(result, config) -> str:
    lines = [f"# compress tune: {judged_by(config)}; objective {config.objective}", ""]
    if result.best:
        lines.append(_summary("Winner (recipe.yaml, best/):", result.best))
    elif result.closest:
        lines.append(f"**No trial met the constraint.** {_summary('Closest (recipe.yaml, closest/):', result.closest)}")
    else:
        lines.append("**No trial finished.**")
    if result.baseline:
        lines.append("")
        lines.append(_summary("Plain int8 PTQ:", result.baseline))
    if result.converged:
        lines += ["", "The search converged: the sampler kept proposing configurations already measured, so it stopped early."]
    if any("trial_p50_ms" in r for r in result.pareto):
        lines += ["", "p50 on the front and for plain int8 PTQ: median of interleaved timings taken side by side after the search."]
    header = ["| trial | bytes | p50 ms | metric | degradation | weakest output / floor | configuration |", "|---|---|---|---|---|---|---|"]
    lines += ["", "## Pareto front (valid trials)", "", *header, *(_row(r) for r in result.pareto)]
    lines += ["", f"## All {len(result.trials)} completed trials", "", *header, *(_row(r) for r in result.trials if "size_bytes" in r)]
    return "\n".join(lines) + "\n"


def winning_recipe(record: dict, config, handle: ModelHandle, data: str | None) -> dict:
    """A recipe that `compress run` executes to reproduce the trial."""
    from compress.tune.trial import prune_config_for, quantize_config_for

    ranked = [t.split(":", 1)[1] for t in record.get("techniques", []) if t.startswith("keep-float:")]
    params = {**record["params"], "keep_float": len(ranked)}
    stages = []
    prune = prune_config_for(params, config.seed)
    if prune is not None:
        stages.append({"prune": prune.model_dump(mode="json")})
    quantize = quantize_config_for(params, ranked, config.format, config.seed, 50).model_dump(mode="json")
    stages += [{"quantize": quantize}]
    return {
        "seed": config.seed,
        "model": {"source": str(Path(handle.source_path).resolve())},
        "data": {"name": data},
        "stages": stages,
        "targets": [config.target],
        "gates": {"max_degradation": config.max_degradation} if config.max_degradation is not None else {},
        "output": {"dir": "runs/tuned"},
    }


def write_outputs(result, config, handle: ModelHandle, data: str | None) -> None:
    from compress.report.plots import Point, tradeoff_plot

    out: Path = result.out_dir
    write_text_atomic(out / "pareto.md", pareto_markdown(result, config))
    from compress.tune.search import feasible

    valid = [r for r in feasible(result.trials, config.degradation_limit) if r.get("p50_ms")]
    baseline = result.baseline if result.baseline and result.baseline.get("p50_ms") else None
    shown = valid + ([baseline] if baseline is not None and all(r is not baseline for r in valid) else [])
    group = {id(result.best): "winner", id(baseline): "baseline: plain int8 PTQ"}
    points = [Point(f"#{r['number']}", r["size_bytes"] / 1024, -r["p50_ms"], group.get(id(r), "valid")) for r in shown]
    title = f"{len(valid)} valid trial{'s' * (len(valid) != 1)} ({judged_by(config)}), baseline ringed"
    (out / "pareto.png").write_bytes(tradeoff_plot(points, "file size (KB)", "-p50 latency at batch 1 (ms; higher is faster)", title))
    chosen = result.best or result.closest
    if chosen and "params" in chosen:
        header = (f"# written by `compress tune` from trial #{chosen['number']}: {chosen['size_bytes']:,} bytes, "
                  f"{quality(chosen)}{'' if result.best else ' (did NOT meet the gates)'}\n")
        write_text_atomic(out / "recipe.yaml", header + yaml.safe_dump(winning_recipe(chosen, config, handle, data), sort_keys=False))
