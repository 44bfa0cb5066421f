"""The Optuna study: ask for parameters, run trials in parallel, tell results, keep the best valid model on disk.

Resumable: the study lives in ``<out>/study.db``; running tune again continues it.

Example:
    >>> result = tune(load_model("mnist_cnn.pt"), TuneConfig(max_degradation=0.005, budget="10m"), out_dir="runs/tune")
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna

from compress.io import write_json_atomic
from compress.model import ModelHandle
from compress.tune.config import TuneConfig
from compress.tune.executors import open_executor
from compress.tune.trial import TrialSpec, run_trial

STUDY_NAME = "compress-tune"
BASELINE = {"precision": "int8", "calibration": "minmax", "calib_samples": 256, "per_channel": True, "keep_float": 0, "prune": "none"}


@dataclass
class TuneResult:
    out_dir: Path
    best: dict | None          # the best trial meeting the constraint (None: none did)
    closest: dict | None       # the trial nearest to meeting it, when none did
    baseline: dict | None      # plain int8 PTQ, measured in the same study
    pareto: list[dict]
    trials: list[dict]


def _objectives(config: TuneConfig, result: dict) -> list[float]:
    size, latency = float(result["size_bytes"]), float(result["p50_ms"] or 1e9)
    return {"size": [size], "latency": [latency], "both": [size, latency]}[config.objective]


def _sample(trial: optuna.Trial, config: TuneConfig, ranked: list[str]) -> dict:
    space = config.search
    params = {
        "precision": trial.suggest_categorical("precision", space.precisions),
        "calibration": trial.suggest_categorical("calibration", space.calibrations),
        "calib_samples": trial.suggest_categorical("calib_samples", space.calib_samples),
        "per_channel": trial.suggest_categorical("per_channel", space.per_channel),
        "keep_float": trial.suggest_int("keep_float", 0, min(space.keep_float_max, len(ranked))),
        "prune": trial.suggest_categorical("prune", space.prune_methods or ["none"]),
    }
    if params["prune"] != "none":
        params["sparsity"] = round(trial.suggest_float("sparsity", *space.prune_sparsity, step=0.05), 2)
        params["finetune_epochs"] = trial.suggest_categorical("finetune_epochs", space.finetune_epochs)
    return params


def _study(config: TuneConfig, out_dir: Path) -> optuna.Study:
    def constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
        return trial.user_attrs.get("constraint", [1.0])

    if config.objective == "both":
        sampler = optuna.samplers.NSGAIISampler(seed=config.seed, constraints_func=constraints)
    else:
        sampler = optuna.samplers.TPESampler(seed=config.seed, constraints_func=constraints, n_startup_trials=4)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{out_dir / 'study.db'}", load_if_exists=True,
                                directions=["minimize"] * (2 if config.objective == "both" else 1), sampler=sampler)
    for stale in study.get_trials(deep=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # interrupted last time
    if not study.trials:
        study.enqueue_trial(BASELINE)
    return study


def _record(trial: optuna.trial.FrozenTrial) -> dict:
    return {"number": trial.number, **trial.user_attrs.get("result", {}), "state": trial.state.name}


def _feasible(records: list[dict], limit: float) -> list[dict]:
    return [r for r in records if r.get("degradation") is not None and r["degradation"] <= limit]


def _keep_best(out_dir: Path, best: dict) -> None:
    """Copy the best valid artifact and its report to ``best/`` (written aside, then swapped in)."""
    staging = out_dir / ".best-new"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    shutil.copy2(best["artifact"], staging / Path(best["artifact"]).name)
    shutil.copy2(best["report"], staging / "report.json")
    write_json_atomic(staging / "trial.json", best)
    final = out_dir / "best"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def tune(handle: ModelHandle, config: TuneConfig, data: str | None = None, out_dir: str | Path = "runs/tune",
         on_trial: Callable[[dict], None] | None = None, load_kwargs: dict | None = None) -> TuneResult:
    """Search until the budget ends; always keep the best valid model so far on disk."""
    from compress.tune.analysis import rank_layers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = _study(config, out_dir)
    ranked = rank_layers(handle, data, out_dir, config)
    done = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    remaining = None if config.trials is None else max(0, config.trials - done)
    deadline = None if config.budget_seconds is None else time.monotonic() + config.budget_seconds

    def in_budget(submitted: int) -> bool:
        return (remaining is None or submitted < remaining) and (deadline is None or time.monotonic() < deadline)

    submitted = 0
    with open_executor(config.executor, config.workers, config.address) as pool:
        running: dict[cf.Future, optuna.Trial] = {}
        while running or in_budget(submitted):
            while len(running) < config.workers and in_budget(submitted):
                trial = study.ask()
                params = _sample(trial, config, ranked)
                spec = TrialSpec(trial.number, handle.source_path, data, params, ranked, config.format, str(out_dir / "trials"),
                                 config.seed, load_kwargs or {})
                running[pool.submit(run_trial, spec)] = trial
                submitted += 1
            finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED,
                                  timeout=None if deadline is None else max(1.0, deadline - time.monotonic() + 600))
            for future in finished:
                trial = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # a failed candidate is a finding for the study, not the end of the search
                    trial.set_user_attr("result", {"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                degradation = result["degradation"] if result["degradation"] is not None else 1.0
                trial.set_user_attr("result", result)
                trial.set_user_attr("constraint", [degradation - config.max_degradation])
                study.tell(trial, _objectives(config, result))
                records = [_record(t) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
                valid = _feasible(records, config.max_degradation)
                if valid:
                    best = min(valid, key=lambda r: _objectives(config, r))
                    if best["number"] == result["number"]:
                        _keep_best(out_dir, best)
                if on_trial:
                    on_trial(result)
    return summarize(study, config, handle, data, out_dir)


def summarize(study: optuna.Study, config: TuneConfig, handle: ModelHandle, data: str | None, out_dir: Path) -> TuneResult:
    """Pareto front table + plot, the winning configuration as a recipe, and the closest miss when none is valid."""
    from compress.tune.outputs import write_outputs

    records = [_record(t) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    valid = _feasible(records, config.max_degradation)
    best = min(valid, key=lambda r: _objectives(config, r)) if valid else None
    closest = None if valid else min(records, key=lambda r: r.get("degradation") if r.get("degradation") is not None else 9.0, default=None)
    baseline = next((r for r in records if {k: r.get("params", {}).get(k) for k in BASELINE} == BASELINE), None)
    pareto = pareto_records(valid)
    result = TuneResult(out_dir, best, closest, baseline, pareto, records)
    write_outputs(result, config, handle, data)
    write_json_atomic(out_dir / "tune.json", {"best": best, "closest": closest, "baseline": baseline, "pareto": pareto,
                                               "trials": records, "config": json.loads(config.model_dump_json())})
    return result


def pareto_records(records: list[dict]) -> list[dict]:
    """Valid trials no other valid trial beats on both size and latency."""
    def dominated(a: dict, b: dict) -> bool:
        return (b["size_bytes"] <= a["size_bytes"] and (b["p50_ms"] or 1e9) <= (a["p50_ms"] or 1e9)
                and (b["size_bytes"], b["p50_ms"]) != (a["size_bytes"], a["p50_ms"]))

    return sorted((a for a in records if not any(dominated(a, b) for b in records)), key=lambda r: r["size_bytes"])
