"""A recipe whose model is a decoder language model (a model directory or a .gguf file): its one ``quantize_lm``
stage runs `compress quantize` of the LM (compress.passes.quantize_lm) into the run directory, judged by the
recipe's gates, with the same report.json and a manifest.json (recipe, input and output sha256s, versions).

Example:
    >>> result = run_lm_recipe(load_recipe("recipes/smollm2.yaml"), Path("runs/smollm2"))      # doctest: +SKIP
    >>> result.report["artifacts"][0]["verified_in"]                                         # doctest: +SKIP
    ['onnxruntime']
"""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path
from typing import Callable

STAGE = "quantize_lm"


def source_is_language_model(recipe) -> bool:
    """Whether ``model.source`` is a decoder LM on disk (a directory with config.json naming one, or a .gguf)."""
    from compress.lm.model import is_language_model

    source = recipe.model.source
    return not source.startswith("zoo:") and is_language_model(source)


def is_lm_recipe(recipe) -> bool:
    """A recipe run as a language model's: its source is one, or it has a quantize_lm stage (whose missing source
    file is then said by the LM loader)."""
    return source_is_language_model(recipe) or any(kind == STAGE for kind, _ in recipe.stage_list)


def lm_recipe_problem(recipe) -> str | None:
    """What makes the recipe's stages not fit its model, in one sentence with the way out; None when they fit."""
    kinds = [kind for kind, _ in recipe.stage_list]
    source = recipe.model.source
    if not source_is_language_model(recipe):
        if STAGE in kinds and Path(source).exists():
            return (f"stages[{kinds.index(STAGE)}].{STAGE} needs a decoder language model, and model.source {source!r} "
                    "is not one (a directory with config.json and *.safetensors, or a .gguf file)")
        return None
    other = [(i, kind) for i, kind in enumerate(kinds) if kind != STAGE]
    if other:
        return (f"stages[{other[0][0]}].{other[0][1]}: {source} is a decoder language model, which takes one {STAGE} "
                "stage (formats, precisions, algorithm, block_size, keep_int8, embeddings)")
    if len(kinds) > 1:
        return f"stages: give one {STAGE} stage for a language model (its formats and precisions list every file)"
    if recipe.data.name:
        return ("data.name: a language model is measured on compress's own held-out text and calibrated on its "
                "calibration text; drop data.name")
    if list(recipe.targets) != ["local"]:
        return "targets: a language model's tokens per second are measured on this machine only: use [local]"
    return None


def run_lm_recipe(recipe, run_dir: Path, step: Callable[[str], None], recipe_path: str | None):
    """Run the recipe's ``quantize_lm`` stage into ``run_dir`` (created and locked by the caller)."""
    from compress.lm.model import load_lm
    from compress.passes.quantize_lm import quantize_lm
    from compress.recipe.run import RecipeResult
    from compress.safety.io import sha256_file, write_json_atomic
    from compress.steps.lm_verify import LMSource
    from compress.zoo.checkpoint import library_versions

    (_, stage), = recipe.stage_list
    config = stage.to_config()
    policy = recipe.gates.policy()
    if policy.max_degradation is None:
        policy = dataclasses.replace(policy, max_degradation=config.max_degradation)
    step("loading the language model")
    lm = load_lm(recipe.model.source)
    extra = {"command": "run", "recipe": recipe.resolved(),
             "stages": [{"index": 0, "kind": STAGE, "reused": False, "config": stage.model_dump(mode="json")}]}
    result = quantize_lm(lm, config, run_dir, step=step, policy=policy, extra=extra)
    artifacts = [a for a in result.report["artifacts"] if a.get("status") != "failed"]
    manifest = {
        "recipe": recipe.resolved(),
        "recipe_file": {"path": recipe_path, "sha256": sha256_file(recipe_path)} if recipe_path else None,
        "inputs": {"model": LMSource(lm).source_dict(), "data": {"name": "compress.lm.text (evaluation and calibration text)"}},
        "outputs": {a["path"]: a["sha256"] for a in artifacts},
        "versions": library_versions(),
        "seed": recipe.seed,
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version()},
    }
    write_json_atomic(run_dir / "manifest.json", manifest)
    return RecipeResult(run_dir, result.report, manifest, [])
