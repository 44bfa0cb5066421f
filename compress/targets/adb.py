"""The adb target: an Android phone (``adb`` or ``adb:SERIAL``), timed by the runtimes' own benchmark binaries.

The model is pushed to a private folder under /data/local/tmp. A ``.tflite`` is timed by TFLite's ``benchmark_model``
when the binary is on the device (``--benchmark-model PATH``, default /data/local/tmp/benchmark_model); its output
is parsed by :func:`parse_benchmark_model_output` (it reports mean, std, min and max, no percentiles). A ``.pte`` is
timed by ExecuTorch's ``executor_runner`` built with the XNNPACK delegate (``--executor-runner PATH``, default
/data/local/tmp/executor_runner), parsed by :func:`parse_executor_runner_output` (one time per iteration, so
percentiles; the first ``warmup`` iterations are dropped). Otherwise, and for ``.onnx`` files and parity runs, the
device runner runs with an on-device Python (e.g. Termux's ``python3``). The folder is removed afterwards; every adb
call has a timeout.

Example:
    >>> AdbTarget("R58M123ABC").run(RunRequest(Path("model.int8.tflite"), runs=100, threads=4)).report["summary"]["mean_ms"]
    3.41
"""
from __future__ import annotations

import re
import secrets
import subprocess
import tempfile
from pathlib import Path

from compress.errors import EnvironmentFailure
from compress.targets.base import (
    register_target,
    DEFAULT_TIMEOUT_S, RUNNER_PATH, RunRequest, RunResult, last_line, load_outputs, parse_runner_output, quote, run_command,
    save_inputs,
)

DEVICE_ROOT = "/data/local/tmp"
DEFAULT_BENCHMARK_MODEL = f"{DEVICE_ROOT}/benchmark_model"
DEFAULT_EXECUTOR_RUNNER = f"{DEVICE_ROOT}/executor_runner"
ADB_TIMEOUT_S = 60.0
_NUMBER = r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
_STATS = re.compile(r"count=(\d+)(?: first=(\d+))? curr=(\d+)(?:\(all same\))?(?: min=(\d+) max=(\d+) avg=" + _NUMBER + r" std=(\d+))?")


def parse_benchmark_model_output(text: str) -> dict:
    """The numbers TFLite's ``benchmark_model`` prints, in ms and bytes.

    Handles the current format (lines may carry an ``INFO: `` prefix), the ``count=N curr=X(all same)`` form, and
    the 2018-era ``Average inference timings in us`` line. Returns ``count``, ``mean_ms``, ``stdev_ms`` (population,
    as the tool computes it), ``min_ms``, ``max_ms``, ``warmup_count``, ``warmup_mean_ms``, ``load_ms`` (Init),
    ``first_inference_ms`` and, when printed, ``peak_memory_bytes``/``memory_delta_bytes`` and ``threads``.
    Raises ValueError when the text holds no timed-run statistics (the tool failed).
    """
    blocks = []  # one per "Running benchmark for at least ..." section: warm-up first, then the timed runs
    for line in text.splitlines():
        match = _STATS.search(line)
        if match and ("count=" in line):
            count, first, current, low, high, mean, std = match.groups()
            if low is None:  # all runs took the same time
                low = high = mean = current
                std = "0"
            blocks.append({"count": int(count), "first_us": float(first or current), "min_us": float(low), "max_us": float(high),
                           "mean_us": float(mean), "std_us": float(std)})
    result: dict = {}
    timings = re.search(r"Inference timings in us: Init: " + _NUMBER + r", First inference: " + _NUMBER
                        + r", Warmup \(avg\): " + _NUMBER + r", Inference \(avg\): " + _NUMBER, text)
    legacy = re.search(r"Average inference timings in us: Warmup: " + _NUMBER + r", Init: " + _NUMBER + r", no stats: " + _NUMBER, text)
    if len(blocks) < 2 and not (legacy and blocks):
        raise ValueError("no timed-run statistics in benchmark_model's output: " + (last_line(text) if text else "empty output"))
    timed, warmup = blocks[-1], blocks[-2] if len(blocks) >= 2 else None
    result.update(count=timed["count"], mean_ms=_ms(timed["mean_us"]), stdev_ms=_ms(timed["std_us"]),
                  min_ms=_ms(timed["min_us"]), max_ms=_ms(timed["max_us"]))
    if warmup:
        result.update(warmup_count=warmup["count"], warmup_mean_ms=_ms(warmup["mean_us"]), first_inference_ms=_ms(warmup["first_us"]))
    if timings:
        init, first, _, _ = (float(v) for v in timings.groups())
        result.update(load_ms=_ms(init), first_inference_ms=_ms(first))
    elif legacy:
        result["load_ms"] = _ms(float(legacy.group(2)))
    initialized = re.search(r"Initialized session in " + _NUMBER + r"ms", text)
    if initialized and "load_ms" not in result:
        result["load_ms"] = float(initialized.group(1))
    peak = re.search(r"(?:Overall peak memory footprint \(MB\) via periodic monitoring|Peak memory footprint \(MB\): init=\S+ overall)[:=]\s*" + _NUMBER, text)
    if peak:
        result["peak_memory_bytes"] = int(float(peak.group(1)) * 2**20)
    delta = re.search(r"Memory footprint delta from the start of the tool \(MB\): init=\S+ overall=" + _NUMBER, text)
    if delta:
        result["memory_delta_bytes"] = int(float(delta.group(1)) * 2**20)
    threads = re.search(r"(?:#threads used for CPU inference|Num threads): \[(\d+)\]", text)
    if threads:
        result["threads"] = int(threads.group(1))
    return result


def parse_executor_runner_output(text: str, warmup: int = 0) -> dict:
    """What ExecuTorch's ``executor_runner`` logs, in ms: ``samples_ms`` (one per ``Iteration i of N: X ms`` line, the
    first ``warmup`` dropped) when it prints them (2025 and later), else only ``mean_ms`` of the ``Model executed
    successfully N time(s) in T ms.`` line; ``load_ms`` from ``Model loaded in X ms.``. ValueError when it ran nothing.
    """
    iterations = [float(v) for v in re.findall(r"Iteration \d+ of \d+: " + _NUMBER + r" ms", text)]
    total = re.search(r"Model executed successfully (\d+) time\(s\) in " + _NUMBER + r" ms", text)
    if not total:
        raise ValueError("no 'Model executed successfully' line in executor_runner's output: " + (last_line(text) if text else "empty output"))
    count, elapsed = int(total.group(1)), float(total.group(2))
    result: dict = {"count": count, "mean_ms": round(elapsed / count, 6) if count else None}
    if iterations:
        result["samples_ms"] = iterations[warmup:] if len(iterations) > warmup else iterations
        result["first_inference_ms"] = iterations[0]
    loaded = re.search(r"Model loaded in " + _NUMBER + r" ms", text)
    if loaded:
        result["load_ms"] = float(loaded.group(1))
    return result


def _ms(microseconds: float) -> float:
    return round(microseconds / 1e3, 6)


@register_target("adb[:serial]", names=("adb",), prefix="adb:", args=lambda spec: (spec.partition(":")[2] or None,))
class AdbTarget:
    """Runs on the Android device ``serial`` (the only one attached when None) through the ``adb`` client."""

    emulated = False
    OPTIONS = ("benchmark_model", "executor_runner", "python", "adb", "timeout_s")

    def __init__(self, serial: str | None = None, benchmark_model: str | None = None, python: str | None = None,
                 adb: str | None = None, timeout_s: float | None = None, executor_runner: str | None = None):
        self.serial = serial
        self.name = f"adb:{serial}" if serial else "adb"
        self.benchmark_model = benchmark_model or DEFAULT_BENCHMARK_MODEL
        self.executor_runner = executor_runner or DEFAULT_EXECUTOR_RUNNER
        self.python = python or "python3"
        self.adb = adb or "adb"
        self.timeout_s = float(timeout_s or DEFAULT_TIMEOUT_S)
        self.properties: dict[str, str] = {}

    def _adb(self, *args: str, timeout_s: float = ADB_TIMEOUT_S, what: str = "adb") -> subprocess.CompletedProcess:
        command = [self.adb, *(["-s", self.serial] if self.serial else []), *args]
        return run_command(command, self.name, timeout_s, what=what)

    def _shell(self, command: str, timeout_s: float = ADB_TIMEOUT_S, what: str = "adb shell"):
        return self._adb("shell", command, timeout_s=timeout_s, what=what)

    def _connect(self) -> None:
        done = self._adb("get-state", what="adb get-state")
        if done.returncode != 0 or done.stdout.strip() != "device":
            raise EnvironmentFailure(f"{self.name}: no usable Android device ({last_line(done.stderr or done.stdout)}); "
                                     "connect one with USB debugging on, or name it: --target adb:SERIAL")
        for key in ("ro.product.model", "ro.soc.model", "ro.board.platform", "ro.product.cpu.abi"):
            self.properties[key] = self._shell(f"getprop {key}").stdout.strip()

    def run(self, request: RunRequest) -> RunResult:
        self._connect()
        folder = f"{DEVICE_ROOT}/compress-{secrets.token_hex(4)}"
        if self._shell(f"mkdir -p {folder}").returncode != 0:
            raise EnvironmentFailure(f"{self.name}: cannot create {folder} on the device")
        try:
            self._push(request.artifact, folder)
            model = f"{folder}/{Path(request.artifact).name}"
            tool = self._timing_tool(request)
            if tool == self.benchmark_model:
                return self._benchmark_model(request, model)
            return self._executor_runner(request, model) if tool else self._runner(request, folder, model)
        finally:
            self._shell(f"rm -rf {folder}")

    def _timing_tool(self, request: RunRequest) -> str | None:
        """The runtime's own benchmark binary for a timing-only request, when it is on the device."""
        from compress.backends import find_format

        fmt = find_format(request.artifact)
        tool = {"benchmark_model": self.benchmark_model, "executor_runner": self.executor_runner}.get(fmt and fmt.device_tool)
        timing_only = request.inputs is None and not request.want_outputs and not (tool == self.executor_runner and request.seconds)
        if tool and timing_only and self._shell(f"test -x {quote([tool])}").returncode == 0:
            return tool
        return None

    def _push(self, path: Path | str, folder: str) -> None:
        done = self._adb("push", str(path), f"{folder}/", timeout_s=self.timeout_s, what="adb push")
        if done.returncode != 0:
            raise EnvironmentFailure(f"{self.name}: adb push of {Path(path).name} failed ({last_line(done.stderr or done.stdout)})")

    def _benchmark_model(self, request: RunRequest, model: str) -> RunResult:
        args = [self.benchmark_model, f"--graph={model}", f"--warmup_runs={request.warmup}", "--warmup_min_secs=0",
                "--report_peak_memory_footprint=true"]
        args += [f"--num_runs={request.runs}", "--min_secs=0"] if not request.seconds else ["--num_runs=1", f"--min_secs={request.seconds}"]
        if request.threads:
            args.append(f"--num_threads={request.threads}")
        done = self._shell(quote(args), timeout_s=self.timeout_s, what="benchmark_model")
        try:
            summary = parse_benchmark_model_output(done.stdout + "\n" + done.stderr)
        except ValueError as exc:
            raise EnvironmentFailure(f"{self.name}: benchmark_model failed on {Path(model).name}: {exc}") from None
        report = {"ok": True, "summary": summary, "load_ms": summary.get("load_ms"), "first_inference_ms": summary.get("first_inference_ms"),
                  "peak_rss_bytes": summary.get("peak_memory_bytes"), "model_memory_bytes": summary.get("memory_delta_bytes"),
                  "environment": {"runtime_version": "TFLite benchmark_model", "delegate": "benchmark_model defaults (XNNPACK on CPU)"}}
        return RunResult(report)

    def _executor_runner(self, request: RunRequest, model: str) -> RunResult:
        args = [self.executor_runner, f"--model_path={model}", f"--num_executions={request.warmup + request.runs}"]
        if request.threads:
            args.append(f"--cpu_threads={request.threads}")
        done = self._shell(quote(args), timeout_s=self.timeout_s, what="executor_runner")
        try:
            parsed = parse_executor_runner_output(done.stdout + "\n" + done.stderr, request.warmup)
        except ValueError as exc:
            raise EnvironmentFailure(f"{self.name}: executor_runner failed on {Path(model).name}: {exc}") from None
        environment = {"runtime_version": "ExecuTorch executor_runner", "delegate": "as built into the binary (XNNPACK for compress's files)"}
        report = {"ok": True, "load_ms": parsed.get("load_ms"), "first_inference_ms": parsed.get("first_inference_ms"),
                  "environment": environment, "measured_by": "ExecuTorch executor_runner"}
        if "samples_ms" in parsed:
            report.update(samples_ms=parsed["samples_ms"], warmup=request.warmup)
        else:  # an older binary: only the total over all executions (warm-up included)
            mean = parsed["mean_ms"]
            report["summary"] = {"count": parsed["count"], "mean_ms": mean, "stdev_ms": None, "min_ms": None, "max_ms": None,
                                 "warmup_count": 0}
        return RunResult(report)

    def _runner(self, request: RunRequest, folder: str, model: str) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="compress-adb-") as local:
            local = Path(local)
            self._push(RUNNER_PATH, folder)
            inputs = outputs = None
            if request.inputs is not None:
                self._push(save_inputs(request.inputs, local / "inputs.npz"), folder)
                inputs = f"{folder}/inputs.npz"
            if request.want_outputs:
                outputs = f"{folder}/outputs.npz"
            args = request.runner_args(model, inputs, outputs)
            done = self._shell(quote([self.python, f"{folder}/{RUNNER_PATH.name}", *args]), timeout_s=self.timeout_s, what="the runner")
            if done.returncode == 127 or ("not found" in (done.stderr or "") and "COMPRESS_RUNNER_JSON" not in done.stdout):
                raise EnvironmentFailure(f"{self.name}: no {self.benchmark_model} for this file and no {self.python} on the device; "
                                         "push TFLite's benchmark_model there (--benchmark-model) or install Python (e.g. Termux)")
            report = parse_runner_output(done, self.name)
            result = RunResult(report)
            if outputs:
                pulled = self._adb("pull", outputs, str(local / "outputs.npz"), timeout_s=self.timeout_s, what="adb pull")
                if pulled.returncode != 0:
                    raise EnvironmentFailure(f"{self.name}: adb pull of the outputs failed ({last_line(pulled.stderr)})")
                result.outputs = load_outputs(local / "outputs.npz")
            return result

    def describe(self, report: dict) -> str:
        props = self.properties
        soc = props.get("ro.soc.model") or props.get("ro.board.platform") or "?"
        return f"{props.get('ro.product.model') or 'Android device'} ({soc}, {props.get('ro.product.cpu.abi') or '?'})"
