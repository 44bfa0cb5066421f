"""Recipes on decoder language models, as a user runs them: the shipped recipes/smollm2.yaml validates, and runs on a
tiny Llama directory (its source overridden with --set) into verified ONNX files with per-layer choices, a report
that validates and a manifest; recipes whose stages do not fit their model exit 2 with one line naming the place."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compress.safety.io import sha256_file
from tests.cli_checks import json_output, one_line
from tests.lm_models import hf_dir

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm2.yaml"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return hf_dir(tmp_path_factory.mktemp("lm") / "llama", "llama")


def test_smollm2_recipe_validates(cli):
    document = json_output(cli("recipe", "validate", RECIPE, "--json"))
    assert document["valid"] and "held-out text" in document["data_check"]
    stage = document["recipe"]["stages"][0]["quantize_lm"]
    assert stage["formats"] == ["onnx", "pte"] and stage["block_size"] == 32
    assert document["recipe"]["search"]["lm_keep_int8_max"] == 4


def test_smollm2_recipe_runs_on_a_tiny_llama(llama_dir, tmp_path, cli):
    out = tmp_path / "run"
    done = cli("run", RECIPE, "--set", f"model.source={llama_dir}", "--set", "stages.0.quantize_lm.formats=[onnx]",
               "--set", "stages.0.quantize_lm.precisions=[int4-weight]", "--set", "stages.0.quantize_lm.bench=false",
               "--set", "stages.0.quantize_lm.keep_int8=[lm_head, model.layers.0.mlp.down_proj]",
               "--set", "stages.0.quantize_lm.embeddings=int8-weight", "--json", "--out", out)
    report = json_output(done)
    assert report["command"] == "run" and report["passed"] and report["language_model"]
    assert report["stages"][0]["kind"] == "quantize_lm"
    (artifact,) = report["artifacts"]
    assert artifact["verified_in"] == ["onnxruntime"] and artifact["metrics"]["perplexity"]["generation_ran"]
    layers = {c["name"]: c for c in artifact["layers"]}
    for name in ("lm_head", "model.layers.0.mlp.down_proj"):
        assert layers[name]["precision"] == "int8-weight" and "keep_int8" in layers[name]["reason"]
    assert layers["model.layers.1.mlp.down_proj"]["precision"] == "int4-weight"
    assert layers["model.embed_tokens"]["precision"] == "int8-weight"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"] == {artifact["path"]: sha256_file(out / artifact["path"])}
    assert manifest["inputs"]["model"]["format"] == "hf"
    assert cli("report", "validate", out).exit_code == 0


@pytest.mark.parametrize("stages, says", [
    ("  - quantize_lm: {precisions: [int2]}\n", "int2"),
    ("  - quantize_lm: {block_size: 48}\n", "block_size"),
    ("  - quantize_lm: {}\n  - quantize: {}\n", "stages[1].quantize"),
    ("  - quantize_lm: {embeddings: int8-weight, formats: [tflite]}\n", "formats: [onnx, pte]"),
])
def test_lm_recipes_that_do_not_fit_exit_2(stages, says, llama_dir, tmp_path, cli):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n  source: {llama_dir}\nstages:\n{stages}")
    done = cli("recipe", "validate", path)
    assert done.exit_code == 2 and says in one_line(done) and str(path) in done.stderr


def test_data_and_non_lm_sources_refused(llama_dir, tmp_path, cli):
    path = tmp_path / "data.yaml"
    path.write_text(f"model:\n  source: {llama_dir}\ndata:\n  name: digits28\nstages:\n  - quantize_lm: {{}}\n")
    assert "data.name" in one_line(cli("recipe", "validate", path))
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\x08\x07")
    path.write_text(f"model:\n  source: {other}\nstages:\n  - quantize_lm: {{}}\n")
    done = cli("recipe", "validate", path)
    assert done.exit_code == 2 and "not one" in one_line(done)


def test_a_pattern_matching_no_layer_writes_nothing(llama_dir, tmp_path, cli):
    out = tmp_path / "run"
    done = cli("run", RECIPE, "--set", f"model.source={llama_dir}", "--set", "stages.0.quantize_lm.formats=[onnx]",
               "--set", "stages.0.quantize_lm.keep_int8=[model.layers.9.*]", "--out", out)
    assert done.exit_code == 2 and "model.layers.9.*" in one_line(done)
    assert not list(out.glob("*.onnx")) and not (out / "report.json").exists()
