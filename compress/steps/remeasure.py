"""A bounded re-measure when a speed pick is undecided: the files its session timed are re-timed side by side.

``speed_pick`` (compress.steps.benchmark) says "undecided: machine busy" when the 95 % intervals are too wide to
tell whether a file is as fast as the fastest. Then every local file that session timed is re-timed here, in this
process, interleaved (compress.steps.benchmark.interleaved_samples: round-robin, each timed run right after an untimed
one of the same file, so load hits them all alike), in at most ``REMEASURE_PASSES`` passes of ``PASS_RUNS`` runs each
and no new pass after ``REMEASURE_SECONDS``; the samples of the passes are pooled. Stops as soon as the pick is decided.
The new entries replace the old ones under a session of their own (``<session>/remeasure``: figures of two methods are
never compared), each keeping the figure it replaced in ``remeasured_from``; the recommendation is judged again and
says what happened (decided, or still undecided with the new figures; a changed pick: from → to).

Example:
    >>> recommendation, record = remeasure_undecided(run_dir, artifacts, lambda: recommend_judged(artifacts, policy))
    >>> record["decided"], record["passes"], record["changed"]   # recommendation: a compress.report.model.Recommended
    (True, 1, {'from': 'int8-onnx', 'to': 'fp32-onnx'})
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from compress.steps.benchmark import busy_warnings, interleaved_samples, session_of, summarize
from compress.steps.latency import device_timing

REMEASURE_PASSES = 2        # extra passes at most
PASS_RUNS = 40              # interleaved rounds per pass: each file timed once per round
REMEASURE_SECONDS = 60.0    # no new pass starts after this
WARMUP = 5
UNDECIDED = "undecided: machine busy"

if TYPE_CHECKING:
    from compress.report.model import Recommended


def undecided_picks(recommendation: dict) -> list[dict]:
    """The picks of ``recommendation`` (for this CPU, per format) that are undecided."""
    picks = [recommendation.get("local-cpu"), *(recommendation.get("by_format") or {}).values()]
    return [pick for pick in picks if pick and pick.get("verdict") == UNDECIDED]


def contenders(artifacts: list, session: str | None) -> list:
    """Every file (compress.report.model.Artifact) timed on this machine (target local-cpu, batch 1) in ``session``,
    not failed."""
    found = []
    for artifact in artifacts:
        entry = device_timing(artifact)
        if entry and entry.target.startswith("local") and session_of(artifact) == session and artifact.status != "failed":
            found.append(artifact)
    return found


def _time_side_by_side(run_dir: Path, files: list, threads: int | None, runs: int, clock) -> tuple[dict[str, list[float]], dict]:
    """ms per run of each file, interleaved, under this host's timing lock (compress.safety.timing_lock); the device
    runner's own sessions and random inputs, in this process. Also where and when (``measured_on``)."""
    from compress.safety.timing_lock import exclusive_timing
    from compress.targets import device_runner

    runs_by_name = {}
    for artifact in files:
        path = Path(run_dir) / artifact.path
        session = device_runner.open_session(str(path), "auto", threads, None, spinning=False)
        arrays = device_runner.prepare(session, device_runner.random_inputs(session, 1))
        runs_by_name[artifact.name] = (lambda s=session, a=arrays: device_runner.run_batch(s, a))
    with exclusive_timing(device_timing(files[0]).target) as measured_on:
        samples = interleaved_samples(runs_by_name, runs, WARMUP, seed=0, clock=clock)
    return samples, measured_on


def _entry(timing, samples: list[float], measured_on: dict, passes: int) -> dict:
    """The latency entry (report.json form) that replaces ``timing`` (a Latency) with the pooled ``samples``."""
    old = timing.model_dump(by_alias=True, exclude_unset=True)
    stats = summarize(samples, 1)
    conditions = {**(old.get("conditions") or {}), "process": "in-process", "order": "interleaved-warm", "inputs": "random",
                  "spinning": "off", "warmup": WARMUP, "runs": len(samples), "max_runs": None,
                  "seconds": None, "stopped": "runs", "min_runs": None, "target_half_width": None}
    return {**old, **stats, "runs": len(samples), "warmup": WARMUP, "samples_ms": list(samples),
            "measured_by": f"compress re-measure: {passes} interleaved pass(es) in one process (set inputs + run + read outputs per timed run)",
            "conditions": conditions, "measured_on": {**(old.get("measured_on") or {}), **measured_on},
            "warnings": busy_warnings(stats, len(samples)),
            "remeasured_from": {"session": (old.get("measured_on") or {}).get("session"), "p50_ms": old.get("p50_ms"),
                                "median_ci95_ms": old.get("median_ci95_ms")}}


def judged(artifacts: list, policy) -> Callable[[], "Recommended"]:
    """What a run's recommendation is now: speed notes from the latest figures, then the pick (gates by ``policy``)."""
    from compress.steps.advice import check_int8_gains, explain_speed
    from compress.steps.gates import recommend_judged

    def judge():
        check_int8_gains(artifacts)
        explain_speed(artifacts)
        return recommend_judged(artifacts, policy)

    return judge


def remeasure_undecided(run_dir: str | Path, artifacts: list, judge: Callable[[], "Recommended"],
                        passes: int = REMEASURE_PASSES, seconds: float = REMEASURE_SECONDS,
                        clock: Callable[[], float] = time.perf_counter,
                        step: Callable[[str], None] = lambda message: None) -> tuple["Recommended", dict | None]:
    """``judge()`` (the recommendation of ``artifacts``), re-timing its undecided session's files side by side first
    when it is undecided (at most ``passes`` passes, none started after ``seconds``); the recommendation and the
    ``remeasured`` record (None: nothing was undecided, or nothing could be re-timed here). ``clock``: what times
    each run (wall time; a test passes its own)."""
    judged_first = judge()
    before = document(judged_first)
    undecided = undecided_picks(before)
    if not undecided:
        return judged_first, None
    session = undecided[0].get("session")
    files = contenders(artifacts, session)
    if len(files) < 2:
        return judged_first, None
    threads = device_timing(files[0]).threads
    step(f"speed undecided (machine busy): re-timing {len(files)} files side by side")
    started, pooled = time.monotonic(), {a.name: [] for a in files}
    old = {a.name: device_timing(a) for a in files}
    new_session = f"{session}/remeasure"
    done, recommendation, stopped = 0, before, "passes"
    while done < passes:
        if done and time.monotonic() - started > seconds:
            stopped = "seconds"
            break
        samples, measured_on = _time_side_by_side(run_dir, files, threads, PASS_RUNS, clock)
        for name, values in samples.items():
            pooled[name] += values
        done += 1
        measured_on["session"] = new_session
        for artifact in files:
            artifact.latency = [_entry(old[artifact.name], pooled[artifact.name], measured_on, done)
                                if entry is old[artifact.name] or entry.remeasured_from else entry
                                for entry in artifact.latency]
        recommendation = document(judge())
        if not undecided_picks(recommendation):
            stopped = "decided"
            break
    decided = not undecided_picks(recommendation)
    was, now = (before.get("local-cpu") or {}).get("artifact"), (recommendation.get("local-cpu") or {}).get("artifact")
    record = {"session": new_session, "replaced_session": session, "files": [a.name for a in files], "passes": done,
              "runs_per_file": len(next(iter(pooled.values()))), "seconds": round(time.monotonic() - started, 3),
              "decided": decided, "stopped": stopped, "changed": {"from": was, "to": now} if was != now else None}
    return annotated(recommendation, record), record


def document(recommendation) -> dict:
    """A compress.report.model.Recommended as report.json holds it."""
    return recommendation.model_dump(by_alias=True, exclude_unset=True)


def annotated(recommendation, record: dict) -> "Recommended":
    """``recommendation`` (a Recommended, or its document) saying the re-measure of ``record`` (:func:`annotate`),
    which it keeps under ``remeasured``."""
    from compress.report.model import Recommended

    doc = recommendation if isinstance(recommendation, dict) else document(recommendation)
    return Recommended.model_validate({**annotate(doc, record), "remeasured": record})


def annotate(recommendation: dict, record: dict | None) -> dict:
    """Each pick of ``recommendation`` says the re-measure of ``record`` (decided, or still undecided with the new
    figures) and the local pick a change (from → to); as it is when ``record`` is None."""
    if not record:
        return recommendation
    how = (f"re-measured side by side ({', '.join(record['files'])}: {record['passes']} interleaved pass(es), "
           f"{record['runs_per_file']} runs each, {record['seconds']:.1f} s)")
    for pick in [recommendation.get("local-cpu"), *(recommendation.get("by_format") or {}).values()]:
        if pick and how not in pick["why"]:
            pick["why"] += f"; {how}: " + ("still undecided with these figures" if pick.get("verdict") == UNDECIDED
                                          else "decided (it was undecided: machine busy)")
    local, changed = recommendation.get("local-cpu"), record.get("changed")
    if local and changed and "the pick changed" not in local["why"]:
        local["why"] += f"; the pick changed on the new figures: {changed['from']} → {changed['to']}"
    return recommendation
