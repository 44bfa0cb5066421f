"""Latency of an artifact on a target, as one report.json ``latency[]`` entry, with honest statistics.

The device runner (compress/targets/device_runner.py) does the timing on every target; this module turns its raw
samples into p50/p90/p99, mean, stdev, a distribution-free 95 % confidence interval of the median, load time, first
inference, peak memory and throughput, and warns when the spread says the machine was busy.

One method behind every figure: each timed run sets the inputs, runs and reads the outputs, after warm-up runs;
onnxruntime's idle worker threads spin (its default, ``SPINNING``) only where one file has the cores to itself, and
not where runtimes share them (``spinning=False``: spinning threads starve whatever runs next). Runs are adaptive: ``runs`` is a cap, and timing stops once the median's 95 % interval is within
±``TARGET_HALF_WIDTH`` of it (after at least ``MIN_RUNS``); ``adaptive=False`` times exactly ``runs``. Each entry's
``conditions`` record how it was taken (process, inputs, threads, spinning, runs, warm-up, why timing stopped).
Files compared side by side (the bench suite, the int8 ONNX pick) are timed by ``interleaved_samples``: round-robin,
each timed run right after an untimed one of the same file, so those figures are steady-state latencies too.
Every entry carries its timing session (``measured_on.session``: one quantize run, one `compress bench`), the CPU and
the load average; ``speed_pick`` compares figures of one session only and says "undecided: machine busy" when the
intervals are too wide to tell.

Example:
    >>> entry = benchmark_artifact("runs/mnist/model.int8.onnx", target="local", threads=1, runs=200)
    >>> entry["p50_ms"], entry["median_ci95_ms"], entry["conditions"]["stopped"], entry["runs"]
    (0.21, [0.209, 0.212], 'ci', 24)
    >>> describe_conditions(entry["conditions"])
    'child process, one file at a time, random inputs, 1 thread, onnxruntime spinning off, 24 timed runs after 10 warm-up (stopped: median known to ±2 %)'
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from compress.errors import UsageError
from compress.steps.latency import device_p50, device_timing

if TYPE_CHECKING:  # the report models load with pydantic: never at CLI start-up
    from compress.report.model import Artifact

DEFAULT_RUNS = 100             # the cap of adaptive timing (the exact count with adaptive=False)
DEFAULT_WARMUP = 10
SPINNING = True                # one file at a time in its own process: onnxruntime's default (its idle threads spin);
                               # measured here, spinning off made such a p50 slower and less steady. Interleaved timing
                               # (bench/), where runtimes share the cores, passes spinning=False
MIN_RUNS = 20                  # adaptive timing checks its interval only from here on
TARGET_HALF_WIDTH = 0.02       # adaptive timing stops once the median is known to ±2 %
ORDER = {"alone": "one file at a time",
         "interleaved": "interleaved with the other variants (one run per visit: caches as the previous variant left them)",
         "interleaved-warm": "interleaved with the other variants (each timed run right after an untimed one of the same file)"}
STOPPED = {"ci": "median known to ±{:g} %", "runs": "run count reached", "seconds": "time budget spent"}
STORED_SAMPLES = 2000          # at most this many raw samples go into report.json
BUSY_P90_OVER_P50 = 1.5        # p90 this far above p50: runs were disturbed
BUSY_CI_HALF_WIDTH = 0.05      # median known no better than ±5 %
MEASURED_BY = "compress device_runner (set inputs + run + read outputs, per timed run)"


# --- statistics -----------------------------------------------------------------------------------------------------


def median_ci(samples: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics (binomial(n, 1/2) ranks; the
    device runner's ``median_rank``, which also decides when adaptive timing may stop).

    With fewer than 6 samples no interval reaches 95 %; the full range is returned.
    """
    from compress.targets.device_runner import median_rank

    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(ordered)
    if n < 6:
        return float(ordered[0]), float(ordered[-1])
    low = median_rank(n, confidence)  # 1-based rank; the upper one mirrors it
    return float(ordered[low - 1]), float(ordered[n - low])


def summarize(samples_ms: list[float], batch: int = 1) -> dict:
    """p50/p90/p99, mean, stdev, min, max, the median's 95 % CI and throughput (samples per second) of timed runs."""
    if not samples_ms:
        raise ValueError("no timed runs")
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    mean = float(values.mean())
    low, high = median_ci(values)
    return {
        "p50_ms": _round(p50), "p90_ms": _round(p90), "p99_ms": _round(p99), "mean_ms": _round(mean),
        "stdev_ms": _round(float(values.std(ddof=1)) if len(values) > 1 else 0.0),
        "min_ms": _round(float(values.min())), "max_ms": _round(float(values.max())),
        "median_ci95_ms": [_round(low), _round(high)],
        "throughput_per_s": round(batch * 1000.0 / p50, 2) if p50 > 0 else None,
    }


def busy_warnings(stats: dict, runs: int, environment: dict | None = None) -> list[str]:
    """Plain warnings when the numbers cannot be trusted as they stand (busy machine, too few runs)."""
    reasons = []
    p50 = stats.get("p50_ms") or 0.0
    if p50 > 0 and stats.get("p90_ms") and stats["p90_ms"] > BUSY_P90_OVER_P50 * p50:
        reasons.append(f"p90 is {stats['p90_ms'] / p50:.1f}x p50")
    low, high = stats.get("median_ci95_ms") or (None, None)
    if p50 > 0 and low is not None and (high - low) / 2 > BUSY_CI_HALF_WIDTH * p50:
        reasons.append(f"the median is only known to ±{(high - low) / 2 / p50:.0%}")
    environment = environment or {}
    load, cpus = environment.get("loadavg_1m"), environment.get("cpus")
    if load is not None and cpus and load > cpus:
        reasons.append(f"load average {load:.1f} on {cpus} cpus")
    warnings = []
    if reasons:
        warnings.append("the machine looked busy (" + "; ".join(reasons) + "): rerun on an idle machine, "
                        "or with more --runs, before trusting small differences")
    if runs < 10:
        warnings.append(f"only {runs} timed runs: the percentiles are rough")
    return warnings


def _round(value: float) -> float:
    """Four significant digits, never rounding a sub-microsecond figure to zero."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    digits = max(4 - int(math.floor(math.log10(abs(value)))) - 1, 0)
    return round(value, digits)


# --- several files side by side -------------------------------------------------------------------------------------


def interleaved_samples(runs: dict[str, Callable[[], object]], rounds: int, warmup: int = 5, seed: int = 0,
                        clock=time.perf_counter, min_rounds: int | None = None, warm: bool = True) -> dict[str, list[float]]:
    """Time several files side by side: ms per run of each ``runs[name]()``, round-robin in a fresh shuffled order
    per round, so machine noise hits them all alike.

    ``warm``: each visit runs the file once untimed right before its timed run, so every figure is a steady-state
    latency (what back-to-back inference and compress's one-file-at-a-time timing see) and not the time to reload a
    file's weights the previous variant pushed out of the caches (``warm=False`` measures that). ``min_rounds``: stop
    once every median is known to ±TARGET_HALF_WIDTH (95 % interval), after at least that many rounds; else after
    ``rounds``. ``clock``: wall time, or ``time.thread_time`` for the calling thread's CPU time.

    Example:
        >>> samples = interleaved_samples({"fp32": lambda: fp32.run(inputs), "int8": lambda: int8.run(inputs)}, rounds=100)
        >>> {name: summarize(values)["p50_ms"] for name, values in samples.items()}
        {'fp32': 3.06, 'int8': 0.96}
    """
    from compress.targets.device_runner import median_half_width

    for run in runs.values():
        for _ in range(warmup):
            run()
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for done in range(1, rounds + 1):
        for name in rng.sample(list(runs), len(runs)):
            if warm:
                runs[name]()
            start = clock()
            runs[name]()
            samples[name].append((clock() - start) * 1000)
        if min_rounds is not None and done >= min_rounds and \
                all(median_half_width(values) <= TARGET_HALF_WIDTH for values in samples.values()):
            break
    return samples


# --- sessions and the speed pick ----------------------------------------------------------------------------------

SAME_SPEED_MARGIN = 0.25       # "as fast as the fastest": the 95 % intervals show it at most 25 % slower
_SESSION: dict[str, str] = {}


def start_timing_session() -> str:
    """Begin a new timing session (one `compress bench`, one quantize run): the id every figure measured from now on
    carries in ``measured_on.session``, the UTC start time plus the process id: ``2026-12-07T17:58:03Z/pid4242``."""
    _SESSION["id"] = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}/pid{os.getpid()}"
    return _SESSION["id"]


def timing_session() -> str:
    """The current timing session's id (a process's first timing starts one)."""
    return _SESSION.get("id") or start_timing_session()


def session_of(artifact: Artifact) -> str | None:
    """The session of the latency that speaks for ``artifact`` (None: recorded before sessions were)."""
    entry = device_timing(artifact)
    return getattr(entry.measured_on, "session", None) if entry and entry.measured_on else None


def speed_against(candidate: Artifact, fastest: Artifact) -> str:
    """``"slower"``, ``"same"`` or ``"undecided"`` against the fastest artifact, from the medians' 95 % intervals.

    Slower: the intervals separate. Same: they overlap and the candidate's upper bound is within SAME_SPEED_MARGIN
    of the fastest's lower bound. Undecided: they overlap only because they are wide (a busy machine).

    Example:
        >>> speed_against(busy_int8, busy_fp32)    # p50 13.06 ms (1.9-30.0) vs 1.754 ms (1.6-25.0)
        'undecided'
    """
    if candidate is fastest:
        return "same"
    own, best = device_timing(candidate), device_timing(fastest)
    if not own or not best or not _interval(own) or not _interval(best):
        return "same"  # no interval recorded (older reports): the p50s alone cannot separate them
    (low, high), (best_low, best_high) = _interval(own), _interval(best)
    if low > best_high:
        return "slower"
    return "same" if high <= best_low * (1 + SAME_SPEED_MARGIN) else "undecided"


def _interval(entry) -> list[float] | None:
    """A latency entry's 95 % interval of the median (None: recorded before intervals were)."""
    return getattr(entry, "median_ci95_ms", None)


def _spread(artifact: Artifact) -> str:
    entry = device_timing(artifact)
    low, high = _interval(entry) or (entry.p50_ms, entry.p50_ms)
    return f"{artifact.name} p50 {entry.p50_ms:.3f} ms (95 % interval {low:.3f}-{high:.3f})"


def speed_pick(candidates: list[Artifact], evidence: Callable[[Artifact], str]) -> dict | None:
    """The smallest of ``candidates`` that runs as fast as the fastest, comparing only figures from one timing session.

    The session that timed the most candidates (the latest on a tie) is compared; the others are listed under
    ``not_compared``. Files whose intervals are too wide to say (``speed_against`` "undecided") are never called as
    fast: the pick is made among the proven ones, and ``verdict`` says "undecided: machine busy" with their figures.
    ``evidence(artifact)`` says what the artifact was judged on.

    Example:
        >>> speed_pick(artifacts, evidence)["artifact"]
        'int8-onnx'
    """
    timed = [a for a in candidates if device_p50(a) is not None]
    if not timed:
        return None
    sessions: dict[str | None, list[Artifact]] = {}
    for artifact in timed:
        sessions.setdefault(session_of(artifact), []).append(artifact)
    session = max(sessions, key=lambda s: (len(sessions[s]), s or ""))
    compared = sessions[session]
    fastest = min(compared, key=device_p50)
    verdicts = {a.name: speed_against(a, fastest) for a in compared}
    same = [a for a in compared if verdicts[a.name] == "same"]
    choice = min(same, key=lambda a: (a.size_bytes, device_p50(a)))
    where = f", session {session}" if session else ""
    pick = {"artifact": choice.name, "session": session,
            "why": (f"smallest ({choice.size_bytes:,} bytes) of the artifacts that passed their gates and run as fast as the "
                    f"fastest (p50 {device_p50(choice):.3f} ms vs best {device_p50(fastest):.3f} ms, within "
                    f"{SAME_SPEED_MARGIN:.0%} at the 95 % intervals{where}), {evidence(choice)}")}
    undecided = [a for a in compared if verdicts[a.name] == "undecided"]
    if undecided:
        pick["verdict"] = "undecided: machine busy"
        pick["undecided"] = [a.name for a in undecided]
        pick["why"] += (f"; undecided: machine busy: {'; '.join(map(_spread, undecided))} against {_spread(fastest)}: the "
                        f"intervals are too wide to tell whether they are as fast; rerun `compress bench` on them on an idle machine")
    others = [a for s, group in sessions.items() if s != session for a in group]
    if others:
        pick["not_compared"] = [{"artifact": a.name, "session": session_of(a),
                                 "why": "timed in another session: figures from two sessions are never compared"} for a in others]
        pick["why"] += (f"; not compared (timed in another session): {', '.join(a.name for a in others)}; "
                        "`compress bench` on all of them times them together")
    return pick


# --- the API --------------------------------------------------------------------------------------------------------


def benchmark_artifact(
    path: str | Path,
    target: str = "local",
    runtime: str = "auto",
    threads: int | None = None,
    batch: int = 1,
    runs: int | None = None,
    seconds: float | None = None,
    warmup: int | None = None,
    inputs: tuple[np.ndarray, ...] | None = None,
    inputs_from: str | None = None,
    adaptive: bool = True,
    spinning: bool = SPINNING,
    **target_options,
) -> dict:
    """Time ``path`` on ``target``; return one report.json latency entry (plus ``warnings``).

    The timing holds this host's timing lock (compress.safety.timing_lock): parallel trials or fleet recipes never time at once
    on one machine; ``measured_on`` records the host, the Ray node and the window.

    ``runs`` (default 100) or ``seconds`` bound the timed runs; ``warmup`` (default 10) untimed runs come first. With
    ``adaptive`` (default) timing stops earlier once the median is known to ±2 % (after at least 20 runs); without,
    exactly ``runs`` are timed. ``inputs``: arrays to time on (batch first; the first ``batch`` rows are used),
    described by ``inputs_from`` ("test sample"...); default random inputs that match the model. ``spinning``: let
    onnxruntime's idle threads spin (off by default, see the module). A target that cannot run here (cuda without a
    GPU) gives an entry with ``skipped`` and no timings.
    """
    from compress.runtimes.base import runtime_for
    from compress.targets.base import RunRequest, TargetSkipped, open_target
    from compress.safety.timing_lock import exclusive_timing

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"artifact {path} not found; check the path")
    check_model_file(path)
    if runs is not None and seconds is not None:
        raise UsageError("give --runs or --seconds, not both")
    if batch < 1 or (runs is not None and runs < 1) or (seconds is not None and seconds <= 0) or (warmup is not None and warmup < 0):
        raise UsageError("--batch and --runs must be at least 1, --seconds above 0 and --warmup at least 0")
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1 (leave it out for the runtime's default)")
    if target.startswith("estimate"):
        raise UsageError("an estimate is not a measurement: use compress.targets.estimate.estimate_artifact (or `compress bench --target estimate`)")
    runtime = runtime_for(path, runtime)
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    device = open_target(target, **target_options)
    inputs_from = inputs_from or ("given arrays" if inputs is not None else "random")
    if inputs is None and runtime == "torch":
        inputs = _torch_inputs(path, batch)
    request = RunRequest(path, runtime=runtime, threads=threads, batch=batch, runs=runs or DEFAULT_RUNS, seconds=seconds,
                         warmup=warmup, inputs=inputs, spinning=spinning,
                         until_ci=TARGET_HALF_WIDTH if adaptive else None, min_runs=MIN_RUNS if adaptive else 1)
    base = {"target": device.name, "runtime": runtime, "batch": batch, "threads": threads, "emulated": device.emulated}
    conditions = {"process": getattr(device, "process", "device"), "order": "alone",
                  "inputs": inputs_from,
                  "threads": threads, "spinning": "on" if spinning else "off", "warmup": warmup,
                  "max_runs": None if seconds else request.runs, "seconds": seconds,
                  "min_runs": request.min_runs if adaptive else None, "target_half_width": request.until_ci}
    try:
        with exclusive_timing(device.name) as measured_on:  # no other compress timing on this host meanwhile
            result = device.run(request)
    except TargetSkipped as skipped:
        return {**base, "device": "none", "runs": 0, "warmup": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None,
                "mean_ms": None, "skipped": str(skipped), "warnings": [str(skipped)]}
    entry = latency_entry(base, device.describe(result.report), result.report, warmup, getattr(device, "notes", []))
    host = result.report.get("environment", {})
    measured_on.update(session=timing_session(), cpu=host.get("cpu"), cpus=host.get("cpus"), loadavg_1m=host.get("loadavg_1m"))
    conditions.update(runs=entry["runs"], warmup=entry["warmup"], stopped=result.report.get("stopped"),
                      spinning=result.report.get("spinning", "runtime default"))  # benchmark_model: not ours to set
    return {**entry, "conditions": conditions, "measured_on": measured_on}


def describe_conditions(conditions: dict) -> str:
    """One line saying how a latency was taken, from an entry's ``conditions``.

    Example:
        >>> describe_conditions({"process": "in-process", "inputs": "test sample", "threads": None, "spinning": "off",
        ...                      "runs": 100, "warmup": 5, "stopped": "runs", "order": "interleaved"})
        'in-process, interleaved with the other variants, test sample inputs, runtime-default threads, onnxruntime spinning off, 100 timed runs after 5 warm-up (stopped: run count reached)'
    """
    threads = conditions.get("threads")
    parts = [conditions["process"], *([ORDER[conditions["order"]]] if conditions.get("order") else []),
             f"{conditions['inputs']} inputs",
             "runtime-default threads" if not threads else f"{threads} thread{'s' if threads > 1 else ''}",
             f"onnxruntime spinning {conditions['spinning']}" if conditions["spinning"] in ("on", "off") else
             "runtime-default spinning"]
    runs = f"{conditions['runs']} timed runs after {conditions['warmup']} warm-up"
    stopped = conditions.get("stopped")
    if stopped:
        runs += f" (stopped: {STOPPED[stopped].format(100 * (conditions.get('target_half_width') or 0))})"
    return ", ".join(parts) + ", " + runs


def latency_entry(base: dict, device: str, report: dict, warmup: int, notes: list[str]) -> dict:
    """Assemble the latency entry from the runner's (or benchmark_model's) report."""
    environment = report.get("environment", {})
    entry = {**base, "device": device}
    if "samples_ms" in report:
        samples = report["samples_ms"]
        stats = summarize(samples, base["batch"])
        entry.update(runs=len(samples), warmup=report.get("warmup", warmup), **stats)
        warnings = busy_warnings(stats, len(samples), environment)
        entry["samples_ms"] = _stored(samples)
        entry["measured_by"] = report.get("measured_by", MEASURED_BY)
    else:  # a benchmark binary that prints a summary only (TFLite benchmark_model: mean/std/min/max, no percentiles)
        summary, tool = report["summary"], report.get("measured_by", "TFLite benchmark_model")
        entry.update(runs=summary["count"], warmup=summary.get("warmup_count", warmup), p50_ms=None, p90_ms=None, p99_ms=None,
                     mean_ms=_round(summary["mean_ms"]), stdev_ms=_maybe_round(summary["stdev_ms"]), min_ms=_maybe_round(summary["min_ms"]),
                     max_ms=_maybe_round(summary["max_ms"]), median_ci95_ms=None,
                     throughput_per_s=round(base["batch"] * 1000.0 / summary["mean_ms"], 2) if summary["mean_ms"] else None,
                     percentiles=f"not reported by {tool} (it prints a summary only)")
        warnings = []
        entry["measured_by"] = tool
    peak, before = report.get("peak_rss_bytes"), report.get("rss_before_load_bytes")
    entry.update(
        load_ms=_maybe_round(report.get("load_ms")),
        first_inference_ms=_maybe_round(report.get("first_inference_ms")),
        peak_memory_bytes=peak,
        model_memory_bytes=(peak - before) if peak is not None and before is not None else report.get("model_memory_bytes"),
        runtime_version=environment.get("runtime_version"),
        delegate=environment.get("delegate"),
    )
    if report.get("fixed_batch") and report["fixed_batch"] != base["batch"]:
        warnings.append(f"the file has a fixed batch of {report['fixed_batch']}: a batch of {base['batch']} ran as "
                        f"{math.ceil(base['batch'] / report['fixed_batch'])} invocations per timed run")
    if base["emulated"]:
        warnings.append("emulated: this is not a device latency (instruction-set emulation is many times slower)")
    entry["warnings"] = [*notes, *warnings]
    return entry


def _maybe_round(value):
    return None if value is None else _round(float(value))


def _stored(samples: list[float]) -> list[float]:
    if len(samples) <= STORED_SAMPLES:
        return list(samples)
    index = np.linspace(0, len(samples) - 1, STORED_SAMPLES).round().astype(int)
    return [samples[i] for i in index]


def _torch_inputs(path: Path, batch: int) -> tuple[np.ndarray, ...]:
    """Random inputs from the model's own input spec (torch files carry no input description the runner can read)."""
    from compress.loading.model import load_model

    spec = load_model(path).input_spec
    return spec.random_inputs(spec.fixed_batch or batch)


__all__ = ["benchmark_artifact", "summarize", "median_ci", "busy_warnings", "speed_pick", "speed_against", "start_timing_session",
           "describe_conditions", "DEFAULT_RUNS", "DEFAULT_WARMUP", "MIN_RUNS", "TARGET_HALF_WIDTH"]


FILE_IDENTIFIERS = {".tflite": b"TFL3", ".pte": b"ET"}  # flatbuffer file identifiers, at bytes 4..8 of the file


def check_model_file(path: str | Path) -> None:
    """UsageError (exit 2) when ``path`` is not a model of the kind its suffix names (random bytes called .onnx), said
    before any target or runtime is started; other suffixes are left to their runtime.

    Example:
        >>> check_model_file("runs/mnist/model.int8.tflite")   # a real TFLite file: nothing raised
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise UsageError(f"{path} is not an ONNX model ({type(exc).__name__}); give a file exported to ONNX") from None
        if not model.ir_version or not model.graph.output:
            raise UsageError(f"{path} is not an ONNX model (no IR version or no graph outputs); give a file exported to ONNX")
    elif suffix in FILE_IDENTIFIERS:
        with open(path, "rb") as handle:
            header = handle.read(8)
        if not header[4:].startswith(FILE_IDENTIFIERS[suffix]):
            raise UsageError(f"{path} is not a {suffix} model (its file identifier is missing); give a file converted to {suffix}")
