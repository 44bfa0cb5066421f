"""The Optuna study: ask for parameters, run trials in parallel, tell results, keep the best valid model on disk.

Resumable: the study lives in ``<out>/study.db``; running tune again continues it.

Example:
    >>> result = tune(load_model("mnist_cnn.pt"), TuneConfig(max_degradation=0.005, budget="10m"), out_dir="runs/tune")
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
import torch

from compress.safety.io import write_json_atomic
from compress.loading.model import ModelHandle
from compress.steps.pipeline import Reference
from compress.safety.rundir import holds_run_dir
from compress.safety.jsonsafe import read_json
from compress.tune.config import TuneConfig, encode_dynamic_ops
from compress.tune.executors import open_executor
from compress.tune.remote import open_runner
from compress.tune.trial import TrialSpec

STUDY_NAME = "compress-tune"
MAX_REPEATS = 20  # consecutive proposals of already measured configurations: the search has converged, stop
BASELINE = {"precision": "int8", "calibration": "minmax", "calib_samples": 256, "per_channel": True, "keep_float": 0, "prune": "none",
            "dynamic_ops": "none"}


@dataclass
class TuneResult:
    out_dir: Path
    best: dict | None          # the best trial meeting the constraint (None: none did)
    closest: dict | None       # the trial nearest to meeting it, when none did
    baseline: dict | None      # plain int8 PTQ, measured in the same study
    pareto: list[dict]
    trials: list[dict]
    converged: bool = False    # stopped early: the sampler kept proposing configurations already measured


def _objectives(config: TuneConfig, result: dict) -> list[float]:
    size, latency = float(result["size_bytes"]), float(result["p50_ms"] or 1e9)
    return {"size": [size], "latency": [latency], "both": [size, latency]}[config.objective]


def _sample(trial: optuna.Trial, config: TuneConfig, ranked: list[str]) -> dict:
    """A trial's parameters; the calibration knobs are drawn for a precision with int8 compute only (a weight-only
    precision's own record holds its knobs)."""
    from compress.catalog import PRECISIONS

    space = config.search
    params = {"precision": trial.suggest_categorical("precision", space.precisions)}
    if PRECISIONS[params["precision"]].int8_compute:
        params.update(calibration=trial.suggest_categorical("calibration", space.calibrations),
                      calib_samples=trial.suggest_categorical("calib_samples", space.calib_samples),
                      per_channel=trial.suggest_categorical("per_channel", space.per_channel))
    params.update(keep_float=trial.suggest_int("keep_float", 0, min(space.keep_float_max, len(ranked))),
                  prune=trial.suggest_categorical("prune", space.prune_methods or ["none"]))
    if params["prune"] != "none":
        params["sparsity"] = round(trial.suggest_float("sparsity", *space.prune_sparsity, step=0.05), 2)
        params["finetune_epochs"] = trial.suggest_categorical("finetune_epochs", space.finetune_epochs)
    if params["precision"] == "int8" and config.format == "onnx":  # ONNX only; drawn last, the earlier draws are as before
        params["dynamic_ops"] = trial.suggest_categorical("dynamic_ops", [encode_dynamic_ops(ops) for ops in space.dynamic_op_types])
    return params


def _study(config: TuneConfig, out_dir: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=4, constant_liar=config.workers > 1)
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{out_dir / 'study.db'}", load_if_exists=True,
                                directions=["minimize"] * (2 if config.objective == "both" else 1), sampler=sampler)
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # interrupted last time
    alive = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    if not any(_is_baseline(t.system_attrs.get("fixed_params", t.params)) for t in alive) and _baseline_fits(config):
        study.enqueue_trial(BASELINE)
    return study


def _is_baseline(params: dict) -> bool:
    return {k: params.get(k) for k in BASELINE} == BASELINE


def _baseline_fits(config: TuneConfig) -> bool:
    """Plain int8 PTQ can only be measured as a trial when the search space contains it."""
    space = config.search
    return ("int8" in space.precisions and "minmax" in space.calibrations and 256 in space.calib_samples
            and True in space.per_channel and ([] in space.dynamic_op_types or config.format != "onnx")
            and ("none" in space.prune_methods or not space.prune_methods))


def _record(trial: optuna.trial.FrozenTrial) -> dict:
    return {"number": trial.number, **trial.user_attrs.get("result", {}), "state": trial.state.name}


def shortfall(record: dict, limit: float) -> float:
    """How far a trial is from its gates (<= 0: within them): the degradation over ``limit`` with labels, and how far
    the weakest unlabelled output is below its fidelity floor (``floor_gap``: 1 - value/floor); inf: nothing measured."""
    gaps = [record["degradation"] - limit] if record.get("degradation") is not None else []
    if record.get("floor_gap") is not None:
        gaps.append(record["floor_gap"])
    return max(gaps, default=float("inf"))


def feasible(records: list[dict], limit: float) -> list[dict]:
    """Trials within the degradation limit (labels) whose unlabelled outputs keep their fidelity floor (compress.steps.gates)."""
    return [r for r in records if "size_bytes" in r and shortfall(r, limit) <= 0 and not r.get("floor_failures")]


def _winner(config: TuneConfig, valid: list[dict], baseline: dict | None) -> dict | None:
    """size: the smallest; latency: the fastest; both: the smallest no slower than plain int8 PTQ (else the smallest)."""
    if config.objective == "latency":
        return min(valid, key=lambda r: (r["p50_ms"] or 1e9, r["size_bytes"]), default=None)
    if config.objective == "both" and baseline and baseline.get("p50_ms"):
        valid = [r for r in pareto_records(valid) if r["p50_ms"] is not None and r["p50_ms"] <= baseline["p50_ms"]] or valid
    return min(valid, key=lambda r: (r["size_bytes"], r["p50_ms"] or 1e9), default=None)


def _completed(study: optuna.Study) -> list[dict]:
    """Records of the completed trials, repeats of an earlier configuration left out."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [_record(t) for t in trials if "repeat_of" not in t.user_attrs.get("result", {})]


def _choose(study: optuna.Study, config: TuneConfig) -> tuple[list[dict], list[dict], dict | None, dict | None]:
    """``(records, valid, baseline, best)`` from the completed trials."""
    records = _completed(study)
    valid = feasible(records, config.degradation_limit)
    baseline = next((r for r in records if _is_baseline(r.get("params", {}))), None)
    return records, valid, baseline, _winner(config, valid, baseline)


def _keep(out_dir: Path, record: dict, name: str) -> None:
    """Copy a trial's artifact and report to ``<out>/<name>/`` (written aside, then swapped in); no-op when already there."""
    final = out_dir / name
    kept = final / "trial.json"
    if kept.is_file() and read_json(kept)["number"] == record["number"]:
        return
    staging = out_dir / f".{name}-new"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    shutil.copy2(record["artifact"], staging / Path(record["artifact"]).name)
    shutil.copy2(record["report"], staging / "report.json")
    write_json_atomic(staging / "trial.json", record)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def _reference(handle: ModelHandle, data: str | None, seed: int) -> Reference:
    """The original model on the test split: every trial's degradation and fidelity are measured against it."""
    from compress.data.plan import plan_data
    from compress.errors import UsageError
    from compress.steps.pipeline import measure_reference

    plan = plan_data(handle, data, 1, seed)
    if plan.synthetic:
        raise UsageError(f"{handle.source_path}: tune needs data to judge trials by (labels or fidelity); pass --data")
    return measure_reference(handle, plan)


@holds_run_dir("tune")
def tune(handle: ModelHandle, config: TuneConfig, data: str | None = None, out_dir: str | Path = "runs/tune",
         on_trial: Callable[[dict], None] | None = None, load_kwargs: dict | None = None) -> TuneResult:
    """Search until the budget ends; always keep the best valid model so far on disk."""
    from compress.tune.analysis import rank_layers

    deadline = None if config.budget_seconds is None else time.monotonic() + config.budget_seconds  # the whole command
    out_dir = Path(out_dir).resolve()  # trials may run in other processes or on Ray workers
    reference = _reference(handle, data, config.seed)
    study = _study(config, out_dir)
    ranked = rank_layers(handle, data, out_dir, config)
    remaining = None if config.trials is None else max(0, config.trials - len(_completed(study)))

    submitted = repeats = 0
    started: dict[cf.Future, float] = {}
    slowest = [0.0]  # seconds of the slowest trial finished so far: what a new trial is expected to need

    def in_budget() -> bool:
        """Another trial fits: the budget's end is not before a trial as slow as the slowest so far would finish
        (the first trial always runs). A trial is never cut: it is sized, so the study ends within the budget plus
        the summary's retiming."""
        fits = deadline is None or submitted == 0 or time.monotonic() + slowest[0] < deadline
        return repeats < MAX_REPEATS and (remaining is None or submitted < remaining) and fits

    def finished(result: dict) -> None:
        _, _, _, best = _choose(study, config)
        if best is not None:
            _keep(out_dir, best, "best")
        if on_trial:
            on_trial(result)

    with open_executor(config.executor, config.workers, config.address) as pool:
        runner = open_runner(config.executor, pool, str(Path(handle.source_path).resolve()), data, out_dir)
        running: dict[cf.Future, optuna.Trial] = {}
        while running or in_budget():
            while len(running) < config.workers and in_budget():
                trial = study.ask()
                params = _sample(trial, config, ranked)
                earlier = _measured(study, params)
                if earlier is not None:  # the sampler proposed a configuration already measured: reuse, do not rerun
                    repeats += 1
                    repeat = {k: v for k, v in earlier.items() if k != "state"}
                    finished(_told(study, trial, {**repeat, "number": trial.number, "repeat_of": earlier["number"]}, config))
                    continue
                spec = TrialSpec(trial.number, str(Path(handle.source_path).resolve()), data, params, ranked, config.format,
                                 str(out_dir / "trials"), config.seed, load_kwargs or {}, reference=reference, target=config.target,
                                 threads=torch.get_num_threads())
                future = runner.submit(spec)
                running[future], started[future] = trial, time.monotonic()
                submitted, repeats = submitted + 1, 0
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in done:
                slowest[0] = max(slowest[0], time.monotonic() - started.pop(future))
                finished(_tell(study, running.pop(future), future, config, runner.land))
    return summarize(study, config, handle, data, out_dir, converged=repeats >= MAX_REPEATS)


def _measured(study: optuna.Study, params: dict) -> dict | None:
    """The result of an earlier completed (not repeated) trial with exactly these parameters."""
    return next((r for r in _completed(study) if r.get("params") == params), None)


def _tell(study: optuna.Study, trial: optuna.Trial, future: cf.Future, config: TuneConfig, land: Callable[[dict], dict]) -> dict:
    """Record a finished trial in the study (its files landed by ``land``); return its result (``error`` set when it failed)."""
    try:
        result = land(future.result())
    except Exception as exc:  # a failed candidate is a finding for the study, not the end of the search
        result = {"number": trial.number, "params": trial.params, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        trial.set_user_attr("result", result)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return result
    return _told(study, trial, result, config)


def _told(study: optuna.Study, trial: optuna.Trial, result: dict, config: TuneConfig) -> dict:
    trial.set_user_attr("result", result)
    trial.set_constraint("gates", min(shortfall(result, config.degradation_limit), 1.0))
    study.tell(trial, _objectives(config, result))
    return result


def summarize(study: optuna.Study, config: TuneConfig, handle: ModelHandle, data: str | None, out_dir: Path,
              converged: bool = False) -> TuneResult:
    """Pareto front table + plot, the winning configuration as a recipe, and the closest miss (kept in ``closest/``) when none is valid.

    With ``objective="both"`` the front and plain int8 PTQ are timed again side by side first: "no slower than PTQ"
    is then not decided by whatever else loaded the machine while each trial ran. When the trials were timed on
    different hosts (a Ray cluster), every valid trial is timed again here: figures from two machines are never ranked.
    """
    from compress.tune.outputs import write_outputs

    records, valid, baseline, _ = _choose(study, config)
    if config.objective != "size" and config.target == "local" and len(_hosts(valid)) > 1:  # p50s from two machines: retime here
        retime(valid, config.target)
    elif config.objective == "both" and baseline is not None:
        retime([*pareto_records(valid), baseline], config.target)
    best = _winner(config, valid, baseline)
    closest = None if valid else min((r for r in records if "size_bytes" in r), key=lambda r: shortfall(r, config.degradation_limit), default=None)
    if best is not None:
        _keep(out_dir, best, "best")
        shutil.rmtree(out_dir / "closest", ignore_errors=True)
    elif closest is not None:
        _keep(out_dir, closest, "closest")
    pareto = pareto_records(valid)
    result = TuneResult(out_dir, best, closest, baseline, pareto, records, converged)
    write_outputs(result, config, handle, data)
    write_json_atomic(out_dir / "tune.json", {"best": best, "closest": closest, "baseline": baseline, "pareto": pareto,
                                               "trials": records, "config": json.loads(config.model_dump_json())})
    return result


def _hosts(records: list[dict]) -> set[str]:
    """The machines that timed these trials (trials measured before compress recorded it count as this one)."""
    return {(r.get("measured_on") or {}).get("host", "") for r in records}


def retime(records: list[dict], target: str, rounds: int = 3, runs: int = 100) -> None:
    """Replace each record's ``p50_ms`` by the median of ``rounds`` interleaved timings (the trial's own is kept as ``trial_p50_ms``)."""
    from compress.steps.benchmark import benchmark_artifact
    from compress.safety.timing_lock import node_identity

    unique = list({r["number"]: r for r in records}.values())
    timings: dict[int, list[float]] = {r["number"]: [] for r in unique}
    for _ in range(rounds):
        for record in unique:
            p50 = benchmark_artifact(record["artifact"], target=target, runs=runs).get("p50_ms")
            timings[record["number"]] += [p50] if p50 is not None else []
    for record in (r for r in unique if timings[r["number"]]):
        record.setdefault("trial_p50_ms", record["p50_ms"])
        record["p50_ms"] = statistics.median(timings[record["number"]])
        record["measured_on"] = node_identity()


def pareto_records(records: list[dict]) -> list[dict]:
    """Valid trials no other valid trial beats on both size and latency."""
    def dominated(a: dict, b: dict) -> bool:
        return (b["size_bytes"] <= a["size_bytes"] and (b["p50_ms"] or 1e9) <= (a["p50_ms"] or 1e9)
                and (b["size_bytes"], b["p50_ms"]) != (a["size_bytes"], a["p50_ms"]))

    return sorted((a for a in records if not any(dominated(a, b) for b in records)), key=lambda r: r["size_bytes"])
