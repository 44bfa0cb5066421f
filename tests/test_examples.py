"""The pipeline examples: the Makefile rule and the Python API script run; the CI files are checked."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

EXAMPLES = Path("examples")


def test_python_api_script_runs(tmp_path, zoo_checkpoint):
    zoo_checkpoint("mnist_cnn")  # trained once into the test cache the script reuses
    result = subprocess.run([sys.executable, str(EXAMPLES / "python_api.py"), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8-onnx" in result.stdout and "recommended:" in result.stdout
    assert (tmp_path / "report.json").is_file()


def test_makefile_rule_builds_the_asset(tmp_path, zoo_checkpoint):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path("recipes/templates/int8-ptq.yaml").read_text().replace("zoo:mnist_cnn", str(zoo_checkpoint("mnist_cnn", epochs=2))))
    compress = Path(sys.executable).with_name("compress")
    result = subprocess.run(["make", "-f", str(EXAMPLES.resolve() / "Makefile"), f"COMPRESS={compress}", f"RECIPE={recipe}",
                             f"RUN_DIR={tmp_path / 'run'}", "assets/model.int8.tflite"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "assets" / "model.int8.tflite").stat().st_size > 10_000


def test_github_workflow_runs_a_shipped_recipe_and_uploads_on_failure():
    workflow = yaml.safe_load((EXAMPLES / "github-actions" / "compress-model.yml").read_text())
    steps = workflow["jobs"]["compress"]["steps"]
    run_step = next(s for s in steps if s.get("id") == "run")
    recipe = re.search(r"compress run (\S+)", run_step["run"]).group(1)
    assert Path(recipe).is_file()
    upload = next(s for s in steps if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"


def test_gradle_task_copies_the_recipes_tflite_artifact():
    script = (EXAMPLES / "android" / "build.gradle.kts").read_text()
    recipe = re.search(r'rootProject\.file\("([^"]+)"\)', script).group(1)
    assert Path(recipe).is_file()
    shipped = yaml.safe_load(Path(recipe).read_text())
    quantize = next(s["quantize"] for s in shipped["stages"] if "quantize" in s)
    assert "tflite" in quantize.get("formats", ["onnx", "tflite"]) and "int8" in quantize.get("precisions", ["int8"])
    assert 'include("model.int8.tflite")' in script and 'named("preBuild")' in script
