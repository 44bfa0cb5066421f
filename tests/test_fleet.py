"""Past one machine: tune trials and a fleet of recipes on a real multi-node Ray cluster that shares no paths with the
driver; artifacts land on the driver with verified sha256; timings on one host never overlap."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import yaml

from compress.safety.io import sha256_file
from compress.report import validate_report
from tests.cli_checks import json_output

ray = pytest.importorskip("ray")

SEARCH = {"precisions": ["int8"], "calibrations": ["minmax"], "calib_samples": [256], "per_channel": [True], "dynamic_op_types": [[]],
          "keep_float_max": 1, "prune_methods": ["none"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a second node, one CPU each, each with its own TMPDIR; the driver (this process) connects to it."""
    from ray.cluster_utils import Cluster

    node_dirs = [tmp_path_factory.mktemp(f"node{i}-tmp") for i in range(2)]
    common = {"num_cpus": 1, "object_store_memory": 80 * 1024**2, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={**common, "env_vars": {"TMPDIR": str(node_dirs[0])}})
    cluster.add_node(**common, env_vars={"TMPDIR": str(node_dirs[1])})
    cluster.wait_for_nodes()
    yield cluster, [str(d) for d in node_dirs]
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def sent(monkeypatch):
    """Every argument the driver hands to a Ray task, pickled as Ray ships it (object-store inputs resolved)."""
    from compress.tune.executors import RayPool

    payloads: list[bytes] = []
    put, submit = RayPool.put, RayPool.submit

    def spy_put(self, value):
        payloads.append(pickle.dumps(value))
        return put(self, value)

    def spy_submit(self, function, *args, **kwargs):
        payloads.append(pickle.dumps([a for a in args if not isinstance(a, ray.ObjectRef)]))
        return submit(self, function, *args, **kwargs)

    monkeypatch.setattr(RayPool, "put", spy_put)
    monkeypatch.setattr(RayPool, "submit", spy_submit)
    return payloads


def _ran_elsewhere(worker: dict, node_dirs: list[str], driver_dir) -> None:
    """The task ran in another process, in a temporary directory of its node, outside anything of the driver's."""
    assert worker["pid"] != os.getpid()
    assert worker["tempdir"] in node_dirs
    assert worker["workdir"].startswith(worker["tempdir"]) and not worker["workdir"].startswith(str(driver_dir))


def _no_driver_path(payloads: list[bytes], *paths) -> None:
    assert payloads
    for payload in payloads:
        for path in paths:
            assert str(path).encode() not in payload, f"a task was handed the driver path {path}"


def test_tune_on_a_cluster_ships_bytes_and_never_overlaps_timings(cluster, zoo_checkpoint, cli, tmp_path, sent):
    _, node_dirs = cluster
    model = tmp_path / "inputs" / "mnist.pt"
    model.parent.mkdir()
    model.write_bytes(zoo_checkpoint("mnist_cnn", epochs=1, width=0.5).read_bytes())
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"search": SEARCH}))
    out = tmp_path / "study"
    document = json_output(cli("tune", model, "--max-degradation", "0.1", "--objective", "size", "--trials", "2", "--workers", "2",
                               "--executor", "ray", "--search", search, "--out", out, "--json"))
    trials = json.loads((out / "tune.json").read_text())["trials"]
    assert document["trials"] == 2 and len(trials) == 2
    _no_driver_path(sent, tmp_path, model)
    for trial in trials:
        _ran_elsewhere(trial["worker"], node_dirs, tmp_path)
        assert trial["artifact"].startswith(str(out / "trials"))  # landed on the driver, sha256 as the worker measured it
        assert sha256_file(trial["artifact"]) == trial["sha256"]
        assert trial["measured_on"]["host"] == trial["worker"]["host"]
    first, second = sorted((t["measured_on"]["window"] for t in trials))
    assert trials[0]["measured_on"]["host"] == trials[1]["measured_on"]["host"]  # one machine: one timing at a time
    assert first[1] <= second[0], f"timing windows overlap: {first} and {second}"
    assert sha256_file(out / "best" / os.path.basename(document["best"]["artifact"])) == document["best"]["sha256"]


def _recipe(folder, name: str, **changes) -> str:
    recipe = {"seed": 0, "model": {"source": "zoo:mnist_cnn", "epochs": 1}, "data": {"name": "digits28"},
              "stages": [{"quantize": {"formats": ["onnx"], "precisions": ["int8"], "bench": False}}], "targets": ["local"],
              "gates": {"max_degradation": 0.1}, **changes}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_fleet_on_a_cluster_isolates_failures_and_lands_verified_runs(cluster, zoo_checkpoint, cli, tmp_path, sent):
    _, node_dirs = cluster
    model = tmp_path / "inputs" / "mnist.pt"
    model.parent.mkdir()
    model.write_bytes(zoo_checkpoint("mnist_cnn", epochs=1).read_bytes())
    recipes = [_recipe(tmp_path, "good", model={"source": str(model)}),
               _recipe(tmp_path, "too-big", gates={"max_size_bytes": 1000}),   # runs, and its gate fails
               _recipe(tmp_path, "bad", model={"source": str(tmp_path / "missing.pt")})]
    out = tmp_path / "fleet"
    result = cli("fleet", *recipes, "--executor", "ray", "--out", out, "--json")
    assert result.exit_code == 2, result.output  # a bad recipe outranks a failed gate
    document = json.loads(result.stdout)
    rows = {r["name"]: r for r in document["recipes"]}
    assert {name: r["exit_code"] for name, r in rows.items()} == {"good": 0, "too-big": 1, "bad": 2}
    assert "missing.pt not found" in rows["bad"]["error"]
    _no_driver_path(sent, tmp_path, model)
    for name in ("good", "too-big"):
        _ran_elsewhere(rows[name]["worker"], node_dirs, tmp_path)
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["outputs"] and all(sha256_file(out / name / path) == digest for path, digest in manifest["outputs"].items())
    assert rows["too-big"]["gates"]["failed"] == ["max_size_bytes:int8-onnx"]
    assert rows["good"]["recommended"]["artifact"] == "int8-onnx" and rows["good"]["gates"] == {"passed": 1, "total": 1, "failed": []}
    compare = cli("report", "compare", out / "good", out / "too-big", "--json")
    assert compare.exit_code == 0, compare.output
    assert (out / "compare.html").is_file()


def test_fleet_on_local_workers_isolates_failures_and_lands_verified_runs(zoo_checkpoint, cli, tmp_path):
    """The same fleet without Ray: two worker processes on this machine, the same isolation and the same landing."""
    model = zoo_checkpoint("mnist_cnn", epochs=1)
    recipes = [_recipe(tmp_path, "good", model={"source": str(model)}),
               _recipe(tmp_path, "too-big", model={"source": str(model)}, gates={"max_size_bytes": 1000}),
               _recipe(tmp_path, "bad", model={"source": str(tmp_path / "missing.pt")})]
    out = tmp_path / "fleet"
    result = cli("fleet", *recipes, "--executor", "local", "--workers", "2", "--out", out, "--json")
    assert result.exit_code == 2, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["recipes"]}
    assert {name: r["exit_code"] for name, r in rows.items()} == {"good": 0, "too-big": 1, "bad": 2}
    for name in ("good", "too-big"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["outputs"] and all(sha256_file(out / name / path) == digest for path, digest in manifest["outputs"].items())
        validate_report(json.loads((out / name / "report.json").read_text()))
    assert rows["too-big"]["gates"]["failed"] == ["max_size_bytes:int8-onnx"] and not (out / "bad" / "report.json").exists()
