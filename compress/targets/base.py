"""What every target shares: the request, running the device runner under a timeout, reading its JSON line.

A target puts ``device_runner.py`` and the model where a Python can run them (here, over ssh, over adb, inside an
emulated ARM64 userspace), runs it, and hands back the runner's JSON and, for parity runs, the outputs.

Example:
    >>> request = RunRequest(Path("m.onnx"), runtime="onnxruntime", runs=50)
    >>> result = open_target("local").run(request)
    >>> len(result.report["samples_ms"])
    50
"""
from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from compress.errors import EnvironmentFailure, UsageError
from compress.safety.jsonsafe import loads

RUNNER_PATH = Path(__file__).with_name("device_runner.py")
MARKER = "COMPRESS_RUNNER_JSON "
DEFAULT_TIMEOUT_S = 600.0


class TargetSkipped(Exception):
    """The target cannot run here and says so instead of failing (e.g. "no CUDA device: skipped")."""


@dataclass
class RunRequest:
    """One runner invocation: time ``artifact`` (``inputs`` None or a batch to time on) or, with ``want_outputs``,
    run every sample of ``inputs`` and return the outputs."""

    artifact: Path
    runtime: str = "auto"
    threads: int | None = None
    batch: int = 1
    runs: int = 100
    seconds: float | None = None
    warmup: int = 10
    inputs: tuple[np.ndarray, ...] | None = None
    want_outputs: bool = False
    providers: list[str] = field(default_factory=list)
    spinning: bool = True               # onnxruntime's idle worker threads spin-wait (its default)
    until_ci: float | None = None       # adaptive: stop once the median's 95 % CI is within ±until_ci (runs: the cap)
    min_runs: int = 1                   # adaptive: timed runs before the first check

    def __post_init__(self) -> None:
        if Path(self.artifact).suffix == ".pt2":  # refused here, before any target's torch.export.load runs its code
            from compress.loading.safe_load import check_program_archive

            check_program_archive(Path(self.artifact), trust_pickle=False)

    def runner_args(self, model: str, inputs: str | None, outputs: str | None) -> list[str]:
        """The runner's command-line arguments, with the model/inputs/outputs paths as the target sees them."""
        args = [model, "--runtime", self.runtime, "--batch", str(self.batch), "--warmup", str(self.warmup), "--runs", str(self.runs)]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.seconds:
            args += ["--seconds", str(self.seconds)]
        if self.providers:
            args += ["--providers", ",".join(self.providers)]
        if not self.spinning:
            args += ["--spinning", "off"]
        if self.until_ci:
            args += ["--until-ci", str(self.until_ci), "--min-runs", str(self.min_runs)]
        if inputs:
            args += ["--inputs", inputs]
        if outputs:
            args += ["--outputs", outputs]
        return args


@dataclass
class RunResult:
    report: dict                              # the runner's JSON
    outputs: list[np.ndarray] | None = None   # parity runs only


class Target(Protocol):
    name: str          # as it appears in latency[].target: local-cpu, cuda, ssh://user@host:port, adb:serial, qemu-arm64
    emulated: bool

    def run(self, request: RunRequest) -> RunResult: ...

    def describe(self, report: dict) -> str:
        """The ``device`` text of a latency entry, from the runner's environment report."""


def save_inputs(arrays: tuple[np.ndarray, ...], path: Path) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **{f"input_{i}": np.ascontiguousarray(a) for i, a in enumerate(arrays)})
    return path


def load_outputs(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.rsplit("_", 1)[1]))]


def run_command(command: list[str], target: str, timeout_s: float, env: dict | None = None, what: str = "the runner") -> subprocess.CompletedProcess:
    """Run ``command``; a missing program or a timeout becomes an EnvironmentFailure naming ``target``."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise EnvironmentFailure(f"{target}: {command[0]} not found; install it or put it on PATH") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"{target}: {what} gave no answer within {timeout_s:.0f} s (stopped); "
                                 "raise the timeout with --timeout if the model is large") from None


def parse_runner_output(done: subprocess.CompletedProcess, target: str) -> dict:
    """The runner's JSON from its stdout; its errors become one line naming ``target`` (exit 3, or 2 for bad input)."""
    lines = [line for line in (done.stdout or "").splitlines() if line.startswith(MARKER)]
    if not lines:
        raise EnvironmentFailure(f"{target}: the device runner printed no result (exit {done.returncode}): {last_line(done.stderr or done.stdout)}")
    try:
        report = loads(lines[-1][len(MARKER):])
    except json.JSONDecodeError:
        raise EnvironmentFailure(f"{target}: the device runner printed a garbled result") from None
    if not report.get("ok"):
        message = f"{target}: {report.get('message', 'the device runner failed')}"
        if report.get("error") == "provider_unavailable":
            raise TargetSkipped(message)
        raise (UsageError if report.get("error") == "bad_arguments" else EnvironmentFailure)(message)
    return report


def last_line(text: str) -> str:
    """The last meaningful line of a tool's output (what went wrong), or a placeholder."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


@dataclass(frozen=True)
class TargetEntry:
    usage: str                                  # how a spec is written (help and errors), e.g. "ssh://user@host[:port]"
    cls: type                                   # the Target class
    names: tuple[str, ...] = ()                 # exact specs
    prefix: str | None = None                   # specs starting with it, e.g. "ssh://"
    args: Callable[[str], tuple] = lambda spec: ()  # the class's positional arguments from the spec

    def matches(self, spec: str) -> bool:
        return spec in self.names or (self.prefix is not None and spec.startswith(self.prefix))


TARGETS: list[TargetEntry] = []


def register_target(usage: str, names: tuple[str, ...] = (), prefix: str | None = None, args: Callable[[str], tuple] = lambda spec: ()):
    """Class decorator: the target answers to ``names`` (exact) and specs starting with ``prefix``.

    Example:
        >>> @register_target("board[:name]", names=("board",), prefix="board:", args=lambda spec: (spec[6:] or None,))
        ... class BoardTarget: ...
    """
    def register(cls):
        global TARGETS
        TARGETS = [e for e in TARGETS if e.usage != usage] + [TargetEntry(usage, cls, tuple(names), prefix, args)]
        return cls
    return register


def target_class(spec: str):
    """The Target class for ``spec`` and its positional argument (ssh URL, adb serial), or UsageError."""
    spec = (spec or "").strip()
    for entry in TARGETS:
        if entry.matches(spec):
            return entry.cls, entry.args(spec)
    usages = [e.usage for e in TARGETS] + ["estimate[:core]"]  # estimate: an analytic model, `compress bench` only
    raise UsageError(f"unknown target {spec!r}; use {', '.join(usages[:-1])} or {usages[-1]}")


def open_target(spec: str, strict: bool = True, **options) -> Target:
    """``local``, ``cuda``, ``ssh://user@host[:port]``, ``adb`` / ``adb:SERIAL``, ``qemu-arm64`` → a Target.

    ``options`` are the target's own (see each class's ``OPTIONS``: ``insecure``, ``identity``, ``known_hosts``,
    ``python``, ``benchmark_model``, ``cpu``, ``timeout_s``, ...). ``strict=False`` drops options a target does not
    take (the CLI passes one set of options to several targets); otherwise they are a UsageError.
    """
    cls, args = target_class(spec)
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown and strict:
        raise UsageError(f"{spec}: option {unknown[0]!r} does not apply to this target (it takes {', '.join(cls.OPTIONS) or 'no options'})")
    return cls(*args, **{k: v for k, v in options.items() if k in cls.OPTIONS})
