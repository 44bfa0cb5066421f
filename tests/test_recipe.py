"""Recipes: typed validation with file:line:column errors, runs that cache/resume, gates, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compress.recipe import RecipeError, load_recipe, parse_recipe
from compress.report import validate_report

RECIPES = sorted(Path("recipes").rglob("*.yaml"))

QUICK = """\
seed: 0
model:
  source: {source}
stages:
  - quantize:
      formats: [onnx, tflite]
      precisions: [int8]
      calib_samples: 64
      bench_runs: 5
targets: [local]
gates:
  max_degradation: {limit}
  max_size_bytes: 200000
output:
  dir: {out}
"""


@pytest.mark.parametrize("path", RECIPES, ids=[str(p) for p in RECIPES])
def test_every_shipped_recipe_validates(path, cli):
    result = cli("recipe", "validate", path)
    assert result.exit_code == 0, result.output


def test_typo_points_at_line_and_column_and_suggests(tmp_path, cli):
    path = tmp_path / "typo.yaml"
    path.write_text(QUICK.format(source="zoo:mnist_cnn", limit=0.01, out="x").replace("calib_samples: 64", "calibraton: entropy"))
    result = cli("recipe", "validate", path)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(f"{path}:8:7: unknown key 'calibraton' in stages[0].quantize; did you mean 'calibration'?")


@pytest.mark.parametrize("text, message", [
    ("model: {source: zoo:mnist_cnn}\nstages: [{quantise: {}}]\n", "unknown stage 'quantise' in stages[0]; did you mean 'quantize'?"),
    ("model: {sourc: zoo:mnist_cnn}\nstages: [{quantize: {}}]\n", "unknown key 'sourc' in model; did you mean 'source'?"),
    ("model: {source: zoo:mnist_cnn}\nstages: [{quantize: {calibration: magic}}]\n", "stages[0].quantize.calibration"),
    ("model: {source: zoo:mnist_cnn}\nstages: []\n", "stages"),
    ("model: [\n", "not valid YAML"),
])
def test_bad_recipes(text, message):
    with pytest.raises(RecipeError, match=None) as caught:
        parse_recipe(text, "r.yaml")
    assert message in str(caught.value) and str(caught.value).startswith("r.yaml:")


def test_schema_and_init(cli, tmp_path):
    schema = json.loads(cli("recipe", "schema").stdout)
    assert "stages" in schema["properties"]
    starter = cli("recipe", "init", "--model", "cnn64").stdout
    path = tmp_path / "starter.yaml"
    path.write_text(starter)
    recipe = load_recipe(path)
    assert recipe.model.source == "zoo:cnn64" and "# " in starter


@pytest.fixture(scope="module")
def quick_recipe(zoo_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    path = folder / "quick.yaml"
    path.write_text(QUICK.format(source=zoo_checkpoint("mnist_cnn", epochs=2), limit=0.02, out=folder / "run"))
    return path


def test_run_writes_contract_report_manifest_and_reuses_stages(quick_recipe, cli):
    first = cli("run", quick_recipe, "--json")
    assert first.exit_code == 0, first.output
    run_dir = quick_recipe.parent / "run"
    report = json.loads((run_dir / "report.json").read_text())
    validate_report(report)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["outputs"]) >= {"model.int8.onnx", "model.int8.tflite"}
    assert manifest["versions"]["torch"] and manifest["seed"] == 0 and manifest["inputs"]["model"]["sha256"]
    assert {g["name"] for g in report["gates"]} == {"max_degradation", "max_size_bytes"} and report["passed"]
    second = cli("run", quick_recipe, "--json")
    assert second.exit_code == 0
    assert all(stage["reused"] for stage in json.loads(second.stdout)["stages"])
    forced = cli("run", quick_recipe, "--force", "--json")
    assert not any(stage["reused"] for stage in json.loads(forced.stdout)["stages"])


def test_same_recipe_twice_gives_the_same_int8_files(quick_recipe, cli, tmp_path):
    hashes = []
    for name in ("a", "b"):
        assert cli("run", quick_recipe, "--out", tmp_path / name).exit_code == 0
        hashes.append(json.loads((tmp_path / name / "manifest.json").read_text())["outputs"])
    assert hashes[0]["model.int8.onnx"] == hashes[1]["model.int8.onnx"]
    assert hashes[0]["model.int8.tflite"] == hashes[1]["model.int8.tflite"]


def test_failed_gate_exits_1_keeps_artifacts_and_names_the_gate(quick_recipe, cli, tmp_path):
    result = cli("run", quick_recipe, "--out", tmp_path, "--set", "gates.max_size_bytes=1000")
    assert result.exit_code == 1
    report = json.loads((tmp_path / "report.json").read_text())
    failed = [g for g in report["gates"] if not g["passed"]]
    assert failed and failed[0]["name"] == "max_size_bytes" and failed[0]["limit"] == 1000
    assert "max_size_bytes" in result.stderr and (tmp_path / "model.int8.onnx").is_file()


def test_interrupted_run_resumes(quick_recipe, tmp_path, monkeypatch):
    from compress.recipe.run import run_recipe

    recipe = load_recipe(quick_recipe)
    calls = {"n": 0}
    import compress.quantize as quantize_module

    real = quantize_module.quantize

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize_module, "quantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path)
    assert not (tmp_path / "report.json").exists()  # nothing looks finished
    monkeypatch.setattr(quantize_module, "quantize", real)
    result = run_recipe(recipe, tmp_path)
    assert result.report["passed"] and calls["n"] == 1


def test_set_override_errors_are_one_line(quick_recipe, cli):
    result = cli("run", quick_recipe, "--set", "stages.7.quantize.calibration=entropy")
    assert result.exit_code == 2 and "has no 'stages.7.quantize.calibration'" in result.stderr
