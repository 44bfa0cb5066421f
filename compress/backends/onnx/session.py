"""ONNX Runtime as a runner: the device runner's ``OrtSession`` (the same session settings and input dtypes that time
the file on a device), with compress's errors.

Sessions run sequentially (one inter-op thread) with ``use_deterministic_compute`` on, so the same
file, inputs and thread count give the same outputs. ``spinning=False`` stops idle worker threads spin-waiting
(for timing several runtimes that share the cores, as the bench suite does). Models exported with a fixed batch axis are fed
in chunks of that size (the last chunk padded, the padding dropped from the outputs).

Example:
    >>> runner = OrtRunner("model.int8.onnx", threads=2)
    >>> runner.name, runner.input_names
    ('onnxruntime', ['image'])
    >>> [o.shape for o in runner.run((np.zeros((4, 1, 28, 28), np.float32),))]
    [(4, 10)]
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from compress.errors import EnvironmentFailure, UsageError, first_line, whole_message
from compress.runtimes.base import io_layout
from compress.targets.device_runner import OrtSession, RunnerError, run_in_chunks


class MissingKernel(UsageError):
    """onnxruntime has no kernel for ``op`` (node ``node``) on the chosen providers."""

    def __init__(self, message: str, op: str, node: str):
        super().__init__(message)
        self.op, self.node = op, node


class OrtRunner:
    """Load ``path`` in onnxruntime; ``run`` takes one array per input (batch first), returns one per output."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None, spec=None,
                 spinning: bool = True):
        self.path = Path(path)
        self.threads = threads
        self.providers = list(providers or ["CPUExecutionProvider"])
        session = _open_session(self.path, threads, self.providers, spinning)
        self.spinning = session.spinning
        self.session = session.session
        self.input_names = [i["name"] for i in session.inputs]
        self.output_names = session.output_names
        self.input_dtypes = [i["dtype"] for i in session.inputs]
        outputs = [[d if isinstance(d, int) and d > 0 else None for d in (o.shape or [])] for o in self.session.get_outputs()]
        self.input_axes, self.output_axes, self.fixed_batch = io_layout([i["shape"] for i in session.inputs], outputs, spec)

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise UsageError(f"{self.path.name} takes {len(self.input_names)} input(s) ({', '.join(self.input_names)}) but got {len(inputs)}")
        arrays = [np.ascontiguousarray(a, dtype=dtype) for a, dtype in zip(inputs, self.input_dtypes)]
        if self.fixed_batch is None or arrays[0].shape[self.input_axes[0]] == self.fixed_batch:
            return self._run(arrays)
        return run_in_chunks(self._run, arrays, self.fixed_batch, self.input_axes, self.output_axes)

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, dict(zip(self.input_names, arrays)))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument classes
            hint = ("; if an input's batch is not on axis 0 (a state (layers, batch, hidden)), name it with --batch-axis INPUT=AXIS"
                    if "dimension" in str(exc).lower() else "")
            raise UsageError(f"onnxruntime could not run {self.path.name} on inputs {[a.shape for a in arrays]}: "
                             f"{whole_message(exc)}{hint}") from None


def check_loads_in_child(path: str | Path, providers: list[str] | None = None, timeout_s: float = 300.0) -> None:
    """Open ``path`` in onnxruntime in a child process first: an onnxruntime crash (it has segfaulted on valid fp16
    graphs) then becomes an EnvironmentFailure instead of killing this process."""
    import subprocess
    import sys

    code = ("import sys, onnxruntime as ort\n"
            "ort.set_default_logger_severity(3)\n"
            "ort.InferenceSession(sys.argv[1], providers=sys.argv[2].split(','))\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path), ",".join(providers or ["CPUExecutionProvider"])],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"onnxruntime did not finish loading {Path(path).name} within {timeout_s:.0f} s") from None
    if done.returncode < 0:
        raise EnvironmentFailure(
            f"onnxruntime crashed (signal {-done.returncode}) while loading {Path(path).name}: a bug in this onnxruntime "
            "build for this graph; choose another --precision or upgrade onnxruntime"
        )


def _open_session(path: Path, threads: int | None, providers: list[str], spinning: bool = True) -> OrtSession:
    """The device runner's onnxruntime session for ``path``, its errors as compress errors."""
    if not path.is_file():
        raise UsageError(f"ONNX file {path} not found; check the path")
    try:
        return OrtSession(path, threads, providers, spinning)
    except RunnerError as exc:
        text = exc.detail or exc.message
        if exc.kind == "missing_runtime":
            raise EnvironmentFailure("onnxruntime is not installed: pip install onnxruntime") from None
        if exc.kind == "provider_unavailable":
            raise UsageError(f"{exc.message}; choose another provider") from None
        missing = re.search(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'", text)
        if missing:
            op, version, node = missing.groups()
            raise MissingKernel(
                f"onnxruntime ({', '.join(providers)}) has no kernel for {op} (opset {version}, node {node!r}) in {path.name}; "
                "choose another --precision or keep that layer in float with --exclude",
                op, node,
            ) from None
        if "INVALID_PROTOBUF" in text or "INVALID_GRAPH" in text or "Load model" in text:
            raise UsageError(f"{path} is not a loadable ONNX model ({first_line(text)})") from None
        raise EnvironmentFailure(f"onnxruntime failed to load {path.name}: {first_line(text)}") from None
