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

from compress.catalog import technique_label, technique_record
from compress.data.plan import plan_data
from compress.passes.epochs import epoch_info
from compress.safety.io import copy_atomic, sha256_file, write_json_atomic
from compress.loading.model import ModelHandle, load_model
from compress.passes.registry import get_pass
from compress.steps.phases import PhaseClock
from compress.steps.pipeline import finish_report, measure_reference
from compress.recipe.cache import StageCache
from compress.report.model import Artifact
from compress.recipe.schema import RecipeBase
from compress.passes.stages import StageContext
from compress.recipe.trust import Trust, check_trust
from compress.safety.rundir import holds_run_dir
from compress.zoo.checkpoint import library_versions

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
    from compress.loading.model import save_program
    from compress.passes.training import set_mode

    set_mode(handle.module, False)
    save_program(handle, path)


def _load_module(handle: ModelHandle, path: Path, technique: dict | str) -> ModelHandle:
    """A stage's own model.pt2 (its sha256 already checked); never trusted with pickles: compress writes none."""
    from compress.loading.model import load_program

    remedy = "compress writes no such entries: the run directory was tampered with; rerun with --force to recompute every stage"
    return handle.with_module(load_program(path, remedy=remedy).module(), technique)


@holds_run_dir("run", lambda args: args["out_dir"] or args["recipe"].output.dir)
def run_recipe(recipe: RecipeBase, out_dir: str | Path | None = None, force: bool = False,
               step: Callable[[str], None] | None = None, recipe_path: str | None = None, trust: Trust = Trust(),
               say: Callable[[str], None] | None = None) -> RecipeResult:
    """Run every stage; code the recipe names (``module:Name``) runs only as far as ``trust`` (the command line) allows.

    ``step(message)`` names each phase; ``say(line)`` gets one line per training epoch of a prune, distill or QAT stage.
    """
    check_trust(recipe, trust, recipe_path or "recipe")
    clock = PhaseClock()
    step = clock.wrap(step)
    run_dir = Path(out_dir or recipe.output.dir)  # created and locked by holds_run_dir
    from compress.recipe.lm_fit import is_lm_recipe
    from compress.recipe.lm_run import run_lm_recipe

    if is_lm_recipe(recipe):  # its one quantize_lm stage: `compress quantize` of the LM
        return run_lm_recipe(recipe, run_dir, step, recipe_path)
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
        stage = get_pass(kind)
        if stage.produces == "measurement":  # never cached: e.g. benchmark times every artifact so far on every target
            step(f"stage {index} {kind} on {', '.join(recipe.targets)}")
            logged = stage.run(StageContext(handle, recipe, plan, reference, run_dir, run_dir, artifacts), config)
            stage_log.append({"index": index, "kind": kind, **logged})
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
            on_epoch = None if say is None else (
                lambda row, index=index, kind=kind: say(f"stage {index} {kind}: epoch {row['epoch']}/{row['epochs']}  {epoch_info(row)}"))
            record = _run_stage(stage, config, StageContext(handle, recipe, plan, reference, folder, run_dir, artifacts), on_epoch)
            files = (["model.pt2"] if stage.produces == "model" else []) + [a["path"] for a in record.get("artifacts", [])]
            record = cache.finish(folder, record, files)
        if stage.produces == "model":
            handle = _load_module(handle, folder / "model.pt2", record.get("record", record["technique"]))  # older markers: the label
        for entry in record.get("artifacts", []):
            copy_atomic(folder / entry["path"], run_dir / entry["path"])
            artifacts = [a for a in artifacts if a.name != entry["name"]] + [Artifact.model_validate(entry)]
        stage_log.append({"index": index, "kind": kind, "key": key, "reused": f"{index}:{kind}" in reused,
                          **{k: v for k, v in record.items() if k not in ("artifacts", "files", "record")}})
        previous = key

    step("gates")
    extra = {"command": "run", "stages": stage_log, "recipe": recipe.resolved(), "timings": clock.record()}
    from compress.steps.gates import is_compressed

    refused = [r for entry in stage_log for r in entry.get("refused", [])]  # formats a quantize stage could not make
    report = finish_report(run_dir, original, plan, reference, artifacts, recipe.gates.policy(), extra, candidate=is_compressed,
                           refused=refused)
    manifest = build_manifest(recipe, recipe_path, original, plan, run_dir, artifacts, versions)
    write_json_atomic(run_dir / "manifest.json", manifest)
    return RecipeResult(run_dir, report, manifest, reused)


def _run_stage(stage, config, context: StageContext, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Run one registered pass into ``context.folder``; return what the marker records (artifacts, technique, metrics).

    Artifacts are measured against ``context.reference`` (the recipe's input model), so a gate sees what pruning or
    distillation lost as well as what quantization lost. A training pass reports each epoch to ``on_epoch``.
    """
    if stage.produces == "model":
        from compress.data.plan import model_splits

        recipe = context.recipe
        new = stage.run(context.handle, config, model_splits(context.handle, recipe.data.name, recipe.seed), on_epoch=on_epoch)
        _save_module(new, context.folder / "model.pt2")
        return {"technique": technique_label(new.techniques[-1]), "record": technique_record(new.techniques[-1]),
                "metrics": new.metrics.get(stage.name, {})}
    return stage.run(context, config)


def build_manifest(recipe: RecipeBase, recipe_path: str | None, handle: ModelHandle, plan, run_dir: Path,
                   artifacts: list[Artifact], versions: dict) -> dict:
    from compress.backends.onnx.cpu_features import cpu_int8_features

    return {
        "recipe": recipe.resolved(),
        "recipe_file": {"path": recipe_path, "sha256": sha256_file(recipe_path)} if recipe_path else None,
        "inputs": {"model": handle.source_dict(), "data": {"name": plan.name, "test_fingerprint": plan.test.fingerprint() if plan.test is not None else None,
                                                          "calibration_fingerprint": plan.calibration.fingerprint()}},
        "outputs": {a.path: a.sha256 for a in artifacts},
        "versions": versions,
        "seed": recipe.seed,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
                    "cpu_features": cpu_int8_features()},
    }
