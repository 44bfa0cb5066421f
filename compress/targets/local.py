"""The local target: this machine's CPU, timed by the same device runner as every other target (in a child process).

Example:
    >>> result = LocalTarget().run(RunRequest(Path("model.int8.onnx"), runs=50, threads=2))
    >>> LocalTarget().describe(result.report)
    'x86_64 Intel(R) Xeon(R) ..., 2 cpus'
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from compress.targets.base import (
    register_target,
    DEFAULT_TIMEOUT_S, RUNNER_PATH, RunRequest, RunResult, load_outputs, parse_runner_output, run_command, save_inputs,
)


def describe_environment(environment: dict) -> str:
    """``x86_64 <cpu model>, N cpus`` from the runner's environment report."""
    cpu = environment.get("cpu") or ""
    return f"{environment.get('machine', '?')}{' ' + cpu if cpu else ''}, {environment.get('cpus', '?')} cpus"


@register_target("local", names=("local", "local-cpu", "cpu"))
class LocalTarget:
    """Runs ``device_runner.py`` with this Python (``sys.executable``) in a child process."""

    name = "local-cpu"
    emulated = False
    process = "child process"            # latency[].conditions.process (remote targets: "device")
    OPTIONS = ("timeout_s", "python")

    def __init__(self, timeout_s: float | None = None, python: str | None = None):
        self.timeout_s = float(timeout_s or DEFAULT_TIMEOUT_S)
        self.python = python or sys.executable

    def run(self, request: RunRequest) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="compress-local-") as folder:
            folder = Path(folder)
            inputs = save_inputs(request.inputs, folder / "inputs.npz") if request.inputs is not None else None
            outputs = folder / "outputs.npz" if request.want_outputs else None
            args = request.runner_args(str(Path(request.artifact).resolve()), str(inputs) if inputs else None, str(outputs) if outputs else None)
            done = run_command([self.python, str(RUNNER_PATH), *args], self.name, self.timeout_s, env=self._env())
            report = parse_runner_output(done, self.name)
            return RunResult(report, load_outputs(outputs) if outputs else None)

    @staticmethod
    def _env() -> dict:
        env = dict(os.environ)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        return env

    def describe(self, report: dict) -> str:
        return describe_environment(report.get("environment", {}))
