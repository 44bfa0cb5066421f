"""Timing statistics, the local and cuda targets, `compress bench`, the analytic estimate and the adb output parser.

Artifacts are made here (torch.onnx.export / litert_torch.convert of a tiny test model), so these tests do not lean
on the exporters; the report.json test uses a real `compress quantize` run directory.
"""
from __future__ import annotations

import json
import math
import shutil

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from compress.steps.benchmark import benchmark_artifact, busy_warnings, median_ci, summarize


class Tiny(nn.Module):
    """Conv(1→4, 3x3) on 8x8 → 4x6x6, then Linear(144 → 5): 4*36*9 + 144*5 = 2016 MACs per sample."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


TINY_MACS = 4 * 6 * 6 * 9 + 144 * 5


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    import litert_torch

    folder = tmp_path_factory.mktemp("tiny")
    model, example = Tiny().eval(), (torch.zeros(1, 1, 8, 8),)
    torch.onnx.export(model, example, str(folder / "tiny.onnx"), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    litert_torch.convert(model, example).export(str(folder / "tiny.tflite"))
    return {"onnx": folder / "tiny.onnx", "tflite": folder / "tiny.tflite"}


def latency_schema() -> dict:
    from compress.report import load_schema

    schema = load_schema()
    return {**schema["$defs"]["Latency"], "$defs": schema["$defs"]}


# --- statistics ---


@pytest.mark.parametrize("n, ranks", [(10, (2, 9)), (20, (6, 15)), (100, (40, 61))])
def test_median_ci_uses_the_binomial_order_statistics(n, ranks):
    samples = np.arange(1, n + 1, dtype=float)[::-1]  # rank r has the value r
    assert median_ci(samples) == ranks  # the textbook 95 % ranks for these n


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_median = math.log(2)  # exponential(1)
    hits = sum(low <= true_median <= high for low, high in (median_ci(rng.exponential(size=40)) for _ in range(2000)))
    assert 0.93 <= hits / 2000 <= 0.99


def test_summarize_matches_numpy_and_reports_throughput():
    samples = list(np.random.default_rng(1).gamma(9.0, 0.1, size=500))
    stats = summarize(samples, batch=8)
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
        assert stats[key] == pytest.approx(np.percentile(samples, q), rel=1e-3)
    assert stats["mean_ms"] == pytest.approx(np.mean(samples), rel=1e-3)
    assert stats["stdev_ms"] == pytest.approx(np.std(samples, ddof=1), rel=1e-3)
    assert stats["median_ci95_ms"][0] <= stats["p50_ms"] <= stats["median_ci95_ms"][1]
    assert stats["throughput_per_s"] == pytest.approx(8 * 1000 / stats["p50_ms"], rel=1e-3)


def test_busy_machine_is_flagged_and_a_quiet_one_is_not():
    rng = np.random.default_rng(2)
    quiet = summarize(list(1.0 + rng.normal(0, 0.01, 300)))
    disturbed = summarize(list(1.0 + rng.exponential(1.5, 300)))
    assert busy_warnings(quiet, 300, {"loadavg_1m": 0.5, "cpus": 2}) == []
    warnings = busy_warnings(disturbed, 300, {"loadavg_1m": 0.5, "cpus": 2})
    assert len(warnings) == 1 and "busy" in warnings[0] and "p90" in warnings[0]
    assert "load average 7.0 on 2 cpus" in busy_warnings(quiet, 300, {"loadavg_1m": 7.0, "cpus": 2})[0]
    assert "only 5 timed runs" in busy_warnings(quiet, 5)[-1]


# --- local target, real runtimes ---


@pytest.mark.parametrize("fmt, runtime", [("onnx", "onnxruntime"), ("tflite", "litert")])
def test_local_bench_entry_follows_the_contract(tiny_files, fmt, runtime):
    entry = benchmark_artifact(tiny_files[fmt], threads=1, batch=4, runs=40, warmup=5, adaptive=False)
    jsonschema.validate(entry, latency_schema())
    assert entry["target"] == "local-cpu" and entry["runtime"] == runtime and entry["emulated"] is False
    assert (entry["batch"], entry["threads"], entry["runs"], entry["warmup"]) == (4, 1, 40, 5)
    assert len(entry["samples_ms"]) == 40
    assert 0 < entry["min_ms"] <= entry["p50_ms"] <= entry["p90_ms"] <= entry["p99_ms"] <= entry["max_ms"]
    assert entry["p50_ms"] == pytest.approx(float(np.percentile(entry["samples_ms"], 50)), rel=1e-3)
    assert entry["load_ms"] > 0 and entry["first_inference_ms"] > 0
    assert entry["peak_memory_bytes"] > entry["model_memory_bytes"] > 0
    assert entry["throughput_per_s"] == pytest.approx(4000 / entry["p50_ms"], rel=1e-2)
    assert "cpus" in entry["device"] and entry["runtime_version"]
    if fmt == "tflite":  # litert-torch exports a fixed batch of 1: the runner says how batch 4 ran
        assert any("fixed batch of 1" in w for w in entry["warnings"])


def test_seconds_mode_runs_until_the_time_is_up(tiny_files):
    entry = benchmark_artifact(tiny_files["onnx"], seconds=0.3, warmup=2, adaptive=False)
    assert entry["runs"] > 10 and sum(entry["samples_ms"]) <= 300 + entry["max_ms"]


def test_torch_runtime_times_a_zoo_checkpoint(zoo_checkpoint):
    entry = benchmark_artifact(zoo_checkpoint("linreg", epochs=2), runtime="torch", runs=20, warmup=2)
    assert entry["runtime"] == "torch" and entry["runs"] == 20 and entry["p50_ms"] > 0


def test_cuda_without_a_gpu_is_skipped_not_a_crash(tiny_files, cli):
    from compress.targets.cuda import gpu_visible, ort_gpu_providers

    entry = benchmark_artifact(tiny_files["onnx"], target="cuda", runs=20)
    jsonschema.validate(entry, latency_schema())
    if gpu_visible() and ort_gpu_providers():  # a GPU machine: the real CUDA path ran
        assert entry["p50_ms"] > 0 and "skipped" not in entry
        return
    assert entry["skipped"].startswith("no CUDA device: skipped") and entry["p50_ms"] is None and entry["runs"] == 0
    result = cli("bench", tiny_files["onnx"], "--target", "cuda", "--runs", "5")
    assert result.exit_code == 0 and "no CUDA device: skipped" in result.output
    refused = cli("bench", tiny_files["tflite"], "--target", "cuda", "--json")
    assert refused.exit_code == 0 and "LiteRT has no CUDA path" in json.loads(refused.stdout)["results"][0]["skipped"]


def test_cli_prints_a_table_and_one_json_document(tiny_files, cli):
    table = cli("bench", tiny_files["onnx"], tiny_files["tflite"], "--runs", "20", "--threads", "1")
    assert table.exit_code == 0, table.output
    assert "latency per inference (ms)" in table.output and "tiny.onnx" in table.output and "tiny.tflite" in table.output
    result = cli("bench", tiny_files["onnx"], "--target", "local,estimate:cortex-a53", "--runs", "20", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [r["target"] for r in document["results"]] == ["local-cpu"] and document["results"][0]["runs"] == 20
    assert document["estimates"][0]["label"] == "estimate" and document["estimates"][0]["macs"] == TINY_MACS


@pytest.mark.parametrize("args, message", [
    (["--runs", "5", "--seconds", "1"], "not both"),
    (["--target", "bluetooth"], "unknown target"),
    (["--runtime", "tensorrt"], "unknown runtime"),
    (["--batch", "0"], "--batch: give 1 to 65,536"),
    (["--target", "qemu-arm64", "--qemu-cpu", "cortex a76;rm"], "bad --qemu-cpu"),
])
def test_bad_usage_exits_2_with_one_line(tiny_files, cli, args, message):
    result = cli("bench", tiny_files["onnx"], *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_and_unloadable_artifacts(tiny_files, cli, tmp_path):
    missing = cli("bench", tmp_path / "nope.onnx")
    assert missing.exit_code == 2 and "not found" in missing.output
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(b"not a flatbuffer at all")
    result = cli("bench", foreign)  # not a TFLite file at all: bad input, said before any runtime starts
    assert result.exit_code == 2 and "is not a .tflite model" in result.output
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x1c\x00\x00\x00TFL3 but not a flatbuffer")  # the identifier, then garbage: the runtime says
    result = cli("bench", broken)
    assert result.exit_code == 3 and result.output.count("\n") == 1
    assert "local-cpu:" in result.output and "could not load broken.tflite" in result.output


# --- report.json ---


@pytest.fixture(scope="module")
def quantized_run(zoo_checkpoint, tmp_path_factory):
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize

    run_dir = tmp_path_factory.mktemp("run")
    config = QuantizeConfig(formats=["onnx"], include_fp32=False, bench=False, calib_samples=64)
    quantize(load_model(zoo_checkpoint("mnist_cnn", epochs=1, width=0.5)), config, out_dir=run_dir)
    return run_dir


def test_bench_results_land_in_report_json(quantized_run, cli):
    from compress.report import validate_report

    artifact = quantized_run / "model.int8.onnx"
    for _ in range(2):  # the second run replaces the first entry instead of adding another
        result = cli("bench", artifact, "--runs", "25", "--threads", "1")
        assert result.exit_code == 0, result.output
    report = json.loads((quantized_run / "report.json").read_text())
    validate_report(report)
    latency = next(a for a in report["artifacts"] if a["path"] == "model.int8.onnx")["latency"]
    assert len(latency) == 1 and latency[0]["target"] == "local-cpu" and latency[0]["runs"] == 25
    assert "latency added to" in result.output
    assert f"{latency[0]['p50_ms']:.3f}" in (quantized_run / "report.md").read_text()
    skipped = cli("bench", artifact, "--target", "cuda", "--runs", "5")
    assert skipped.exit_code == 0
    validate_report(json.loads((quantized_run / "report.json").read_text()))  # a skipped entry keeps the report valid


# --- estimate ---


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_estimate_counts_the_macs_by_hand_and_says_it_is_an_estimate(tiny_files, fmt):
    from compress.targets.estimate import CORES, estimate_artifact

    result = estimate_artifact(tiny_files[fmt], core="cortex-a53", batch=2)
    assert result["label"] == "estimate" and result["macs"] == 2 * TINY_MACS and result["int8_macs"] == 0
    core = CORES["cortex-a53"]
    assert result["compute_ms"] == pytest.approx(2 * 2 * TINY_MACS / (core.peak_gops(False) * 1e9) * 1e3, rel=1e-3)
    assert result["estimate_ms"] == max(result["compute_ms"], result["memory_ms"])
    assert result["weight_bytes"] >= (4 * 9 + 4 + 144 * 5 + 5) * 4
    custom = estimate_artifact(tiny_files[fmt], peak_gops=1.0, bandwidth_gbs=1.0)
    assert custom["compute_ms"] == pytest.approx(2 * TINY_MACS / 1e9 * 1e3, rel=1e-3)


def test_estimate_rejects_an_unknown_core(tiny_files, cli):
    result = cli("bench", tiny_files["onnx"], "--target", "estimate:pentium")
    assert result.exit_code == 2 and "unknown core 'pentium'" in result.output


# --- adb ---

# Real benchmark_model output. TF issue #73862 (2024, lines prefixed "INFO: "), cut where the text is cut:
BENCHMARK_MODEL_2024 = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [mobilenet_v1_1.0_224.tflite]
INFO: Signature to run: []
INFO: Loaded model mobilenet_v1_1.0_224.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 16.9008
INFO: Initialized session in 12.75ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=37 first=14744 curr=15520 min=13164 max=18295 avg=13764.3 std=967

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=74 first=14850 curr=13315 min=13105 max=15765 avg=13520.2 std=470

INFO: Inference timings in us: Init: 12750, First inference: 14744, Warmup (avg): 13764.3, Inference (avg): 13520.2
"""
# TF issue #42507 (2020, adb shell on a phone, no prefix, "Peak memory footprint" line), up to the op profile:
BENCHMARK_MODEL_2020 = """STARTING!
Duplicate flags: num_threads
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/espcn_harmonic_2x_slim_w_cl.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/espcn_harmonic_2x_slim_w_cl.tflite
The input model file size (MB): 0.004448
Initialized session in 0.855ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=15 first=49060 curr=33682 min=32825 max=49060 avg=34825.1 std=3930

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=32891 curr=33978 min=32641 max=34005 avg=33209.4 std=450

Inference timings in us: Init: 855, First inference: 49060, Warmup (avg): 34825.1, Inference (avg): 33209.4
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=0 overall=12.8672
"""
# github.com/yuenshome/yuenshome.github.io issue #77 (2018-era tool, "Average inference timings" line):
BENCHMARK_MODEL_2018 = """Loaded model /data/local/tmp/tflite/tfmodel/mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 9.933ms
Running benchmark for at least 4 iterations and at least 0.5 seconds
count=7 first=127425 curr=66709 min=66709 max=127425 avg=76605.9 std=20944

Running benchmark for at least 10 iterations and at least 1 seconds
count=15 first=66753 curr=66800 min=66699 max=66838 avg=66767.6 std=39

Average inference timings in us: Warmup: 76605.9, Init: 9933, no stats: 66767.6
"""


def test_benchmark_model_parser_on_real_output():
    from compress.targets.adb import parse_benchmark_model_output

    new = parse_benchmark_model_output(BENCHMARK_MODEL_2024)
    assert new == {"count": 74, "mean_ms": 13.5202, "stdev_ms": 0.47, "min_ms": 13.105, "max_ms": 15.765, "warmup_count": 37,
                   "warmup_mean_ms": 13.7643, "first_inference_ms": 14.744, "load_ms": 12.75}
    old = parse_benchmark_model_output(BENCHMARK_MODEL_2020)
    assert (old["count"], old["mean_ms"], old["stdev_ms"], old["load_ms"], old["first_inference_ms"], old["threads"]) == \
           (50, 33.2094, 0.45, 0.855, 49.06, 4)
    assert old["peak_memory_bytes"] == int(12.8672 * 2**20)
    oldest = parse_benchmark_model_output(BENCHMARK_MODEL_2018)
    assert (oldest["count"], oldest["mean_ms"], oldest["min_ms"], oldest["max_ms"], oldest["load_ms"]) == (15, 66.7676, 66.699, 66.838, 9.933)
    same = parse_benchmark_model_output("count=3 curr=1200(all same)\ncount=5 curr=1000(all same)\n"
                                        "Inference timings in us: Init: 5, First inference: 1200, Warmup (avg): 1200, Inference (avg): 1000")
    assert (same["count"], same["mean_ms"], same["stdev_ms"]) == (5, 1.0, 0.0)  # the tool's "(all same)" form
    with pytest.raises(ValueError, match="no timed-run statistics"):
        parse_benchmark_model_output("ERROR: Could not open 'model.tflite'.\nERROR: Benchmarking failed.")


def test_benchmark_model_summary_becomes_a_valid_latency_entry():
    from compress.steps.benchmark import latency_entry
    from compress.targets.adb import parse_benchmark_model_output

    summary = parse_benchmark_model_output(BENCHMARK_MODEL_2020)
    report = {"summary": summary, "load_ms": summary["load_ms"], "first_inference_ms": summary["first_inference_ms"],
              "peak_rss_bytes": summary["peak_memory_bytes"], "environment": {"runtime_version": "TFLite benchmark_model"}}
    base = {"target": "adb:R58M", "runtime": "litert", "batch": 1, "threads": 4, "emulated": False}
    entry = latency_entry(base, "Pixel 4 (SM8150, arm64-v8a)", report, 1, [])
    jsonschema.validate(entry, latency_schema())
    assert entry["mean_ms"] == 33.21 and entry["p50_ms"] is None and "benchmark_model" in entry["percentiles"]


def test_adb_without_a_device_or_client_exits_3_naming_it(tiny_files, cli):
    result = cli("bench", tiny_files["tflite"], "--target", "adb:emulator-5554", "--runs", "3")
    assert result.exit_code == 3 and result.output.count("\n") == 1
    expected = "no usable Android device" if shutil.which("adb") else "adb not found"
    assert "adb:emulator-5554" in result.output and expected in result.output


# executor_runner (ExecuTorch, examples/portable/executor_runner) as built with XNNPACK: ET_LOG lines on stderr.
EXECUTOR_RUNNER_2026 = """I 00:00:00.000512 executorch:executor_runner.cpp:421] Model file /data/local/tmp/c/model.int8.pte is loaded.
I 00:00:00.000533 executorch:executor_runner.cpp:431] Using method forward
I 00:00:00.003108 executorch:executor_runner.cpp:520] Model loaded in 2.559000 ms.
I 00:00:00.004870 executorch:executor_runner.cpp:688] Iteration 1 of 5: 1.741000 ms
I 00:00:00.005771 executorch:executor_runner.cpp:688] Iteration 2 of 5: 0.881000 ms
I 00:00:00.006650 executorch:executor_runner.cpp:688] Iteration 3 of 5: 0.862000 ms
I 00:00:00.007540 executorch:executor_runner.cpp:688] Iteration 4 of 5: 0.871000 ms
I 00:00:00.008431 executorch:executor_runner.cpp:688] Iteration 5 of 5: 0.874000 ms
I 00:00:00.008440 executorch:executor_runner.cpp:698] Model executed successfully 5 time(s) in 5.229000 ms.
I 00:00:00.008452 executorch:executor_runner.cpp:703] 1 outputs:
"""
EXECUTOR_RUNNER_2024 = """I 00:00:00.001223 executorch:executor_runner.cpp:140] Model loaded in 1.877 ms.
I 00:00:00.021430 executorch:executor_runner.cpp:186] Model executed successfully 20 time(s) in 18.400000 ms.
"""


def test_executor_runner_parser_keeps_per_iteration_times_after_warmup():
    from compress.targets.adb import parse_executor_runner_output

    new = parse_executor_runner_output(EXECUTOR_RUNNER_2026, warmup=2)
    assert new["samples_ms"] == [0.862, 0.871, 0.874] and new["first_inference_ms"] == 1.741
    assert (new["count"], new["load_ms"], new["mean_ms"]) == (5, 2.559, 1.0458)
    old = parse_executor_runner_output(EXECUTOR_RUNNER_2024, warmup=2)
    assert "samples_ms" not in old and (old["count"], old["mean_ms"], old["load_ms"]) == (20, 0.92, 1.877)
    with pytest.raises(ValueError, match="no 'Model executed successfully'"):
        parse_executor_runner_output("E 00:00:00.000100 executorch:executor_runner.cpp:90] Failed to open model.pte")


def test_executor_runner_times_become_valid_latency_entries_with_percentiles():
    from compress.steps.benchmark import latency_entry
    from compress.targets.adb import parse_executor_runner_output

    base = {"target": "adb:R58M", "runtime": "executorch", "batch": 1, "threads": 4, "emulated": False}
    parsed = parse_executor_runner_output(EXECUTOR_RUNNER_2026, warmup=1)
    report = {"samples_ms": parsed["samples_ms"], "warmup": 1, "load_ms": parsed["load_ms"], "measured_by": "ExecuTorch executor_runner"}
    entry = latency_entry(base, "Pixel 4", report, 1, [])
    jsonschema.validate(entry, latency_schema())
    assert entry["runs"] == 4 and entry["p50_ms"] == pytest.approx(0.8725) and entry["measured_by"] == "ExecuTorch executor_runner"
    old = parse_executor_runner_output(EXECUTOR_RUNNER_2024)
    summary = {"count": old["count"], "mean_ms": old["mean_ms"], "stdev_ms": None, "min_ms": None, "max_ms": None}
    entry = latency_entry(base, "Pixel 4", {"summary": summary, "measured_by": "ExecuTorch executor_runner"}, 0, [])
    jsonschema.validate(entry, latency_schema())
    assert entry["mean_ms"] == 0.92 and entry["p50_ms"] is None and "executor_runner" in entry["percentiles"]
