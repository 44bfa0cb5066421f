"""One trial: build the candidate the parameters describe, verify it in its runtime, return the measurements.

A plain function of picklable arguments, so a local process or a Ray task can run it.

Example:
    >>> run_trial(TrialSpec(source="m.pt", data=None, params={"precision": "int8", ...}, ...))["degradation"]
    0.0028
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compress.steps.pipeline import Reference
from compress.catalog import technique_label


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
    reference: Reference | None = None  # the original model, measured once: degradation and fidelity are against it
    target: str = "local"
    threads: int | None = None  # torch threads: fine-tuning results depend on them, so trials use what `compress run` gets


def quantize_config_for(params: dict, ranked_layers: list[str], fmt: str, seed: int, bench_runs: int):
    from compress.passes.quantize import QuantizeConfig
    from compress.tune.config import decode_dynamic_ops

    drawn = {knob: params[knob] for knob in ("calibration", "calib_samples", "per_channel") if knob in params}  # int8 compute
    return QuantizeConfig(formats=[fmt], precisions=[params["precision"]], **drawn,
                          dynamic_op_types=decode_dynamic_ops(params.get("dynamic_ops", "none")),
                          exclude=ranked_layers[: params["keep_float"]], include_fp32=False, bench_runs=bench_runs, seed=seed,
                          auto_fallback=False)  # the search itself explores the repairs


def prune_config_for(params: dict, seed: int):
    if params.get("prune", "none") == "none":
        return None
    from compress.passes.prune import PruneConfig

    return PruneConfig(method=params["prune"], sparsity=params["sparsity"], finetune_epochs=params["finetune_epochs"], seed=seed)


def run_trial(spec: TrialSpec) -> dict:
    import torch

    from compress.errors import EnvironmentFailure
    from compress.loading.model import load_model
    from compress.passes.quantize import quantize

    if spec.threads:
        torch.set_num_threads(spec.threads)
    handle = load_model(spec.source, **spec.load_kwargs)
    prune = prune_config_for(spec.params, spec.seed)
    if prune is not None:
        from compress.data.plan import model_splits
        from compress.passes.prune import apply as prune_apply

        handle = prune_apply(handle, prune, model_splits(handle, spec.data, spec.seed))
    config = quantize_config_for(spec.params, spec.ranked_layers, spec.format, spec.seed, spec.bench_runs)
    out = Path(spec.out_dir) / f"trial-{spec.number:04d}"
    artifact = quantize(handle, config, spec.data, out, reference=spec.reference).report["artifacts"][-1]  # as report.json holds it
    if artifact.get("status") == "failed":
        raise EnvironmentFailure(f"trial {spec.number}: {artifact['path']} {artifact['failure']}")
    metrics = artifact["metrics"]
    from compress.steps.gates import fidelity_floor_check
    from compress.data.outputs import floor_margin

    unlabelled = [o for o in (metrics["fidelity"] or {}).get("outputs", []) if not o.get("labelled")]
    timing = _timing(artifact, out, spec)
    return {"number": spec.number, "params": spec.params, "degradation": metrics["degradation"],
            "floor_failures": fidelity_floor_check(metrics["fidelity"], unlabelled_only=True),
            "floor_gap": 1 - min(floor_margin(o["kind"], o["measures"])[0] for o in unlabelled) if unlabelled else None,
            "metric": (metrics["task"] or {}).get("value"), "size_bytes": artifact["size_bytes"], "p50_ms": timing.get("p50_ms"),
            "measured_on": timing.get("measured_on"), "artifact": str(out / artifact["path"]), "report": str(out / "report.json"),
            "techniques": [technique_label(t) for t in [*handle.techniques, *artifact["techniques"]]], "sha256": artifact["sha256"]}


def _timing(artifact: dict, out: Path, spec: TrialSpec) -> dict:
    """The batch-1 latency entry on the tune target: the local timing quantize made, or a run on the remote target."""
    from compress.targets.base import target_class
    from compress.targets.local import LocalTarget

    if target_class(spec.target)[0] is not LocalTarget:
        from compress.steps.benchmark import benchmark_artifact

        return benchmark_artifact(out / artifact["path"], target=spec.target, runs=spec.bench_runs)
    from compress.steps.latency import document_timing

    return document_timing(artifact) or {}
