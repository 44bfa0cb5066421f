"""Extension points: a toy calibration method, a toy precision and a toy format (onnxruntime's ORT format), each one
module under tests/toy_extensions/ plus one registration call here, with no other file edited, through quantize,
verify, bench, report, a recipe and tune."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from compress.backends import (PRECISIONS, get, register, register_calibration, register_precision, unregister,
                              unregister_calibration, unregister_precision)
from tests.cli_checks import json_output, one_line
from tests.toy_extensions import ema_calibration, int4_weight_sym, mse_calibration, ort_format


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint):
    return zoo_checkpoint("mnist_cnn", epochs=1)


@pytest.fixture
def mse():
    register_calibration(mse_calibration.MSE)
    yield
    unregister_calibration("mse")


@pytest.fixture
def int4_sym():
    register_precision(int4_weight_sym.INT4_WEIGHT_SYM, int4_weight_sym.quantizers())
    yield
    unregister_precision("int4-weight-sym")


def artifacts(run) -> dict:
    return {a["name"]: a for a in json.loads((run / "report.json").read_text())["artifacts"]}


def test_the_mse_range_search_clips_a_rare_outlier():
    counts = np.zeros(100)
    counts[:50], counts[-1] = 1000, 1  # values in [0, 1) and one at 2
    low, high = mse_calibration.best_range(counts, np.linspace(0.0, 2.0, 101), 0.0, 2.0)
    assert low == 0.0 and 0.9 < high < 2.0


def test_a_calibration_method_for_onnx_only_runs_on_onnx_and_is_refused_on_tflite(mse, mnist, tmp_path, cli):
    refused = cli("quantize", mnist, "--format", "onnx,tflite", "--calibration", "mse", "--out", tmp_path / "refused", "--json")
    assert refused.exit_code == 2
    line = one_line(refused)
    assert line == "error: --calibration: calibration 'mse' has no implementation for tflite; implemented for: onnx"
    assert json.loads(refused.stdout) == {"error": line.removeprefix("error: "), "exit_code": 2}
    assert not (tmp_path / "refused").exists()

    run = tmp_path / "run"
    json_output(cli("quantize", mnist, "--format", "onnx", "--calibration", "mse", "--calib-samples", "64", "--no-bench",
                    "--no-auto-fallback", "--out", run, "--json"))
    int8 = artifacts(run)["int8-onnx"]
    assert [t["label"] for t in int8["techniques"]][0].startswith("ptq:int8-static:mse:per-channel")
    assert int8["verified_in"] == ["onnxruntime"] and int8["metrics"]["fidelity"]["top1_agreement"] >= 0.9


def test_a_precision_one_format_implements_is_listed_there_only_and_verified(int4_sym, mnist, tmp_path, cli):
    assert PRECISIONS["int4-weight-sym"].formats == ("onnx",)
    assert "int4-weight-sym" in get("onnx").precisions and "int4-weight-sym" not in get("tflite").precisions

    run = tmp_path / "run"
    report = json_output(cli("quantize", mnist, "--format", "onnx", "--precision", "int4-weight-sym", "--calib-samples", "64",
                             "--no-bench", "--out", run, "--json"))
    entry = artifacts(run)["int4-weight-sym-onnx"]
    assert entry["path"] == "model.int4-weight-sym.onnx" and entry["precision"] == "int4-weight-sym"
    assert entry["verified_in"] == ["onnxruntime"] and entry["metrics"]["fidelity"]["top1_agreement"] >= 0.9
    nodes = [n for n in onnx.load(run / entry["path"]).graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2  # the two linears
    for node in nodes:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["bits"] == 4 and attributes["block_size"] == 64 and len(node.input) < 4  # symmetric: no zero points
    assert "pre-flight has no table of the ops int4-weight-sym covers" in json.dumps(report)

    refused = cli("quantize", mnist, "--format", "tflite", "--precision", "int4-weight-sym", "--no-bench",
                  "--out", tmp_path / "refused")
    assert refused.exit_code == 2
    assert one_line(refused).startswith("error: unknown TFLite precision 'int4-weight-sym'; choose one of fp32, int8,")
    assert not list((tmp_path / "refused").glob("model.int4-weight-sym.*"))


@pytest.fixture(scope="module")
def toys():
    """The toy precision, method and format, each registered with one call (the format last: it quantizes to every
    ONNX precision registered by then)."""
    register_precision(int4_weight_sym.INT4_WEIGHT_SYM, int4_weight_sym.quantizers())
    register_calibration(mse_calibration.MSE)
    register(ort_format.ort_format())
    yield
    unregister("ort")
    unregister_calibration("mse")
    unregister_precision("int4-weight-sym")


TOY_FILES = {"int8-onnx": "model.int8.onnx", "int4-weight-sym-onnx": "model.int4-weight-sym.onnx",
             "int8-ort": "model.int8.ort", "int4-weight-sym-ort": "model.int4-weight-sym.ort"}


@pytest.fixture(scope="module")
def toy_run(toys, mnist, cli, tmp_path_factory):
    """One quantize run: the toy format beside ONNX, the toy precision beside int8, calibrated by the toy method."""
    run = tmp_path_factory.mktemp("toys") / "run"
    report = json_output(cli("quantize", mnist, "--format", "onnx,ort", "--precision", "int8,int4-weight-sym",
                             "--calibration", "mse", "--calib-samples", "64", "--runs", "5", "--no-auto-fallback",
                             "--out", run, "--json"))
    return run, report


def test_the_toys_go_through_quantize_verify_bench_and_report(toy_run, cli):
    run, _ = toy_run
    made = artifacts(run)
    assert {name: made[name]["path"] for name in TOY_FILES} == TOY_FILES
    assert (run / "model.fp32.ort").read_bytes()[4:8] == b"ORTM"  # the ORT format's flatbuffer identifier
    for name, entry in made.items():
        assert entry["verified_in"] == ["onnxruntime"] and entry["latency"], name
    assert made["int8-ort"]["format"] == "ort" and made["int8-ort"]["precision"] == "int8"
    assert made["int8-ort"]["techniques"][0]["label"].startswith("ptq:int8-static:mse:per-channel")
    assert made["int8-ort"]["metrics"]["fidelity"]["top1_agreement"] >= 0.9
    assert made["int4-weight-sym-ort"]["metrics"]["fidelity"]["top1_agreement"] >= 0.9

    verified = json_output(cli("verify", run / "model.int8.ort", "--samples", "64", "--json"))
    assert verified["artifact"].endswith("model.int8.ort") and verified["runtime"] == "onnxruntime"
    timed = json_output(cli("bench", run / "model.int4-weight-sym.ort", "--runs", "5", "--json"))
    [result] = timed["results"]
    assert result["runtime"] == "onnxruntime" and result["runs"] == 5 and result["p50_ms"] > 0
    assert artifacts(run)["int4-weight-sym-ort"]["latency"][-1]["measured_on"] == result["measured_on"]  # recorded

    (run / "model.int8.ort").write_bytes((run / "model.int8.ort").read_bytes() + b"\0")  # changed since its run
    changed = cli("verify", run / "model.int8.ort", "--samples", "64")
    assert changed.exit_code == 2 and "sha256" in one_line(changed)

    assert cli("report", "validate", run).exit_code == 0
    estimated = cli("bench", run / "model.int4-weight-sym.ort", "--target", "estimate")  # the record has no estimate reader
    assert estimated.exit_code == 2
    assert one_line(estimated) == "error: model.int4-weight-sym.ort: the estimate reads .onnx and .tflite files"


RECIPE = """\
seed: 0
model: {{source: {source}}}
stages:
  - quantize: {{formats: [ort], precisions: [int8, int4-weight-sym], calibration: mse, calib_samples: 64, bench_runs: 5}}
targets: [local]
gates: {{max_degradation: 0.05}}
output: {{dir: {out}}}
"""


def test_the_toys_go_through_a_recipe(toys, mnist, cli, tmp_path):
    recipe = tmp_path / "toys.yaml"
    recipe.write_text(RECIPE.format(source=mnist, out=tmp_path / "run"))
    assert cli("recipe", "validate", recipe).exit_code == 0
    json_output(cli("run", recipe, "--json"))
    made = {a["name"]: a for a in json.loads((tmp_path / "run" / "report.json").read_text())["artifacts"]}
    for name in ("int8-ort", "int4-weight-sym-ort"):
        assert (tmp_path / "run" / made[name]["path"]).is_file() and made[name]["verified_in"] == ["onnxruntime"]
        assert made[name]["latency"], name
    assert made["int8-ort"]["techniques"][0]["label"].startswith("ptq:int8-static:mse:per-channel")


def test_the_toys_go_through_tune(toys, mnist, cli, tmp_path):
    import yaml

    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"search": {"precisions": ["int8"], "calibrations": ["mse"], "calib_samples": [64],
                                                 "per_channel": [True], "dynamic_op_types": [[]], "keep_float_max": 0,
                                                 "prune_methods": ["none"]}}))
    document = json_output(cli("tune", mnist, "--format", "ort", "--objective", "size", "--trials", "2", "--max-degradation", "0.05",
                               "--search", search, "--out", tmp_path / "study", "--json"))
    assert document["trials"] >= 1  # the one point of this search may be the baseline itself
    best = document["best"]
    assert best["artifact"].endswith(".ort") and (tmp_path / "study" / "best" / best["artifact"].rsplit("/", 1)[1]).is_file()


def test_the_toy_precision_goes_through_tune(int4_sym, mnist, cli, tmp_path):
    import yaml

    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"search": {"precisions": ["int4-weight-sym"], "calibrations": ["minmax"], "keep_float_max": 0,
                                                 "prune_methods": ["none"]}}))
    document = json_output(cli("tune", mnist, "--format", "onnx", "--objective", "size", "--trials", "2", "--max-degradation", "0.05",
                               "--search", search, "--out", tmp_path / "study", "--json"))
    best = document["best"]
    assert best["params"] == {"precision": "int4-weight-sym", "keep_float": 0, "prune": "none"}  # no calibration knobs drawn
    assert best["artifact"].endswith("model.int4-weight-sym.onnx") and (tmp_path / "study" / "best" / "model.int4-weight-sym.onnx").is_file()
    recipe = yaml.safe_load((tmp_path / "study" / "recipe.yaml").read_text())
    assert recipe["stages"][-1]["quantize"]["precisions"] == ["int4-weight-sym"]

    refused = cli("tune", mnist, "--format", "tflite", "--trials", "1", "--search", search, "--out", tmp_path / "refused")
    assert refused.exit_code == 2 and not (tmp_path / "refused").exists()
    implemented = ", ".join(PRECISIONS["int4-weight-sym"].formats)  # onnx (and ort, when the toy format is registered)
    assert one_line(refused) == (f"error: --search {search}: search precisions 'int4-weight-sym': the tflite format has no "
                                 f"quantizer for it; formats that do: {implemented}")


@pytest.fixture
def ema():
    register_calibration(ema_calibration.EMA)
    yield
    unregister_calibration("ema")


def test_a_registered_method_reaches_the_second_process(ema, mnist, cli, tmp_path, monkeypatch):
    """``--format onnx,tflite`` converts TFLite in a second process (compress.steps.ahead): the registration goes
    there with the request, so this process converts nothing itself."""
    from compress.backends.tflite import export

    converted_here, convert = [], export._build
    monkeypatch.setattr(export, "_build", lambda *args: converted_here.append(args[2]) or convert(*args))
    run = tmp_path / "run"
    json_output(cli("quantize", mnist, "--format", "onnx,tflite", "--calibration", "ema", "--calib-samples", "64",
                    "--max-degradation", "0.05", "--no-bench", "--no-auto-fallback", "--out", run, "--json"))
    assert converted_here == []  # fp32 and int8 both came from the second process
    made = artifacts(run)
    for name in ("int8-tflite", "int8-onnx"):
        assert made[name]["techniques"][0]["label"].startswith("ptq:int8-static:ema:per-channel"), name
        assert made[name]["verified_in"] and made[name]["metrics"]["fidelity"]["top1_agreement"] >= 0.8, name


def test_a_ray_worker_registers_the_drivers_records_before_its_task(toys):
    import multiprocessing

    from compress.backends import extensions, quantizable
    from compress.tune.executors import with_registrations

    with multiprocessing.get_context("spawn").Pool(1) as fresh:  # a new interpreter: the built-in records only
        assert "ort" not in fresh.apply(quantizable)
        assert "ort" in fresh.apply(with_registrations, (extensions(), quantizable))
