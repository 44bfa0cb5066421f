"""Whether a recipe's stages fit a decoder language model: a model directory or .gguf takes one ``quantize_lm``
stage, and ``quantize_lm`` takes only such a model (checked while the recipe is validated; compress.recipe.lm_run
runs it).

Example:
    >>> lm_recipe_problem(load_recipe("recipes/smollm2.yaml"))     # doctest: +SKIP
    None
"""
from __future__ import annotations

from pathlib import Path

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
