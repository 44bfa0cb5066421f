"""Speed answers under load: a pick the 95 % intervals cannot decide gets its files re-timed side by side, bounded,
then is decided or said undecided with the new figures.

The files are real ONNX files from `compress quantize` and really run in onnxruntime; the intervals of the first
timing are widened as a busy machine leaves them, and the timer of the re-measure is injected (its ``clock``
parameter): one that adds heavy random delays (a machine that stays busy) and one that adds a steady millisecond
(a quiet one), so each outcome is reached every time.
"""
from __future__ import annotations

import itertools
import json
import random
import time

import numpy as np
import pytest
import torch

from compress.report import read_report, report_document, validate_report
from compress.steps.gates import policy_of
from compress.steps.latency import device_timing
from compress.steps.remeasure import PASS_RUNS, REMEASURE_PASSES, UNDECIDED, document, judged, remeasure_undecided, undecided_picks
from tests.models_for_tests import Embedder


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli):
    """A quantize run (fp32 and int8 ONNX, timed) of a small embedder."""
    folder = tmp_path_factory.mktemp("speed")
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Embedder().eval(), (torch.zeros(2, 1, 8, 8),)), str(folder / "emb.pt2"))
    np.savez(folder / "x.npz", x=np.random.default_rng(0).standard_normal((120, 1, 8, 8)).astype(np.float32))
    result = cli("quantize", folder / "emb.pt2", "--data", folder / "x.npz", "--format", "onnx", "--runs", "20",
                 "--out", folder / "run")
    assert result.exit_code == 0, result.output
    return folder / "run"


def _busy(run_dir):
    """The run's report with every interval widened as a busy machine leaves it: the pick is undecided."""
    report = read_report(json.loads((run_dir / "report.json").read_text()))
    for artifact in report.artifacts:
        entry = device_timing(artifact)
        entry.median_ci95_ms = [entry.p50_ms * 0.5, entry.p50_ms * 4]
    judge = judged(report.artifacts, policy_of(report))
    assert undecided_picks(document(judge()))
    return report, judge


def _clock(delay):
    """A wall clock that has moved on by ``delay()`` seconds more at each reading (runs are timed between readings)."""
    offset = itertools.accumulate(iter(delay, None))
    return lambda: time.perf_counter() + next(offset)


def test_a_machine_that_stays_busy_leaves_the_pick_undecided_with_the_new_figures_after_bounded_passes(run):
    report, judge = _busy(run)
    rng = random.Random(0)
    recommendation, record = remeasure_undecided(run, report.artifacts, judge, clock=_clock(lambda: rng.expovariate(100)))
    assert record["passes"] == REMEASURE_PASSES and not record["decided"]  # the bound, then said
    assert record["runs_per_file"] == REMEASURE_PASSES * PASS_RUNS and set(record["files"]) == {"fp32-onnx", "int8-onnx"}
    pick = document(recommendation)["local-cpu"]
    assert pick["verdict"] == UNDECIDED and pick["session"] == record["session"] == f"{record['replaced_session']}/remeasure"
    assert "undecided: machine busy: " in pick["why"] and "p50 " in pick["why"]  # with the new figures
    assert f"runs each, {record['seconds']:.1f} s): still undecided with these figures" in pick["why"]
    for artifact in report.artifacts:
        entry = device_timing(artifact)
        assert entry.runs == len(entry.samples_ms) == REMEASURE_PASSES * PASS_RUNS
        assert entry.conditions.order == "interleaved-warm" and entry.remeasured_from["session"] == record["replaced_session"]


def test_a_quiet_machine_decides_the_pick_after_one_pass(run):
    report, judge = _busy(run)
    recommendation, record = remeasure_undecided(run, report.artifacts, judge, clock=_clock(lambda: 0.001))
    assert record["decided"] and record["passes"] == 1
    pick = document(recommendation)["local-cpu"]
    assert "verdict" not in pick and "s): decided (it was undecided: machine busy)" in pick["why"]
    assert record["changed"] is None or pick["why"].count(" → ") == 1
    assert all(device_timing(a).measured_on.session == record["session"] for a in report.artifacts)
    report.recommended = recommendation
    assert validate_report(report_document(report)) == 2


def test_a_decided_pick_is_not_remeasured(run):
    report = read_report(json.loads((run / "report.json").read_text()))
    for artifact in report.artifacts:  # intervals that decide: tight around each p50
        entry = device_timing(artifact)
        entry.median_ci95_ms = [entry.p50_ms, entry.p50_ms]
    before = [device_timing(a).model_dump() for a in report.artifacts]
    recommendation, record = remeasure_undecided(run, report.artifacts, judged(report.artifacts, policy_of(report)))
    assert record is None and recommendation.remeasured is None
    assert [device_timing(a).model_dump() for a in report.artifacts] == before
