"""ExecuTorch as a runner: a ``.pte`` program loaded by ``executorch.runtime.Runtime`` (XNNPACK delegate built in).

The program's ``forward`` is run on numpy inputs and gives numpy outputs, in the torch model's argument and output
order (names ``input_0``.., ``output_0``..: a ``.pte`` stores no tensor names). compress exports ``.pte`` files at a
fixed batch (1, or the program's own), so any batch is fed in chunks of that size, the last chunk padded and the
padding dropped. ``threads`` sizes ExecuTorch's shared thread pool (process-wide, as in the ExecuTorch runtime).

ExecuTorch is an optional extra: without it, opening a runner is one EnvironmentFailure line naming the extra.

Example:
    >>> runner = ExecuTorchRunner("model.int8.pte", threads=1)
    >>> runner.name, runner.input_names, runner.fixed_batch
    ('executorch', ['input_0'], 1)
    >>> [o.shape for o in runner.run((np.zeros((32, 1, 28, 28), np.float32),))]
    [(32, 10)]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.runtimes.base import io_layout
from compress.targets.device_runner import run_in_chunks

EXTRA = "pip install 'compress[executorch]'"
METHOD = "forward"
# ExecuTorch ScalarType codes (c10 numbering) of the input/output types a compress export can have.
SCALAR_TYPES = {0: np.uint8, 1: np.int8, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32, 7: np.float64, 11: np.bool_}


def require_executorch():
    """The ``executorch.runtime`` module; EnvironmentFailure naming the extra when ExecuTorch is not installed."""
    try:
        import executorch.runtime as runtime
    except ImportError:
        raise EnvironmentFailure(f"ExecuTorch is not installed (needed for .pte files): {EXTRA}") from None
    return runtime


def load_program(path: Path, threads: int | None = None):
    """The ExecuTorch program at ``path``, read by ``executorch.runtime`` with ``threads`` set first. A missing file is a
    UsageError; what the runtime raises for a file it cannot read (RuntimeError, ValueError) is the caller's to word."""
    runtime = require_executorch()
    if not Path(path).is_file():
        raise UsageError(f"ExecuTorch program {path} not found; check the path")
    if threads:
        set_threads(int(threads))
    return runtime.Runtime.get().load_program(Path(path))


class ExecuTorchRunner:
    """Load ``path`` in the ExecuTorch runtime; ``run`` takes one array per input (batch first), returns one per output."""

    name = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None, spec=None):
        self.path = Path(path)
        self.threads = threads
        try:
            self.method = load_program(self.path, threads).load_method(METHOD)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UsageError(f"{self.path} is not a loadable ExecuTorch program with a {METHOD!r} method ({first_line(exc)})") from None
        meta = self.method.metadata
        inputs = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
        outputs = [meta.output_tensor_meta(i) for i in range(meta.num_outputs())]
        self.input_names = [f"input_{i}" for i in range(len(inputs))]
        self.output_names = [f"output_{i}" for i in range(len(outputs))]
        self.input_dtypes = [SCALAR_TYPES.get(int(t.dtype()), np.float32) for t in inputs]
        self.input_shapes = [tuple(int(d) for d in t.sizes()) for t in inputs]
        dims = [[list(t.sizes()) for t in tensors] for tensors in (inputs, outputs)]
        self.input_axes, self.output_axes, self.fixed_batch = io_layout(*dims, spec)

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise UsageError(f"{self.path.name} takes {len(self.input_names)} input(s) but got {len(inputs)}")
        arrays = [_to_input(np.asarray(a), dtype, shape, axis, name)
                  for a, dtype, shape, axis, name in zip(inputs, self.input_dtypes, self.input_shapes, self.input_axes, self.input_names)]
        if arrays[0].shape[self.input_axes[0]] == self.fixed_batch:
            return self._execute(arrays)
        return run_in_chunks(self._execute, arrays, self.fixed_batch, self.input_axes, self.output_axes)

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        try:
            outputs = self.method.execute([torch.from_numpy(a) for a in arrays])
        except (RuntimeError, ValueError) as exc:
            raise UsageError(f"ExecuTorch could not run {self.path.name} on inputs {[a.shape for a in arrays]}: {first_line(exc)}") from None
        return [o.numpy().copy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]


def set_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide thread pool (XNNPACK runs on it)."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def _to_input(array: np.ndarray, dtype, shape: tuple[int, ...], axis: int, name: str) -> np.ndarray:
    """``array`` contiguous in the program's input type; a wrong sample shape is a UsageError naming the input."""
    expected = list(shape)
    if len(array.shape) != len(expected) or any(g != e for i, (g, e) in enumerate(zip(array.shape, expected)) if i != axis):
        expected[axis] = -1
        raise UsageError(f"input {name!r} expects shape {tuple(expected)} (-1: the batch) but got {tuple(array.shape)}")
    return np.ascontiguousarray(array, dtype=dtype)

