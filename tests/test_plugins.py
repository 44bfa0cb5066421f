"""Extending compress from outside: a pass and a target registered in this file only, run from a recipe."""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field

from compress.catalog import Technique
from compress.passes.registry import register_pass, unregister_pass
from compress.recipe import RecipeError, parse_recipe, recipe_json_schema
from compress.recipe.run import run_recipe
from compress.targets import base as targets
from compress.targets.local import LocalTarget

RECIPE = """\
model: {{source: {source}}}
stages:
  - round: {{decimals: 1}}
  - export: {{formats: [onnx]}}
  - benchmark: {{runs: 3, warmup: 1}}
targets: [toy-cpu]
gates: {{enabled: false}}
output: {{dir: {out}}}
"""


class RoundConfig(BaseModel):
    """Round every weight to ``decimals`` decimals (a toy compression)."""

    model_config = ConfigDict(extra="forbid")

    decimals: int = Field(2, ge=0, le=6)


def round_weights(handle, config: RoundConfig, splits):
    module = copy.deepcopy(handle.module)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.round(parameter, decimals=config.decimals))
    rounded = handle.with_module(module, Technique("round", value=config.decimals))
    return replace(rounded, metrics={**handle.metrics, "round": {"decimals": config.decimals}})


class ToyTarget(LocalTarget):
    """This machine's CPU under another name."""

    name = "toy-cpu"


@pytest.fixture
def plugins(monkeypatch):
    register_pass("round", RoundConfig, round_weights)
    monkeypatch.setattr(targets, "TARGETS", list(targets.TARGETS))  # the registration below is undone after the test
    targets.register_target("toy-cpu", names=("toy-cpu",))(ToyTarget)
    yield
    unregister_pass("round")


def test_a_registered_pass_and_target_run_from_a_recipe(plugins, zoo_checkpoint, tmp_path):
    source = zoo_checkpoint("mnist_cnn", epochs=1)
    recipe = parse_recipe(RECIPE.format(source=source, out=tmp_path / "run"), "toy.yaml")
    assert "round" in recipe_json_schema()["$defs"]["RoundStage"]["properties"]

    result = run_recipe(recipe)
    (artifact,) = result.report["artifacts"]
    assert artifact["techniques"][0] == {"kind": "round", "value": 1, "label": "round:1"}
    assert [e["target"] for e in artifact["latency"] if e["target"] == "toy-cpu"] == ["toy-cpu"]
    assert result.report["stages"][0] == {**result.report["stages"][0], "kind": "round", "metrics": {"decimals": 1}}
    weights = [numpy_helper.to_array(t) for t in onnx.load(result.run_dir / artifact["path"]).graph.initializer if t.dims]
    assert any(np.allclose(w, np.round(w, 1), atol=1e-6) and np.abs(w).max() > 0 for w in weights if w.size > 100)

    again = run_recipe(recipe)
    assert again.reused == ["0:round", "1:export"]
    assert again.manifest["outputs"] == result.manifest["outputs"]


def test_a_registered_pass_config_is_validated_like_the_built_in_ones(plugins):
    with pytest.raises(RecipeError, match=r"stages\[0\]\.round\.decimals"):
        parse_recipe("model: {source: zoo:mnist_cnn}\nstages: [{round: {decimals: 9}}]\n", "r.yaml")
    unregister_pass("round")
    with pytest.raises(RecipeError, match="unknown stage 'round'"):
        parse_recipe("model: {source: zoo:mnist_cnn}\nstages: [{round: {}}]\n", "r.yaml")


def test_search_space_comes_from_the_pass_fields_and_their_validators():
    from compress.passes.prune import PruneConfig
    from compress.passes.quantize import QuantizeConfig
    from compress.tune.config import SearchSpace

    assert SearchSpace().calib_samples == QuantizeConfig.model_fields["calib_samples"].json_schema_extra["search"]["default"]
    assert PruneConfig.model_json_schema()["properties"]["method"]["search"]["name"] == "prune_methods"  # in the recipe schema too
    assert SearchSpace().prune_sparsity == (0.2, 0.6)
    with pytest.raises(ValueError, match="dynamic_op_types \\['Relu'\\]: op type 'Relu' cannot be quantized dynamically"):
        SearchSpace(dynamic_op_types=[["Relu"]])
    with pytest.raises(ValueError, match="calib_samples"):
        SearchSpace(calib_samples=[0])
    assert SearchSpace(prune_methods=[]).prune_methods == []  # empty: pruning off


def test_an_untested_litert_torch_stops_with_the_tested_range(monkeypatch):
    from compress import compat
    from compress.errors import EnvironmentFailure

    monkeypatch.setitem(compat.TESTED, "litert-torch", ("0.1", "0.2"))
    with pytest.raises(EnvironmentFailure, match=r"litert-torch .* is untested.*litert-torch>=0\.1,<0\.2"):
        with compat.litert_strict_qdq():
            pass
