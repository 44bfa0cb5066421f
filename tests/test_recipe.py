"""Recipes: typed validation with file:line:column errors, runs that cache/resume, gates, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    import compress.passes.quantize as quantize_module

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


# --- the templates, end to end on a quickly trained checkpoint ---------------------------------------------------

RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert"}


@pytest.fixture(scope="module")
def small_teacher(zoo_checkpoint):
    return zoo_checkpoint("mnist_cnn", epochs=4, width=0.5)


def _run_template(cli, name: str, out: Path, source: Path, *overrides: str, stderr_has: str = "") -> dict:
    """``compress run recipes/templates/<name>.yaml --out OUT --set model.source=SOURCE --set ...``; its report."""
    sets = [item for value in (f"model.source={source}", *overrides) for item in ("--set", value)]
    result = cli("run", f"recipes/templates/{name}.yaml", "--out", out, *sets)
    assert result.exit_code in (0, 1), result.output
    assert stderr_has in result.stderr
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert result.exit_code == (0 if report["passed"] else 1)
    return report


def _accuracy(artifact: dict) -> float:
    return artifact["metrics"]["task"]["value"]


def _check_verified(artifact: dict, run_dir: Path, reference: float) -> None:
    """On disk, run in its runtime on the test split, timed, and measured against the recipe's input model."""
    assert (run_dir / artifact["path"]).is_file() and artifact["verified_in"] == [RUNTIMES[artifact["format"]]]
    assert artifact["metrics"]["fidelity"]["top1_agreement"] is not None and artifact["latency"]
    assert artifact["metrics"]["degradation"] == pytest.approx(reference - _accuracy(artifact), abs=2e-6)


def _check_gates(report: dict, names: set[str], candidates: set[str]) -> None:
    """Every gate on every compressed artifact, evaluated on the measured value."""
    artifacts = {a["name"]: a for a in report["artifacts"]}
    assert {(g["name"], g["artifact"]) for g in report["gates"]} == {(n, a) for n in names for a in candidates}
    for gate in report["gates"]:
        metrics = artifacts[gate["artifact"]]["metrics"]
        assert gate["value"] == (metrics["degradation"] if gate["name"] == "max_degradation" else metrics["fidelity"]["top1_agreement"])


def test_prune_int8_template(cli, small_teacher, tmp_path):
    report = _run_template(cli, "prune-int8", tmp_path, small_teacher, "stages.0.prune.finetune_epochs=1", "stages.2.benchmark.runs=5",
                           stderr_has="stage 0 prune: epoch 1/1  sparsity 0.300  loss ")
    reference = report["reference"]["metrics"]["task"]["value"]
    prune = report["stages"][0]
    assert prune["kind"] == "prune" and prune["metrics"]["params_after"] < prune["metrics"]["params_before"]
    int8 = {a["name"]: a for a in report["artifacts"] if a["precision"] == "int8"}
    assert set(int8) == {"int8-onnx", "int8-tflite"}
    for artifact in int8.values():
        _check_verified(artifact, tmp_path, reference)
        prune_technique, ptq_technique = artifact["techniques"]
        assert prune_technique["label"] == "prune:l1-structured:0.3:layer:finetune=1" and prune_technique["sparsity"] == 0.3
        assert (ptq_technique["kind"], ptq_technique["precision"], ptq_technique["scheme"]) == ("ptq", "int8", "static")
        assert _accuracy(artifact) > 0.5
    _check_gates(report, {"max_degradation", "min_fidelity:top1_agreement"}, set(int8))


@pytest.fixture(scope="module")
def distill_qat(small_teacher, cli, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("distill-qat")
    report = _run_template(cli, "distill-qat", run_dir, small_teacher, "stages.0.distill.epochs=3",
                            "stages.2.qat.epochs=1", "stages.4.benchmark.runs=5")
    return run_dir, report


def test_distill_qat_template_exports_the_qat_graph_without_requantizing(distill_qat):
    run_dir, report = distill_qat
    reference = report["reference"]["metrics"]["task"]["value"]
    assert [s["kind"] for s in report["stages"]] == ["distill", "export", "qat", "quantize", "benchmark"]
    assert report["stages"][2]["technique"] == "qat:int8:per-channel:epochs=1"
    artifacts = {a["name"]: a for a in report["artifacts"]}
    assert set(artifacts) == {"fp32-onnx", "fp32-tflite", "qat-int8-onnx", "qat-int8-tflite"}
    for fmt in ("onnx", "tflite"):
        student, qat = artifacts[f"fp32-{fmt}"], artifacts[f"qat-int8-{fmt}"]
        _check_verified(qat, run_dir, reference)
        assert qat["path"] == f"model.qat-int8.{fmt}" and qat["precision"] == "int8" and qat["size_bytes"] < student["size_bytes"] / 2
        assert [t["label"] for t in qat["techniques"]] == [report["stages"][0]["technique"], "qat:int8:per-channel:epochs=1",
                                     "export:int8-qdq" if fmt == "onnx" else "export:int8-static-qdq"]
        # a second PTQ over the Q/DQ graph had dropped the TFLite file to chance level (0.1)
        assert _accuracy(qat) > max(0.5, _accuracy(student) - 0.05)
    assert _accuracy(artifacts["qat-int8-onnx"]) == pytest.approx(_accuracy(artifacts["qat-int8-tflite"]), abs=0.02)
    _check_gates(report, {"max_degradation"}, {"qat-int8-onnx", "qat-int8-tflite"})


@pytest.mark.parametrize("override, message", [
    ("stages.3.quantize.precisions=[fp16]", "stage quantize: the model is already int8 after qat; set precisions to int8 only (got fp16)"),
    ("stages.3={export: {}}", "stage export: the model is already int8 after qat; put the export stage (fp32 files) before qat"),
])
def test_stages_after_qat_that_would_requantize_are_one_line_errors(distill_qat, cli, small_teacher, override, message):
    run_dir, _ = distill_qat  # the stages before reuse the fixture's run
    result = cli("run", "recipes/templates/distill-qat.yaml", "--out", run_dir, "--set", f"model.source={small_teacher}",
                 "--set", "stages.0.distill.epochs=3", "--set", "stages.2.qat.epochs=1", "--set", override)
    assert result.exit_code == 2 and result.stderr.strip().splitlines()[-1] == f"error: {message}"


def test_a_search_block_validates_and_its_typos_point_at_the_line(tmp_path, cli):
    path = tmp_path / "search.yaml"
    path.write_text("model:\n  source: zoo:mnist_cnn\nstages:\n  - quantize: {}\nsearch:\n  prune_methods: [l1-structured]\n  calibratons: [minmax]\n")
    result = cli("recipe", "validate", path)
    assert result.exit_code == 2 and f"{path}:7:3: unknown key 'calibratons' in search" in result.stderr
    path.write_text(path.read_text().replace("calibratons", "calibrations"))
    assert cli("recipe", "validate", path).exit_code == 0
