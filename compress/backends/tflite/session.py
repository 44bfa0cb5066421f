"""LiteRT (TFLite) as a runner: the device runner's ``TfliteSession`` (the same interpreter, I/O quantization and
dtype handling that time the file on a device), fed float data whatever the file's I/O types.

Inputs and outputs follow the file's subgraph order, which litert-torch writes in the torch model's argument and
output order; names come from the signature (``args_0``, ``output_0``, ...). Integer-quantized inputs are
quantized with the tensor's scale and zero-point, quantized outputs dequantized, so callers always pass and get
what the torch model takes and gives (int64 token ids are cast to the file's int32). A file exported with a fixed
batch (litert-torch exports batch 1) is fed in chunks of that batch, the last chunk padded and the padding dropped;
a file with a dynamic batch axis is resized to the batch given.

Example:
    >>> runner = LiteRTRunner("model.int8.tflite", threads=2)
    >>> runner.name, runner.input_names
    ('litert', ['args_0'])
    >>> [o.shape for o in runner.run((np.zeros((32, 1, 28, 28), np.float32),))]
    [(32, 10)]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.runtimes.base import io_layout
from compress.targets.device_runner import RunnerError, TfliteSession, dequantize, quantize, run_in_chunks, tensor_quantization


def open_session(path: Path, threads: int | None) -> TfliteSession:
    """The device runner's LiteRT session for ``path``, its errors as compress errors (no runtime: exit 3)."""
    try:
        return TfliteSession(path, threads)
    except RunnerError as exc:
        if exc.kind == "missing_runtime":
            raise EnvironmentFailure("no TFLite runtime is installed: pip install ai-edge-litert") from None
        raise UsageError(f"{path} is not a loadable TFLite model ({first_line(exc.detail or exc.message)})") from None


class LiteRTRunner:
    """Load ``path`` in the LiteRT interpreter; ``run`` takes one float/int array per input (batch first)."""

    name = "litert"

    def __init__(self, path: str | Path, threads: int | None = None, spec=None):
        self.path = Path(path)
        self.threads = threads
        if not self.path.is_file():
            raise UsageError(f"TFLite file {self.path} not found; check the path")
        self.interpreter = open_session(self.path, threads).interpreter
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        input_names, output_names = _signature_names(self.interpreter)
        self.input_names = [input_names.get(d["index"], d["name"]) for d in self.inputs]
        self.output_names = [output_names.get(d["index"], d["name"]) for d in self.outputs]
        dims = [[[int(d) if d > 0 else None for d in detail["shape_signature"]] for detail in details]
                for details in (self.inputs, self.outputs)]
        self.input_axes, self.output_axes, self.fixed_batch = io_layout(*dims, spec)

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise UsageError(f"{self.path.name} takes {len(self.inputs)} input(s) ({', '.join(self.input_names)}) but got {len(inputs)}")
        arrays = [_to_input(np.asarray(a), detail, axis) for a, detail, axis in zip(inputs, self.inputs, self.input_axes)]
        if self.fixed_batch is None:
            self._resize(arrays[0].shape[self.input_axes[0]])
            return self._invoke(arrays)
        return run_in_chunks(self._invoke, arrays, self.fixed_batch, self.input_axes, self.output_axes)

    def _resize(self, batch: int) -> None:
        if all(d["shape"][axis] == batch for d, axis in zip(self.inputs, self.input_axes)):
            return
        for detail, axis in zip(self.inputs, self.input_axes):
            shape = list(detail["shape"])
            shape[axis] = batch
            self.interpreter.resize_tensor_input(detail["index"], shape)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        interpreter = self.interpreter
        try:
            for array, detail in zip(arrays, self.inputs):
                interpreter.set_tensor(detail["index"], np.ascontiguousarray(array))
            interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"LiteRT could not run {self.path.name} on inputs {[a.shape for a in arrays]}: {first_line(exc)}") from None
        return [dequantize(interpreter.get_tensor(d["index"]), tensor_quantization(d)) for d in self.outputs]


def _signature_names(interpreter) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index → signature name for inputs and outputs (empty when the file has no single signature)."""
    signatures = interpreter._get_full_signature_list() if hasattr(interpreter, "_get_full_signature_list") else {}
    if len(signatures) != 1:
        return {}, {}
    signature = next(iter(signatures.values()))
    return ({index: name for name, index in signature["inputs"].items()},
            {index: name for name, index in signature["outputs"].items()})


def _to_input(array: np.ndarray, detail: dict, axis: int = 0) -> np.ndarray:
    """``array`` in the tensor's type: quantized with its scale/zero-point when the tensor is quantized."""
    dtype = np.dtype(detail["dtype"])
    quantization = tensor_quantization(detail)
    expected = [int(d) for d in detail["shape_signature"]]
    given = list(array.shape)
    if len(given) != len(expected) or any(e > 0 and g != e for i, (g, e) in enumerate(zip(given, expected)) if i != axis):
        expected[axis] = -1
        raise UsageError(f"input {detail['name']!r} expects shape {tuple(expected)} (-1: the batch) but got {tuple(array.shape)}")
    if not quantization and np.issubdtype(dtype, np.integer) and array.size and np.issubdtype(array.dtype, np.integer):
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise UsageError(f"input {detail['name']!r} is {dtype} in the file; values {array.min()}..{array.max()} do not fit")
    return quantize(array, dtype, quantization)


