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

from compress.recipe.lm_fit import STAGE


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
