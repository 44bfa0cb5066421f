"""`compress tune` on a decoder language model: per-layer precision as the search space.

The layers are ranked once by measured sensitivity (compress.lm.sensitivity: each layer alone on the int4 grid, KL
of the next-token distribution on calibration text). Each trial then draws a precision, a rounding algorithm, a
block size, how many of the most sensitive layers stay in float and how many more at int8 (and, for ONNX, the
embedding table's precision), and runs `compress quantize` of the LM with exactly that plan (compress.passes.
quantize_lm, repair off: the search is the repair): the file is written, verified on held-out text in its runtime
and judged by its perplexity gate. The winner is the smallest (``--objective size``), the fastest decode at one
thread (``latency``) or the smallest no slower than the median passing trial (``both``); it is kept in
``<out>/best/`` with the tokenizer files beside it (so `compress generate` runs it), with ``tune.json``,
``pareto.md`` and a ``recipe.yaml`` whose quantize_lm stage rebuilds it. The search is not resumed: a new one in
the same folder replaces the trials of the last.

Example:
    >>> result = tune_lm(load_lm("SmolLM2-135M-Instruct.Q4_1.gguf"), TuneConfig(trials=8, objective="size"), "runs/tune")
    >>> result.best["params"]["keep_int8"], result.best["passed"]                        # doctest: +SKIP
    (2, True)
"""
from __future__ import annotations

import copy
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from compress.errors import UsageError
from compress.safety.io import write_json_atomic, write_text_atomic
from compress.safety.rundir import holds_run_dir

MAX_REPEATS = 20  # consecutive proposals of already measured configurations: the space is exhausted
KEPT_FILES = ("report.json", "tokenizer.json", "tokenizer_config.json", "lm_meta.json", "genai_config.json")


@dataclass
class LMTuneResult:
    out_dir: Path
    best: dict | None      # the winning trial among those that passed their perplexity gate
    closest: dict | None   # the trial nearest its gate, when none passed
    trials: list[dict]
    ranking: list[dict]    # layers, most sensitive first, with their KL


def check_lm_tune(config, data: str | None) -> None:
    """UsageError for settings a language-model search does not take."""
    if data:
        raise UsageError("--data: a language model is tuned on compress's own held-out text; drop --data")
    if config.workers != 1 or config.executor != "local":
        raise UsageError("--workers/--executor: language-model trials run one at a time on this machine; drop them")
    if config.target != "local":
        raise UsageError("--target: a language model's decode speed is measured on this machine only; drop --target")
    if config.format not in ("onnx", "pte"):
        raise UsageError(f"--format {config.format}: language-model trials write onnx or pte")


def sensitivity_ranking(lm, precision: str, block_size: int, step: Callable[[str], None]) -> list[dict]:
    """Every quantized layer of ``lm`` at ``precision``, most sensitive first: ``{"layer", "kl"}``."""
    from compress.lm.sensitivity import layer_sensitivity
    from compress.steps.lm_verify import calibration_windows, decoder_plan

    module = copy.deepcopy(lm.module)
    plan = decoder_plan(module, precision, block_size)
    kl = layer_sensitivity(module, plan, calibration_windows(lm), progress=step)
    return [{"layer": name, "kl": kl[name]} for name in sorted(kl, key=kl.get, reverse=True)]


def _sample(trial, space, fmt: str, layers: int) -> dict:
    params = {"precision": trial.suggest_categorical("precision", space.lm_precisions),
              "algorithm": trial.suggest_categorical("algorithm", space.lm_algorithms),
              "block_size": trial.suggest_categorical("block_size", space.lm_block_sizes),
              "keep_float": trial.suggest_int("keep_float", 0, min(space.lm_keep_float_max, layers)),
              "keep_int8": trial.suggest_int("keep_int8", 0, min(space.lm_keep_int8_max, layers))}
    params["embeddings"] = trial.suggest_categorical("embeddings", space.lm_embeddings) if fmt == "onnx" else "fp32"
    return params


def trial_config(params: dict, ranking: list[dict], config, timed: bool):
    """The LMQuantizeConfig of one trial: the ``keep_float`` most sensitive layers in float, the next ``keep_int8``
    at int8, the rest at the trial's precision."""
    from compress.passes.quantize_lm import LMQuantizeConfig

    names = [r["layer"] for r in ranking]
    floated = names[: params["keep_float"]]
    kept = names[params["keep_float"]: params["keep_float"] + params["keep_int8"]]
    return LMQuantizeConfig(formats=[config.format], precisions=[params["precision"]], block_size=params["block_size"],
                            algorithm=params["algorithm"], max_degradation=config.max_degradation, auto_fallback=False,
                            bench=timed, threads=(1,), keep_int8=kept, keep_float=floated,
                            embeddings=None if params["embeddings"] == "fp32" else params["embeddings"])


def run_lm_trial(lm, number: int, params: dict, ranking: list[dict], config, out_dir: Path, timed: bool,
                 step: Callable[[str], None]) -> dict:
    """One trial's record: size, perplexity ratio and gate, decode tokens/s at one thread (when timed)."""
    from compress.passes.quantize_lm import quantize_lm
    from compress.steps.gates import GatePolicy

    folder = out_dir / "trials" / f"trial-{number:04d}"
    report = quantize_lm(lm, trial_config(params, ranking, config, timed), folder,
                         policy=GatePolicy(max_degradation=config.max_degradation),
                         step=lambda message: step(f"trial {number}: {message}")).report
    (artifact,) = report["artifacts"]
    if artifact.get("status") == "failed":
        return {"number": number, "params": params, "error": artifact["failure"], "folder": str(folder)}
    gate = next(g for g in report["gates"] if g["name"] == "max_perplexity_increase")
    ppl = artifact["metrics"]["perplexity"]
    return {"number": number, "params": params, "size_bytes": artifact["size_bytes"],
            "perplexity_ratio": ppl["perplexity_ratio"], "top1_agreement": ppl["top1_agreement"],
            "gate_value": gate["value"], "gate_limit": gate["limit"], "passed": bool(gate["passed"]),
            "decode_tokens_per_s": ((artifact.get("tokens") or {}).get("decode_tokens_per_s") or {}).get("1"),
            "precision": artifact["precision"], "verified_in": artifact["verified_in"],
            "artifact": str(folder / artifact["path"]), "folder": str(folder), "sha256": artifact["sha256"]}


def _shortfall(record: dict) -> float:
    if "size_bytes" not in record or record["gate_value"] is None or record["gate_limit"] is None:
        return float("inf")
    return record["gate_value"] - record["gate_limit"]


def _winner(records: list[dict], objective: str) -> dict | None:
    passed = [r for r in records if r.get("passed")]
    if not passed:
        return None
    if objective == "latency":
        return max(passed, key=lambda r: (r["decode_tokens_per_s"] or 0, -r["size_bytes"]))
    if objective == "both":
        speeds = [r["decode_tokens_per_s"] for r in passed if r["decode_tokens_per_s"]]
        median = statistics.median(speeds) if speeds else 0
        passed = [r for r in passed if (r["decode_tokens_per_s"] or 0) >= median] or passed
    return min(passed, key=lambda r: (r["size_bytes"], -(r["decode_tokens_per_s"] or 0)))


def _keep(record: dict, out_dir: Path, name: str) -> None:
    """The trial's file, report and tokenizer files in ``<out>/<name>/`` (written aside, then swapped in)."""
    folder, final, staging = Path(record["folder"]), out_dir / name, out_dir / f".{name}-new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for item in [Path(record["artifact"]).name, *KEPT_FILES]:
        if (folder / item).is_file():
            shutil.copy2(folder / item, staging / item)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


def _table(records: list[dict], best: dict | None) -> str:
    rows = ["| trial | precision | algorithm | block | float | int8 | embeddings | size (bytes) | perplexity ratio | gate | "
            "decode tok/s (1 thread) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        p = r["params"]
        if "size_bytes" not in r:
            rows.append(f"| {r['number']} | {p['precision']} | {p['algorithm']} | {p['block_size']} | {p['keep_float']} | "
                        f"{p['keep_int8']} | {p['embeddings']} | failed: {r['error'][:80]} | | | |")
            continue
        mark = " (best)" if best is not None and r["number"] == best["number"] else ""
        speed = f"{r['decode_tokens_per_s']:.1f}" if r["decode_tokens_per_s"] else "not timed"
        rows.append(f"| {r['number']}{mark} | {p['precision']} | {p['algorithm']} | {p['block_size']} | {p['keep_float']} | "
                    f"{p['keep_int8']} | {p['embeddings']} | {r['size_bytes']:,} | {r['perplexity_ratio']:.4f} | "
                    f"{'pass' if r['passed'] else 'FAIL'} ({r['gate_value']:+.2%} of {r['gate_limit']:.2%}) | {speed} |")
    return "\n".join(rows) + "\n"


def _recipe(record: dict, ranking: list[dict], config, source: str) -> str:
    import yaml

    stage = trial_config(record["params"], ranking, config, timed=True)
    body = {"model": {"source": source}, "stages": [{"quantize_lm": {
        "formats": stage.formats, "precisions": stage.precisions, "algorithm": stage.algorithm,
        "block_size": stage.block_size, "keep_int8": stage.keep_int8, "keep_float": stage.keep_float,
        "embeddings": stage.embeddings, "max_degradation": config.max_degradation}}],
        "output": {"dir": "runs/tuned-lm"}}
    header = (f"# written by `compress tune` from trial #{record['number']}: {record['size_bytes']:,} bytes, perplexity "
              f"ratio {record['perplexity_ratio']:.4f} ({'passed' if record['passed'] else 'did NOT pass'} its gate)\n")
    return header + yaml.safe_dump(body, sort_keys=False)


@holds_run_dir("tune")
def tune_lm(lm, config, out_dir: str | Path = "runs/tune", on_trial: Callable[[dict], None] | None = None,
            step: Callable[[str], None] = lambda message: None) -> LMTuneResult:
    """Rank the layers, run trials until ``config.trials`` or ``config.budget`` ends, keep the winner."""
    import optuna

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / "trials", ignore_errors=True)  # files of an earlier search, never mixed with this one's
    deadline = None if config.budget_seconds is None else time.monotonic() + config.budget_seconds
    space = config.search
    int4 = next((p for p in space.lm_precisions if p in ("int4-weight", "8da4w")), "int4-weight")
    step(f"ranking layers by sensitivity at {int4} g{min(space.lm_block_sizes)}")
    ranking = sensitivity_ranking(lm, int4, min(space.lm_block_sizes), step)
    write_json_atomic(out_dir / "sensitivity.json", {"precision": int4, "block_size": min(space.lm_block_sizes),
                                                     "layers": ranking})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=4)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    timed = config.objective != "size"
    records, seen, repeats, slowest = [], set(), 0, 0.0
    while repeats < MAX_REPEATS and (config.trials is None or len(records) < config.trials) and \
            (deadline is None or not records or time.monotonic() + slowest < deadline):
        trial = study.ask()
        params = _sample(trial, space, config.format, len(ranking))
        key = tuple(sorted(params.items()))
        if key in seen:
            repeats += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        seen.add(key)
        repeats, started = 0, time.monotonic()
        try:
            record = run_lm_trial(lm, len(records), params, ranking, config, out_dir, timed, step)
        except UsageError as exc:  # a plan this model cannot take (e.g. a block no width divides): a finding
            record = {"number": len(records), "params": params, "error": str(exc)}
        slowest = max(slowest, time.monotonic() - started)
        records.append(record)
        if "size_bytes" in record:
            trial.set_constraint("gates", min(_shortfall(record), 1.0))
            study.tell(trial, -(record["decode_tokens_per_s"] or 0) if config.objective == "latency" else record["size_bytes"])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        best = _winner(records, config.objective)
        if best is not None and best["number"] == record["number"]:
            _keep(best, out_dir, "best")
        if on_trial:
            on_trial(record)
    best = _winner(records, config.objective)
    measured = [r for r in records if "size_bytes" in r]
    closest = None if best is not None else min(measured, key=_shortfall, default=None)
    if closest is not None:
        _keep(closest, out_dir, "closest")
    chosen = best or closest
    if chosen is not None:
        write_text_atomic(out_dir / "recipe.yaml", _recipe(chosen, ranking, config, str(lm.source)))
    write_text_atomic(out_dir / "pareto.md", _table(records, best))
    write_json_atomic(out_dir / "tune.json", {"language_model": True, "best": best, "closest": closest,
                                              "trials": records, "ranking": ranking,
                                              "config": config.model_dump(mode="json"),
                                              "converged": repeats >= MAX_REPEATS})
    return LMTuneResult(out_dir, best, closest, records, ranking)
