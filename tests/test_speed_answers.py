"""Speed answers that do not flip under load: intervals too wide to decide say so, `compress bench` says when it
changes the pick, and a recommendation never compares figures from two timing sessions. report.html shows it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compress.report.model import Artifact
from compress.steps.advice import check_int8_gains, explain_speed
from compress.steps.benchmark import speed_against, speed_pick, start_timing_session, summarize
from compress.steps.recording import record_latencies
from tests.browser import render
from tests.report_models import artifact_model, latency_entry

REPO = str(Path(__file__).parents[1])


def compress(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real console entry point, piped as in CI."""
    return subprocess.run([sys.executable, "-m", "compress", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=timeout)


def busy_samples(steady_ms: float, steady: int, stretched: int) -> list[float]:
    """Timed runs on a busy machine: ``steady`` runs at the file's own speed, ``stretched`` ones slowed 8x to 17x by
    other work."""
    return [*np.linspace(steady_ms, steady_ms * 1.05, steady), *np.linspace(steady_ms * 8, steady_ms * 17, stretched)]


def artifact(name: str, size: int, samples: list[float], session: str = "s1") -> Artifact:
    return artifact_model(name=name, size_bytes=size, latency=[latency_entry(session=session, **summarize(samples))])


def evidence(a: Artifact) -> str:
    return "judged on test data"


def test_intervals_too_wide_to_decide_say_undecided_machine_busy():
    """The issue's case: a small file at p50 13 ms against the fastest at 1.75 ms, both timed under load."""
    fast = artifact("fp32-onnx", 400_000, busy_samples(1.754, steady=22, stretched=18))
    slow = artifact("int8-onnx", 100_000, busy_samples(1.6, steady=18, stretched=22))  # unluckier: most runs stretched
    assert fast.latency[0].p50_ms < 1.9 and slow.latency[0].p50_ms > 13
    assert slow.latency[0].median_ci95_ms[0] <= fast.latency[0].median_ci95_ms[1], \
        "the intervals overlap: the old rule called them the same speed and picked the smaller, slower-looking file"
    assert speed_against(slow, fast) == "undecided"
    pick = speed_pick([fast, slow], evidence)
    assert pick["artifact"] == "fp32-onnx" and pick["verdict"] == "undecided: machine busy" and pick["undecided"] == ["int8-onnx"]
    assert "undecided: machine busy: int8-onnx p50" in pick["why"] and "idle machine" in pick["why"]


def test_steady_figures_still_let_the_smaller_file_win():
    steady = [1.0 + 0.01 * np.sin(i) for i in range(40)]
    fast, small = artifact("fp32-onnx", 400_000, steady), artifact("int8-onnx", 100_000, [v * 1.005 for v in steady])
    pick = speed_pick([fast, small], evidence)
    assert pick["artifact"] == "int8-onnx" and "verdict" not in pick and "not_compared" not in pick


def test_figures_from_two_sessions_are_never_compared():
    steady = [1.0 + 0.01 * np.sin(i) for i in range(40)]
    old = [artifact(name, size, steady, "quantize") for name, size in (("a", 3), ("b", 2), ("c", 1))]
    new = [artifact(name, size, [v * 3 for v in steady], "bench") for name, size in (("d", 6), ("e", 5))]
    pick = speed_pick([*old, *new], evidence)
    assert pick["artifact"] == "c" and pick["session"] == "quantize"
    assert [n["artifact"] for n in pick["not_compared"]] == ["d", "e"] and "session quantize" in pick["why"]


def test_speed_and_gain_notes_are_derived_from_typed_findings_never_parsed_back():
    """explain_speed/check_int8_gains run again replace only the notes they derived; a user's note that reads like
    one is kept, and a file is judged by its findings, not by its notes' text."""
    steady = [1.0 + 0.01 * np.sin(i) for i in range(40)]
    fp32 = artifact("fp32-onnx", 1000, steady)
    fp32.precision = "fp32"
    look_alike = "2.00x faster than fp32 on this CPU (written by hand)"
    int8 = artifact("int8-onnx", 990, [v * 0.5 for v in steady])
    int8.notes, int8.sha256 = [look_alike], "1" * 64  # not the fp32 file's bytes
    for _ in range(2):
        check_int8_gains([fp32, int8])
        explain_speed([fp32, int8])
    assert int8.speed.verdict == "faster" and int8.gain.finding == "no size gain"
    assert int8.notes == [look_alike, int8.gain.note, int8.speed.note]
    assert int8.speedup_vs_fp32 == round(int8.speed.fp32_ms / int8.speed.ms, 3)
    plain = artifact_model(name="fp16-onnx", precision="fp16", notes=[look_alike, "gains nothing in size: said by hand"])
    explain_speed([fp32, plain])
    assert plain.speed is None and plain.notes == [look_alike, "gains nothing in size: said by hand"]


@pytest.fixture(scope="module")
def run_dir(zoo_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speed") / "run"
    done = compress("quantize", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "onnx", "--precision", "int8,fp16",
                    "--runs", "30", "--no-gate", "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def figures_in(why: str) -> list[float]:
    return [float(v) for v in re.findall(r"p50 ([\d.]+) ms", why)]


def test_bench_of_some_files_never_mixes_sessions_and_says_a_changed_pick(run_dir, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(run)], check=True)
    before = json.loads((run / "report.json").read_text())
    quantize_session = {a["latency"][0]["measured_on"]["session"] for a in before["artifacts"]}
    assert len(quantize_session) == 1  # one quantize run: one session, carried by every figure

    one = next(a for a in before["artifacts"] if a["precision"] == "int8")
    done = compress("bench", run / one["path"], "--runs", "30", "--json")
    document = json.loads(done.stdout)
    report = json.loads((run / "report.json").read_text())
    sessions = {a["name"]: a["latency"][0]["measured_on"]["session"] for a in report["artifacts"]}
    assert sessions[one["name"]] == document["session"] != quantize_session.pop()
    pick = report["recommended"]["local-cpu"]
    assert document["recommended"] == [{"report": str(run / "report.json"), **pick}]  # bench says the pick it leaves
    assert pick["session"] != document["session"]  # two files of the quantize run outweigh one of the bench run
    assert [n["artifact"] for n in pick["not_compared"]] == [one["name"]] and "not compared" in pick["why"]
    int8 = next(a for a in report["artifacts"] if a["name"] == one["name"])
    assert "speedup_vs_fp32" not in int8 and any(n.startswith("speed not compared with fp32: timed in session") for n in int8["notes"])
    same_session = {f"{a['latency'][0]['p50_ms']:.3f}" for a in report["artifacts"] if sessions[a["name"]] == pick["session"]}
    assert set(re.findall(r"p50 ([\d.]+) ms", pick["why"])) <= same_session, pick["why"]  # every figure quoted: one session

    every = compress("bench", *[run / a["path"] for a in report["artifacts"]], "--runs", "30")
    assert every.returncode == 0, every.stderr
    after = json.loads((run / "report.json").read_text())
    new_pick = after["recommended"]["local-cpu"]
    assert "not_compared" not in new_pick and new_pick["session"] != pick["session"]
    assert all("speedup_vs_fp32" in a for a in after["artifacts"] if a["precision"] != "fp32")  # one session again
    if new_pick["artifact"] != pick["artifact"]:  # the new figures moved the pick: said, old → new and why
        assert f"recommendation changed in {run / 'report.json'}: {pick['artifact']} → {new_pick['artifact']}: " in every.stdout
        assert after["recommended"]["changed"]["from"] == pick["artifact"]
    else:
        assert "recommendation changed" not in every.stdout
    assert f"recommended in {run / 'report.json'}" in every.stdout and new_pick["why"] in every.stdout


def test_a_changed_pick_is_recorded_with_old_new_and_why(run_dir, tmp_path):
    """Fed measured samples: one session makes the first file clearly fastest, the next makes another one."""
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(run)], check=True)
    names = [a["path"] for a in json.loads((run / "report.json").read_text())["artifacts"]]
    template = json.loads((run / "report.json").read_text())["artifacts"][0]["latency"][0]
    steady = [1.0 + 0.01 * np.sin(i) for i in range(40)]

    def session_where_fastest(fastest: str) -> list[dict]:
        session = start_timing_session()
        entries = []
        for name in names:
            samples = steady if name == fastest else [v * 4 for v in steady]
            entries.append((run / name, {**template, **summarize(samples), "measured_on": {**template["measured_on"], "session": session}}))
        return record_latencies(entries)

    first = session_where_fastest(names[0])[0]
    pick = json.loads((run / "report.json").read_text())["recommended"]["local-cpu"]["artifact"]
    second = session_where_fastest(names[1])[0]
    report = json.loads((run / "report.json").read_text())
    assert second["changed"]["from"] == pick and second["changed"]["to"] == report["recommended"]["local-cpu"]["artifact"]
    assert report["recommended"]["changed"] == second["changed"] and "fastest" in second["changed"]["why"]
    assert first["report"] == second["report"] == run / "report.json"


def test_report_html_shows_the_recommendation_and_the_machine_it_was_timed_on(run_dir, tmp_path):
    from importlib.metadata import version

    from compress.targets.device_runner import cpu_model

    report = json.loads((run_dir / "report.json").read_text())
    text = render(run_dir / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    pick = report["recommended"]["local-cpu"]
    section = text.split('<h2 id="recommended">Recommended</h2>', 1)[1].split("<h2>", 1)[0]
    assert f"<b>For this CPU: {pick['artifact']}</b>" in section and f"p50 {figures_in(pick['why'])[0]:.3f} ms" in section
    assert "<h3>Per format</h3>" in section and "<td>onnx</td>" in section
    environment = text.split("<h2>Environment</h2>", 1)[1]
    where = report["artifacts"][0]["latency"][0]["measured_on"]
    assert f"<td>executorch</td><td>{version('executorch')}</td>" in environment
    assert f"<td>CPU</td><td>{cpu_model()}, {os.cpu_count()} cores</td>" in environment
    assert f"<td>load average, 1 min, when timed</td><td>{where['loadavg_1m']:.2f}</td>" in environment
