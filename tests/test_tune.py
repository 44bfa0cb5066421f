"""`compress tune`: a real Optuna study on a small digits CNN, trials verified in onnxruntime, local and Ray workers."""
from __future__ import annotations

import json
import shutil

import optuna
import pytest
import yaml

from tests.cli_checks import json_output, one_line

# A narrow space keeps each trial to a few seconds; 256 calibration samples keep plain int8 PTQ in it (the baseline).
SEARCH = {"precisions": ["int8"], "calibrations": ["minmax"], "calib_samples": [256], "per_channel": [True], "dynamic_op_types": [[]],
          "keep_float_max": 1, "prune_methods": ["none", "l1-structured"], "prune_sparsity": [0.3, 0.4], "finetune_epochs": [1]}
SEED = "2"  # with it the sampled trial prunes, so the recipe's prune stage is exercised too
# Channels cut by 90 % and no fine-tuning: no trial can hold the accuracy.
HOPELESS = {**SEARCH, "prune_methods": ["l1-structured"], "prune_sparsity": [0.9, 0.95], "finetune_epochs": [0]}


def _search_file(folder, space: dict):
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump({"search": space}))
    return path


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint):
    return zoo_checkpoint("mnist_cnn", epochs=2, width=0.5)


@pytest.fixture(scope="module")
def tuned(mnist, cli, tmp_path_factory):
    """Two trials (plain int8 PTQ first, then a sampled one) on local worker processes."""
    folder = tmp_path_factory.mktemp("tune")
    out = folder / "study"
    return out, json_output(cli("tune", mnist, "--max-degradation", "0.1", "--objective", "size", "--trials", "2", "--seed", SEED,
                                "--search", _search_file(folder, SEARCH), "--out", out, "--json"))


def test_tune_writes_pareto_best_model_and_recipe(tuned, cli):
    out, document = tuned
    assert document["trials"] == 2 and document["baseline"]["number"] == 0
    best = document["best"]
    assert best["degradation"] <= 0.1 and best["size_bytes"] <= document["baseline"]["size_bytes"]
    assert best["number"] in [r["number"] for r in document["pareto"]]
    kept = json.loads((out / "best" / "trial.json").read_text())
    assert kept["number"] == best["number"] and (out / "best" / best["artifact"].rsplit("/", 1)[1]).is_file()
    table = (out / "pareto.md").read_text()
    assert "## Pareto front" in table and "Plain int8 PTQ" in table and f"| {best['number']} | {best['size_bytes']:,} |" in table
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert cli("recipe", "validate", out / "recipe.yaml").exit_code == 0


def test_recipe_reproduces_the_winner(tuned, cli, tmp_path):
    out, document = tuned
    best = document["best"]
    result = cli("run", out / "recipe.yaml", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    artifact = json.loads((tmp_path / "report.json").read_text())["artifacts"][-1]
    assert [t["label"] for t in artifact["techniques"]] == best["techniques"] and best["techniques"][0].startswith("prune:l1-structured")
    same_file = artifact["sha256"] == best["sha256"]
    within_noise = abs(artifact["size_bytes"] - best["size_bytes"]) <= 0.01 * best["size_bytes"] and \
        abs(artifact["metrics"]["task"]["value"] - best["metric"]) <= 0.01
    assert same_file or within_noise, (artifact, best)


def test_interrupted_study_resumes_without_redoing_trials(tuned, mnist, cli, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(tuned[0], out)
    done = {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("trial-*/report.json")}
    study = optuna.load_study(study_name="compress-tune", storage=f"sqlite:///{out / 'study.db'}")
    study.ask()  # what a killed run leaves behind: a trial still marked RUNNING
    result = cli("tune", mnist, "--max-degradation", "0.1", "--objective", "size", "--trials", "3", "--seed", SEED,
                 "--search", _search_file(tmp_path, SEARCH), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    numbers = [t["number"] for t in json.loads((out / "tune.json").read_text())["trials"]]
    assert numbers[:2] == [0, 1] and len(numbers) == 3 and 2 not in numbers  # trial 2 was the interrupted one
    assert "trial 0:" not in result.stderr and "trial 1:" not in result.stderr and f"trial {numbers[2]}:" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("trial-000[01]/report.json")} == done
    states = [t.state for t in optuna.load_study(study_name="compress-tune", storage=f"sqlite:///{out / 'study.db'}").trials]
    assert states[2] == optuna.trial.TrialState.FAIL


def test_impossible_limit_exits_1_and_keeps_the_closest(mnist, cli, tmp_path):
    out = tmp_path / "study"
    result = cli("tune", mnist, "--max-degradation", "0", "--objective", "size", "--trials", "1",
                 "--search", _search_file(tmp_path, HOPELESS), "--out", out)
    assert result.exit_code == 1, result.output
    assert "no trial met its gates (degradation <= 0.0 with labels" in result.stderr and "closest" in result.stderr
    assert "No trial met the constraint" in (out / "pareto.md").read_text()
    assert "did NOT meet the gates" in (out / "recipe.yaml").read_text()
    assert list((out / "closest").glob("*.onnx")) and not (out / "best").exists()


def test_repeated_configuration_is_not_rerun_and_a_converged_search_stops(mnist, cli, tmp_path):
    from compress.tune.search import MAX_REPEATS

    single = {**SEARCH, "prune_methods": ["none"], "keep_float_max": 0}  # one configuration: plain int8 PTQ
    out = tmp_path / "study"
    result = cli("tune", mnist, "--max-degradation", "0.1", "--trials", "5", "--search", _search_file(tmp_path, single), "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("same configuration as trial 0, not run again") == MAX_REPEATS
    assert [p.name for p in (out / "trials").iterdir()] == ["trial-0000"]
    table = (out / "pareto.md").read_text()
    assert "## All 1 completed trials" in table and "The search converged" in table


def test_dynamic_linear_layers_are_searched_and_kept_in_the_recipe(mnist, cli, tmp_path):
    space = {**SEARCH, "prune_methods": ["none"], "dynamic_op_types": [["MatMul", "Gemm"]]}  # no plain int8 PTQ baseline
    out = tmp_path / "study"
    result = cli("tune", mnist, "--max-degradation", "0.1", "--objective", "size", "--trials", "2",
                 "--search", _search_file(tmp_path, space), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "tune.json").read_text())["trials"]
    assert len(trials) == 2 and all(t["params"]["dynamic_ops"] == "MatMul+Gemm" for t in trials)
    assert all("ptq:int8-dynamic:Gemm" in t["techniques"] for t in trials)
    stages = yaml.safe_load((out / "recipe.yaml").read_text())["stages"]
    assert stages[-1]["quantize"]["dynamic_op_types"] == ["MatMul", "Gemm"]


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_runs_trials_as_ray_tasks(mnist, cli, tmp_path, local_ray):
    out = tmp_path / "study"
    # what is tested is where trials run: ONNX only and no pruning keep each Ray task short
    result = cli("tune", mnist, "--max-degradation", "0.1", "--trials", "2", "--executor", "ray", "--workers", "2", "--format", "onnx",
                 "--search", _search_file(tmp_path, {**SEARCH, "prune_methods": ["none"]}), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trials"] == 2
    assert local_ray.is_initialized()  # tune leaves a Ray it did not start running
    tasks = [e for e in local_ray.timeline() if e.get("name", "").endswith("run_trial") and e.get("ph") == "X"]
    assert len(tasks) == 2, [e.get("name") for e in local_ray.timeline()]


@pytest.mark.parametrize("args, message", [
    (["no-such-model.pt", "--max-degradation", "0.005"], "no-such-model.pt"),
    (["{model}", "--max-degradation", "0.005", "--budget", "10 minutes"], "--budget: budget '10 minutes': write it like 90s, 10m or 1h"),
    (["{model}", "--max-degradation", "0.005", "--objective", "speed"], "--objective"),
    (["{model}", "--max-degradation", "0.005", "--search", "{search}"], "--search"),
])
def test_bad_input_exits_2_with_one_line(args, message, mnist, cli, tmp_path):
    search = _search_file(tmp_path, {"prune_method": ["magnitude"]})
    result = cli("tune", *[a.format(model=mnist, search=search) for a in args], "--out", tmp_path / "study")
    assert result.exit_code == 2, result.output
    assert message in one_line(result)
    assert not (tmp_path / "study").exists()


def test_tune_without_labels_judges_trials_by_their_fidelity_floors(mnist, cli, tmp_path):
    """Unlabelled data: no degradation exists, so each trial's outputs must keep their floors (logits become embeddings)."""
    import numpy as np

    from compress.data import resolve_data
    from compress.loading.model import load_model

    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=resolve_data(load_model(mnist).dataset["name"]).x[0][:300])
    out = tmp_path / "study"
    document = json_output(cli("tune", mnist, "--data", unlabelled, "--objective", "size", "--trials", "2", "--seed", SEED,
                               "--search", _search_file(tmp_path, SEARCH), "--out", out, "--json"))
    best = document["best"]
    assert best["degradation"] is None and best["floor_gap"] <= 0 and not best["floor_failures"]
    assert "fidelity floors without" in (out / "pareto.md").read_text() and "x floor" in (out / "pareto.md").read_text()
