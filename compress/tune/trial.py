"""One trial: build the candidate the parameters describe, verify it in its runtime, return the measurements.

A plain function of picklable arguments, so a local process or a Ray task can run it.

Example:
    >>> run_trial(TrialSpec(source="m.pt", data=None, params={"precision": "int8", ...}, ...))["degradation"]
    0.0028
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrialSpec:
    number: int
    source: str
    data: str | None
    params: dict
    ranked_layers: list[str]
    format: str
    out_dir: str
    seed: int = 0
    load_kwargs: dict = field(default_factory=dict)
    bench_runs: int = 50


def quantize_config_for(params: dict, ranked_layers: list[str], fmt: str, seed: int, bench_runs: int):
    from compress.quantize import QuantizeConfig

    return QuantizeConfig(formats=[fmt], precisions=[params["precision"]], calibration=params["calibration"],
                          calib_samples=params["calib_samples"], per_channel=params["per_channel"],
                          exclude=ranked_layers[: params["keep_float"]], include_fp32=False, bench_runs=bench_runs, seed=seed)


def prune_config_for(params: dict):
    if params.get("prune", "none") == "none":
        return None
    from compress.passes.prune import PruneConfig

    return PruneConfig(method=params["prune"], sparsity=params["sparsity"], finetune_epochs=params["finetune_epochs"])


def run_trial(spec: TrialSpec) -> dict:
    import torch

    from compress.model import load_model
    from compress.quantize import quantize

    torch.set_num_threads(1)
    handle = load_model(spec.source, **spec.load_kwargs)
    prune = prune_config_for(spec.params)
    if prune is not None:
        from compress.data import resolve_data
        from compress.passes.prune import apply as prune_apply

        name = spec.data or handle.dataset["name"]
        handle = prune_apply(handle, prune, resolve_data(name).split((handle.dataset or {}).get("split_seed", spec.seed)))
    config = quantize_config_for(spec.params, spec.ranked_layers, spec.format, spec.seed, spec.bench_runs)
    out = Path(spec.out_dir) / f"trial-{spec.number:04d}"
    report = quantize(handle, config, spec.data, out).report
    artifact = report["artifacts"][-1]
    latency = next((l["p50_ms"] for l in artifact["latency"] if l.get("batch") == 1 and l.get("p50_ms") is not None and not l.get("emulated")), None)
    return {"number": spec.number, "params": spec.params, "degradation": artifact["metrics"]["degradation"],
            "size_bytes": artifact["size_bytes"], "p50_ms": latency, "artifact": str(out / artifact["path"]),
            "report": str(out / "report.json"), "techniques": artifact["techniques"], "sha256": artifact["sha256"]}
