"""Execute a recipe: stages in order, cached and resumable, gates on the real artifacts, manifest + report.

Example:
    >>> result = run_recipe(load_recipe("recipes/mnist_cnn.yaml"), out_dir="runs/mnist")
    >>> result.report["passed"], sorted(result.manifest["outputs"])[:1]
    (True, ['model.fp32.onnx'])
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from compress.dataplan import plan_data
from compress.errors import UsageError
from compress.io import copy_atomic, make_run_dir, sha256_file, write_json_atomic
from compress.model import ModelHandle, load_model
from compress.passes.qat import QatConfig, is_quantized
from compress.pipeline import Reference, finish_report, measure_reference
from compress.recipe.cache import StageCache
from compress.recipe.schema import RecipeBase
from compress.recipe.trust import Trust, check_trust
from compress.rundir import holds_run_dir
from compress.zoo.checkpoint import library_versions

MODEL_STAGES = ("prune", "distill", "qat")


@dataclass
class RecipeResult:
    run_dir: Path
    report: dict
    manifest: dict
    reused: list[str]


def resolve_model(recipe: RecipeBase, trust: Trust) -> ModelHandle:
    """``zoo:NAME`` trains (or reuses) the zoo checkpoint with the recipe's seed; anything else is a path.

    A pickled model loads only when the command line said --trust-pickle (``trust.pickle``), whatever the file says.
    """
    source = recipe.model.source
    if source.startswith("zoo:"):
        from compress.zoo import train_zoo_model

        source = str(train_zoo_model(source[4:], epochs=recipe.model.epochs, seed=recipe.seed).path)
    handle = load_model(source, arch=recipe.model.arch, arch_kwargs=recipe.model.arch_kwargs,
                        input_shapes=recipe.model.input_shapes or None, trust_pickle=trust.pickle,
                        batch_axes=recipe.model.batch_axes, state=recipe.model.state)
    handle.output_kinds = dict(recipe.model.output_kinds)
    return handle


def _save_module(handle: ModelHandle, path: Path) -> None:
    """Intermediate models are stored as torch.export programs (reloaded through the .pt2 check, never with pickles)."""
    from compress.model import save_program
    from compress.training import set_mode

    set_mode(handle.module, False)
    save_program(handle, path)


def _load_module(handle: ModelHandle, path: Path, technique: str) -> ModelHandle:
    """A stage's own model.pt2 (its sha256 already checked); never trusted with pickles: compress writes none."""
    from compress.model import load_program

    remedy = "compress writes no such entries: the run directory was tampered with; rerun with --force to recompute every stage"
    return handle.with_module(load_program(path, remedy=remedy).module(), technique)


def _apply_model_stage(kind: str, handle: ModelHandle, config, data, seed: int) -> ModelHandle:
    import importlib

    from compress.data import resolve_data

    pass_module = importlib.import_module(f"compress.passes.{kind}")
    name = data or (handle.dataset or {}).get("name")
    splits = resolve_data(name).split((handle.dataset or {}).get("split_seed", seed)) if name else None
    return pass_module.apply(handle, config, splits)


@holds_run_dir("run", lambda args: args["out_dir"] or args["recipe"].output.dir)
def run_recipe(recipe: RecipeBase, out_dir: str | Path | None = None, force: bool = False,
               step: Callable[[str], None] | None = None, recipe_path: str | None = None, trust: Trust = Trust()) -> RecipeResult:
    """Run every stage; code the recipe names (``module:Name``) runs only as far as ``trust`` (the command line) allows."""
    check_trust(recipe, trust, recipe_path or "recipe")
    step = step or (lambda message: None)
    run_dir = make_run_dir(out_dir or recipe.output.dir)
    cache = StageCache(run_dir / ".stages")
    if force:
        cache.clear()
    versions = library_versions()
    step("loading the model")
    handle = resolve_model(recipe, trust)
    original = handle
    plan = plan_data(handle, recipe.data.name, recipe.data.calib_samples, recipe.seed)
    fingerprint = plan.test.fingerprint() if plan.test is not None else "no-data"
    reference = measure_reference(original, plan)  # every artifact is measured against the recipe's input model
    previous, artifacts, reused, stage_log = handle.source_sha256, [], [], []

    for index, (kind, config) in enumerate(recipe.stage_list):
        if kind == "benchmark":  # a measurement, never cached: times every artifact so far on every target
            step(f"stage {index} benchmark on {', '.join(recipe.targets)}")
            benchmark_artifacts(artifacts, run_dir, recipe.targets, config)
            stage_log.append({"index": index, "kind": kind, "targets": recipe.targets, "batch": config.batch})
            continue
        key = cache.key(previous, kind, config.model_dump(mode="json"), fingerprint, versions)
        folder = cache.folder(index, kind, key)
        record = cache.done(folder)
        if record is not None and "files" in record:  # a marker without sha256s (an older compress) is recomputed
            record = cache.verified(folder, record)
            step(f"stage {index} {kind}: unchanged, reused")
            reused.append(f"{index}:{kind}")
        else:
            step(f"stage {index} {kind}")
            cache.start(folder)
            record = _run_stage(kind, config, handle, recipe, plan, reference, folder)
            files = (["model.pt2"] if kind in MODEL_STAGES else []) + [a["path"] for a in record.get("artifacts", [])]
            record = cache.finish(folder, record, files)
        if kind in MODEL_STAGES:
            handle = _load_module(handle, folder / "model.pt2", record["technique"])
        for entry in record.get("artifacts", []):
            copy_atomic(folder / entry["path"], run_dir / entry["path"])
            artifacts = [a for a in artifacts if a["name"] != entry["name"]] + [entry]
        stage_log.append({"index": index, "kind": kind, "key": key, "reused": f"{index}:{kind}" in reused,
                          **{k: v for k, v in record.items() if k not in ("artifacts", "files")}})
        previous = key

    step("gates")
    from compress.advice import explain_speed

    explain_speed(artifacts)
    extra = {"command": "run", "stages": stage_log, "recipe": recipe.resolved()}
    from compress.gates import is_compressed

    report = finish_report(run_dir, original, plan, reference, artifacts, recipe.gates.policy(), extra, candidate=is_compressed)
    manifest = build_manifest(recipe, recipe_path, original, plan, run_dir, artifacts, versions)
    write_json_atomic(run_dir / "manifest.json", manifest)
    return RecipeResult(run_dir, report, manifest, reused)


def _run_stage(kind: str, config, handle: ModelHandle, recipe: RecipeBase, plan, reference: Reference, folder: Path) -> dict:
    """Run one stage into ``folder``; return what the marker records (artifact entries, technique, metrics).

    Artifacts are measured against ``reference`` (the recipe's input model), so a gate sees what pruning or
    distillation lost as well as what quantization lost.
    """
    if kind in MODEL_STAGES:
        new = _apply_model_stage(kind, handle, config, recipe.data.name, recipe.seed)
        _save_module(new, folder / "model.pt2")
        return {"technique": new.techniques[-1], "metrics": new.metrics.get(kind, {})}
    if kind in ("quantize", "export") and is_quantized(handle.module):
        return _export_quantized(kind, handle, config, recipe, plan, reference, folder)
    if kind in ("quantize", "export"):
        from compress.quantize import QuantizeConfig, quantize

        if kind == "export":
            qconfig = QuantizeConfig(formats=config.formats, precisions=[p for p in config.precisions if p != "fp32"] or ["fp16"],
                                     seed=recipe.seed, include_fp32="fp32" in config.precisions)
            if "fp16" not in config.precisions:
                qconfig = qconfig.model_copy(update={"precisions": []})
        else:
            qconfig = config.model_copy(update={"seed": recipe.seed})
        result = quantize(handle, qconfig, recipe.data.name, folder, reference=reference)
        for entry in result.report["artifacts"]:
            entry["techniques"] = [*handle.techniques, *entry["techniques"]]
        return {"artifacts": result.report["artifacts"], "preflight": result.report.get("preflight", [])}
    if kind == "evaluate":
        from compress.evaluate import task_metrics
        from compress.training import predict

        data = plan.test if config.split == "test" else None
        metrics = task_metrics(data.heads, predict(handle.module, data), data.y) if data is not None and handle.module is not None else None
        return {"metrics": metrics, "techniques": handle.techniques}
    raise AssertionError(kind)


def _export_quantized(kind: str, handle: ModelHandle, config, recipe: RecipeBase, plan, reference: Reference, folder: Path) -> dict:
    """``quantize`` after ``qat``: the model already holds its int8 scales, so export it as is (no second PTQ).

    Writes ``model.qat-<scheme>.<fmt>`` (the files `compress qat` makes, e.g. ``model.qat-int8.onnx``), each verified
    in its runtime.
    fp32 baselines come from an ``export`` stage placed before ``qat``.

    Example (recipe stages): ``[{qat: {epochs: 3}}, {quantize: {formats: [onnx, tflite]}}]``
    """
    from compress.passes.qat_export import export_qat
    from compress.pipeline import heads_for, verifier

    if kind == "export":
        raise UsageError("stage export: the model is already int8 after qat; put the export stage (fp32 files) before qat")
    if config.precisions != ["int8"]:
        raise UsageError("stage quantize: the model is already int8 after qat; "
                         f"set precisions to int8 only (got {', '.join(config.precisions)})")
    qat_config = next((c for k, c in recipe.stage_list if k == "qat"), QatConfig())  # names the files, notes the bits
    bench = {"runs": config.bench_runs, "warmup": config.bench_warmup, "threads": config.threads} if config.bench else None
    verify = verifier(folder, plan, reference, heads_for(handle, plan), bench)
    return {"artifacts": [export_qat(handle, qat_config, fmt, folder, verify) for fmt in config.formats]}


def benchmark_artifacts(artifacts: list[dict], run_dir: Path, targets: list[str], config) -> None:
    """Add (or replace) one latency entry per artifact × target × batch."""
    from compress.benchmark import benchmark_artifact

    from compress.gates import is_failed

    for artifact in (a for a in artifacts if not is_failed(a)):
        for target in targets:
            for batch in config.batch:
                entry = benchmark_artifact(run_dir / artifact["path"], target=target, batch=batch, runs=config.runs,
                                           warmup=config.warmup, threads=config.threads)
                artifact["latency"] = [e for e in artifact["latency"] if (e["target"], e["batch"]) != (entry["target"], batch)] + [entry]


def build_manifest(recipe: RecipeBase, recipe_path: str | None, handle: ModelHandle, plan, run_dir: Path,
                   artifacts: list[dict], versions: dict) -> dict:
    from compress.export.cpu_features import cpu_int8_features

    return {
        "recipe": recipe.resolved(),
        "recipe_file": {"path": recipe_path, "sha256": sha256_file(recipe_path)} if recipe_path else None,
        "inputs": {"model": handle.source_dict(), "data": {"name": plan.name, "test_fingerprint": plan.test.fingerprint() if plan.test is not None else None,
                                                          "calibration_fingerprint": plan.calibration.fingerprint()}},
        "outputs": {a["path"]: a["sha256"] for a in artifacts},
        "versions": versions,
        "seed": recipe.seed,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
                    "cpu_features": cpu_int8_features()},
    }
