"""One timing method: every latency entry says how it was taken, onnxruntime timing sessions do not spin when asked,
adaptive runs stop once the median is known (never past the cap), a recipe's artifact gets one speed note, and the
bench suite's recommendation is judged on the same records as its table."""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from compress.report import read_report
from compress.report.model import Artifact
from compress.steps.advice import explain_speed
from compress.steps.benchmark import TARGET_HALF_WIDTH, benchmark_artifact, describe_conditions
from compress.report.model import TimingConditions
from compress.backends.onnx.session import OrtRunner
from compress.targets.device_runner import OrtSession, prepare, random_inputs, time_session

RECIPE = """\
seed: 0
model:
  source: {source}
stages:
  - quantize:
      formats: [onnx]
      precisions: [int8]
      calib_samples: 64
      bench_runs: 30
  - benchmark:
      runs: 30
targets: [local]
output:
  dir: {out}
"""


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    path = tmp_path_factory.mktemp("timing") / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 16),), str(path), input_names=["x"], dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return path


@pytest.fixture(scope="module")
def recipe_run(zoo_checkpoint, tmp_path_factory, cli):
    folder = tmp_path_factory.mktemp("recipe-timing")
    path = folder / "timing.yaml"
    path.write_text(RECIPE.format(source=zoo_checkpoint("mnist_cnn", epochs=2), out=folder / "run"))
    result = cli("run", path)
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_a_latency_entry_records_how_it_was_taken(tiny_onnx):
    entry = benchmark_artifact(tiny_onnx, threads=1, runs=40, warmup=3)
    conditions = entry["conditions"]
    TimingConditions.model_validate(conditions)
    assert conditions["process"] == "child process" and conditions["inputs"] == "random" and conditions["threads"] == 1
    assert conditions["spinning"] == "on" and conditions["warmup"] == 3 and conditions["runs"] == entry["runs"]
    assert conditions["max_runs"] == 40 and conditions["stopped"] in ("ci", "runs")
    assert describe_conditions(conditions).startswith(
        "child process, one file at a time, random inputs, 1 thread, onnxruntime spinning on")


def test_onnxruntime_timing_sessions_do_not_spin_when_asked(tiny_onnx):
    options = OrtRunner(tiny_onnx, spinning=False).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert OrtSession(str(tiny_onnx), None, None).spinning == "on"  # onnxruntime's own default stays available
    assert benchmark_artifact(tiny_onnx, runs=10, spinning=False)["conditions"]["spinning"] == "off"


def test_adaptive_runs_stop_once_the_median_is_known_and_never_pass_the_cap(tiny_onnx):
    session = OrtSession(str(tiny_onnx), 1, None)
    arrays = prepare(session, random_inputs(session, 1))
    _, samples, stopped = time_session(session, arrays, runs=500, seconds=None, warmup=2, until_ci=0.5, min_runs=20)
    assert (len(samples), stopped) == (20, "ci")  # a loose target is met at the first check
    _, samples, stopped = time_session(session, arrays, runs=30, seconds=None, warmup=2, until_ci=1e-9, min_runs=20)
    assert (len(samples), stopped) == (30, "runs")  # an unreachable target stops at the cap
    entry = benchmark_artifact(tiny_onnx, runs=300)
    assert 20 <= entry["runs"] <= 300 and entry["conditions"]["target_half_width"] == TARGET_HALF_WIDTH
    if entry["conditions"]["stopped"] == "ci":
        low, high = entry["median_ci95_ms"]
        assert (high - low) / 2 <= TARGET_HALF_WIDTH * entry["p50_ms"] * 1.01  # 4-digit rounding of the figures
    fixed = benchmark_artifact(tiny_onnx, runs=25, adaptive=False)
    assert fixed["runs"] == 25 and fixed["conditions"]["stopped"] == "runs" and fixed["conditions"]["min_runs"] is None


def _speed_notes(artifact: dict | Artifact) -> list[str]:
    """The notes that say the artifact's speed (the note derived from its ``speed``)."""
    artifact = artifact if isinstance(artifact, Artifact) else Artifact.model_validate(artifact)
    return [note for note in artifact.notes if artifact.speed and note == artifact.speed.note]


def test_a_recipe_artifact_gets_exactly_one_speed_note_quoting_its_own_latency(recipe_run):
    report = json.loads((recipe_run / "report.json").read_text())
    artifacts = {a["name"]: a for a in report["artifacts"]}
    int8, fp32 = artifacts["int8-onnx"], artifacts["fp32-onnx"]
    (note,) = _speed_notes(int8)
    assert f"{int8['latency'][0]['p50_ms']:.3f} ms vs {fp32['latency'][0]['p50_ms']:.3f} ms" in note
    assert all(entry["conditions"]["max_runs"] == 30 for a in report["artifacts"] for entry in a["latency"])
    again = read_report(report).artifacts
    explain_speed(again)  # `compress bench` rewrites notes the same way: never a second one
    assert len(_speed_notes(next(a for a in again if a.name == "int8-onnx"))) == 1
    assert "## How the p50 was timed" in (recipe_run / "report.md").read_text()


def test_the_bench_suite_recommends_on_the_records_of_its_table(recipe_run):
    """The suite's table and the recommendation it quotes come from one interleaved timing."""
    from bench.baselines import file_variant, timing_runner
    from bench.suite import interleaved_timing, rejudge, timing_conditions

    assert timing_runner(recipe_run / "model.int8.onnx").session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"
    report = json.loads((recipe_run / "report.json").read_text())
    labels = {a["name"]: f"compress-{a['name']}" for a in report["artifacts"]}
    variants = [file_variant(labels[a["name"]], recipe_run / a["path"], 8) for a in report["artifacts"]]
    sample = (torch.zeros(1, 1, 28, 28).numpy(),)
    timing = interleaved_timing(variants, {1: sample}, runs=20, warmup=2)
    recommended = rejudge(report, timing, labels, timing_conditions(20, 2))
    pick = recommended["by_format"]["onnx"]
    p50 = re.search(r"p50 ([\d.]+) ms", pick["why"]).group(1)
    assert p50 == f"{timing[labels[pick['artifact']]][1]['p50_ms']:.3f}"
    assert all(a["latency"][0]["conditions"]["process"] == "in-process" for a in report["artifacts"])


def test_a_recipe_run_records_where_its_time_went(recipe_run):
    timings = json.loads((recipe_run / "report.json").read_text())["timings"]
    phases = [row["phase"] for row in timings["phases"]]
    assert phases[0] == "loading the model" and any(phase.startswith("stage 0 ") for phase in phases)
    assert sum(row["wall_s"] for row in timings["phases"]) <= timings["total"]["wall_s"]
