"""The one small protocol every runtime implements, and the factory that picks one.

Example:
    >>> runner = open_runner("m.tflite", threads=2)
    >>> runner.name
    'litert'
    >>> [o.shape for o in runner.run((np.zeros((4, 1, 28, 28), np.float32),))]
    [(4, 10)]
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np

from compress.catalog import RUNTIME_MODULES, find_format, register_runtime, runtime_by_suffix
from compress.data import Dataset
from compress.errors import UsageError

__all__ = ["RUNTIME_MODULES", "Runner", "io_layout", "open_runner", "register_runtime", "run_dataset", "runtime_for"]


class Runner(Protocol):
    """Runs one artifact: ``run`` takes one array per model input (batch first) and returns one per output."""

    name: str          # "onnxruntime" | "litert" | "torch"
    path: Path
    input_names: list[str]
    input_axes: list[int]    # each input's batch axis (a state (layers, B, H) has it on 1)
    output_axes: list[int]   # each output's batch axis

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]: ...


def runtime_for(path: str | Path, runtime: str = "auto") -> str:
    if runtime != "auto":
        if runtime not in RUNTIME_MODULES:
            raise UsageError(f"unknown runtime {runtime!r}; choose auto, {', '.join(RUNTIME_MODULES)}")
        return runtime
    fmt = find_format(path)
    if fmt is None:
        raise UsageError(f"{path}: no runtime for {Path(path).suffix or 'a file without suffix'}; "
                         f"artifacts are {', '.join(runtime_by_suffix())}")
    return fmt.runtime


def open_runner(path: str | Path, runtime: str = "auto", threads: int | None = None, **options) -> Runner:
    """Load ``path`` in its runtime (chosen by suffix when ``runtime='auto'``)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"artifact {path} not found; check the path")
    module_name, _, class_name = RUNTIME_MODULES[runtime_for(path, runtime)].partition(":")
    runner_class = getattr(importlib.import_module(module_name), class_name)
    return runner_class(path, threads=threads, **options)


def io_layout(inputs: list[list], outputs: list[list], spec=None) -> tuple[list[int], list[int], int | None]:
    """``(input axes, output axes, fixed batch)`` of a file whose dims are ints or None (dynamic).

    ``spec`` (the model's InputSpec) names the axes; without it each tensor's one dynamic dim is its batch axis,
    else 0. The fixed batch is the first input's dim on its batch axis when the file fixes it.
    """
    from compress.targets.device_runner import batch_axis

    if spec is not None:
        in_axes, out_axes = list(spec.input_axes), list(spec.output_axes or [0] * len(outputs))
    else:
        in_axes, out_axes = [batch_axis(s) for s in inputs], [batch_axis(s) for s in outputs]
    first = inputs[0] if inputs else []
    fixed = first[in_axes[0]] if len(first) > in_axes[0] and first[in_axes[0]] else None
    return in_axes, out_axes, fixed


def run_dataset(runner: Runner, dataset: Dataset, batch_size: int = 64) -> list[np.ndarray]:
    """Run every sample of ``dataset`` through ``runner``; outputs sample-first, concatenated per model output."""
    chunks: list[list[np.ndarray]] = []
    for inputs, _ in dataset.batches(batch_size):
        outputs = runner.run(inputs)
        axes = getattr(runner, "output_axes", None) or [0] * len(outputs)
        chunks.append([np.moveaxis(np.asarray(o), axis, 0) for o, axis in zip(outputs, axes)])
    return [np.concatenate(parts) for parts in zip(*chunks)]
