"""What a model takes and gives: named, typed tensors, each with its batch axis (0 unless declared or inferred).

Data inside compress is sample-first (``Dataset``); the model's own layout, where a state ``(layers, B, H)`` has its
batch on axis 1, is what ``example_inputs`` builds and what runners take (``to_model``/``to_samples``).

Example:
    >>> spec = InputSpec.parse(["x=1x40", "state=2x1x16"], batch_axes={"state": 1})
    >>> spec.tensors[1].shape, spec.tensors[1].batch_axis
    ((2, -1, 16), 1)
    >>> [tuple(t.shape) for t in spec.example_inputs(batch=3)]
    [(3, 40), (2, 3, 16)]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from compress.errors import UsageError

DTYPES = ("float32", "float16", "int64", "int32", "bool")


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor. ``shape[batch_axis] == -1`` marks the batch axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int = 0   # value range for integer inputs (token ids, masks)
    high: int = 2
    batch_axis: int = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (the batch axis removed)."""
        return tuple(d for i, d in enumerate(self.shape) if i != self.batch_axis)

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> "TensorSpec":
        return cls(**{**data, "shape": tuple(int(d) for d in data["shape"])})

    def random(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """``batch`` random samples, sample-first (``to_model`` moves the batch to the model's axis)."""
        shape = (batch, *self.sample_shape)
        if self.dtype.startswith("float"):
            return rng.standard_normal(shape).astype(self.dtype)
        if self.dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(self.low, self.high, shape).astype(self.dtype)


def tensor_from_dims(name: str, dims: list[int | None], dtype: str, batch_axis: int | None = None) -> tuple[TensorSpec, int | None]:
    """A TensorSpec from an export's dims (None = dynamic) and the batch it is fixed at (None when dynamic).

    The batch axis is ``batch_axis`` when declared, else the one dynamic dim, else 0.
    """
    dynamic = [i for i, d in enumerate(dims) if d is None]
    axis = batch_axis if batch_axis is not None else (dynamic[0] if len(dynamic) == 1 else 0)
    if not 0 <= axis < max(len(dims), 1):
        raise UsageError(f"--batch-axis {name}={axis}: input {name!r} has only {len(dims)} axes")
    fixed = dims[axis] if dims and dims[axis] is not None else None
    shape = tuple(-1 if i == axis or d is None else int(d) for i, d in enumerate(dims))
    return TensorSpec(name, shape, dtype, 0, 2, axis), fixed


@dataclass(frozen=True)
class InputSpec:
    """The inputs, plus what is known of the outputs and of state fed back between calls.

    ``fixed_batch``: the one batch the program runs at (a ``.pt2`` exported without a dynamic batch), else None.
    ``output_axes``: each output's batch axis (None: all 0). ``state``: ``(input name, output index)`` pairs.
    ``inferred``: one line per thing compress inferred rather than was told (reported as such).
    """

    tensors: tuple[TensorSpec, ...]
    fixed_batch: int | None = None
    output_axes: tuple[int, ...] | None = None
    state: tuple[tuple[str, int], ...] = ()
    inferred: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    @property
    def input_axes(self) -> tuple[int, ...]:
        return tuple(t.batch_axis for t in self.tensors)

    def with_batch_axes(self, axes: dict[str, int]) -> "InputSpec":
        """The spec with ``axes`` (input name -> batch axis) applied; the dim on the new axis becomes the batch."""
        unknown = [name for name in axes if name not in self.names]
        if unknown:
            raise UsageError(f"--batch-axis names input {unknown[0]!r}, but the model's inputs are {', '.join(self.names)}")
        tensors = []
        for tensor in self.tensors:
            if tensor.name not in axes or axes[tensor.name] == tensor.batch_axis:
                tensors.append(tensor)
                continue
            dims = [None if i == axes[tensor.name] else (1 if d == -1 else d) for i, d in enumerate(tensor.shape)]
            new, _ = tensor_from_dims(tensor.name, dims, tensor.dtype, axes[tensor.name])
            tensors.append(TensorSpec(new.name, new.shape, new.dtype, tensor.low, tensor.high, new.batch_axis))
        return replace(self, tensors=tuple(tensors))

    def to_model(self, arrays) -> tuple:
        """Sample-first arrays (numpy or torch) in the model's layout (each input's batch on its own axis)."""
        return tuple(_move(a, 0, t.batch_axis) for a, t in zip(arrays, self.tensors))

    def to_samples(self, outputs) -> list:
        """Model outputs with their batch axis moved first."""
        axes = self.output_axes or (0,) * len(outputs)
        return [_move(o, axis, 0) for o, axis in zip(outputs, axes)]

    def to_list(self) -> list[dict]:
        return [t.to_dict() for t in self.tensors]

    @classmethod
    def from_list(cls, items: list[dict]) -> "InputSpec":
        return cls(tuple(TensorSpec.from_dict(item) for item in items))

    @classmethod
    def parse(cls, texts: list[str], batch_axes: dict[str, int] | None = None) -> "InputSpec":
        """Parse ``--input-shape`` values: ``1x3x64x64``, ``1x16:int64``, ``1x16:int64:0-1000``, ``name=1x8:float32``.

        ``batch_axes`` (``--batch-axis name=1``): inputs whose batch is not on axis 0. Anything else raises
        UsageError (exit 2), never another exception.
        """
        return cls(tuple(_parse_tensor(text, index, batch_axes or {}) for index, text in enumerate(texts)))

    def random_inputs(self, batch: int = 1, seed: int = 0) -> tuple[np.ndarray, ...]:
        """Random numpy inputs in the model's layout, one ``seed`` for all (timing, tracing; never calibration)."""
        rng = np.random.default_rng(seed)
        return self.to_model([t.random(batch, rng) for t in self.tensors])

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple:
        """:meth:`random_inputs` as torch tensors (for tracing/export only, never for calibration)."""
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in self.random_inputs(batch, seed))

    def random_dataset(self, samples: int, seed: int = 0):
        """A Dataset of ``samples`` random inputs (only when no data was given: a last resort)."""
        from compress.data import Dataset

        rng = np.random.default_rng(seed)
        return Dataset("random", tuple(t.random(samples, rng) for t in self.tensors), split_name="random", axes=self.input_axes)

    def samples_first(self, arrays: tuple[np.ndarray, ...], where: str) -> tuple[np.ndarray, ...]:
        """``arrays`` sample-first: each is given sample-first or in the model's layout (batch on its own axis).

        State inputs the data lacks are filled with zeros. A mismatch raises a UsageError naming it.
        """
        state_inputs = [t for t in self.tensors if t.name in {name for name, _ in self.state}]
        if len(arrays) == len(self.tensors) - len(state_inputs) and state_inputs:
            given = iter(arrays)
            size = len(arrays[0])
            arrays = tuple(np.zeros((size, *t.sample_shape), t.dtype) if t in state_inputs else next(given) for t in self.tensors)
        if len(arrays) != len(self.tensors):
            raise UsageError(f"{where}: the model takes {len(self.tensors)} input(s) but the data has {len(arrays)}")
        result = []
        for tensor, array in zip(self.tensors, arrays):
            if tensor.batch_axis and array.ndim == len(tensor.shape) and tuple(np.delete(array.shape, tensor.batch_axis)) == tensor.sample_shape \
                    and tuple(array.shape[1:]) != tensor.sample_shape:
                array = np.moveaxis(array, tensor.batch_axis, 0)
            if tuple(array.shape[1:]) != tensor.sample_shape:
                raise UsageError(
                    f"{where}: input {tensor.name!r} expects shape {_shape_text(tensor)} "
                    f"but the data has {tuple(array.shape)}; fix --input-shape or the data"
                    + ("" if tensor.batch_axis else f", or, if its batch is on another axis, give it with --batch-axis {tensor.name}=AXIS")
                )
            result.append(array)
        return tuple(result)

    def check(self, arrays: tuple[np.ndarray, ...], where: str) -> None:
        """Raise a UsageError naming the mismatch when ``arrays`` do not fit the spec."""
        self.samples_first(arrays, where)


def _shape_text(tensor: TensorSpec) -> str:
    return "(" + ", ".join("batch" if d == -1 else str(d) for d in tensor.shape) + ")"


def _move(array, source: int, destination: int):
    if source == destination:
        return array
    if isinstance(array, np.ndarray):
        return np.moveaxis(array, source, destination)
    return array.movedim(source, destination)


MAX_ELEMENTS = 1 << 28  # values in one sample of one input (1 GiB of float32): a larger shape is a typo


def _parse_tensor(text: str, index: int, batch_axes: dict[str, int]) -> TensorSpec:
    """One ``--input-shape`` value (see InputSpec.parse)."""
    usage = f"bad --input-shape {text!r}: write dimensions like 1x3x64x64 (optionally :int64, :int64:0-1000 or name=...)"
    name, _, rest = text.rpartition("=")
    parts = rest.split(":")
    if len(parts) > 3:
        raise UsageError(usage)
    try:
        dims = tuple(int(d) for d in parts[0].lower().split("x"))
    except ValueError:
        raise UsageError(usage) from None
    if any(d <= 0 for d in dims):
        raise UsageError(usage)
    if int(np.prod(dims[1:], dtype=object)) > MAX_ELEMENTS:
        raise UsageError(f"--input-shape {text!r}: more than {MAX_ELEMENTS:,} values per sample; check the dimensions")
    dtype = parts[1] if len(parts) > 1 else "float32"
    if dtype not in DTYPES:
        raise UsageError(f"bad dtype {dtype!r} in --input-shape {text!r}; use one of {', '.join(DTYPES)}")
    low, high = 0, 2
    if len(parts) > 2:
        try:
            low, high = (int(v) for v in parts[2].split("-"))
        except ValueError:
            raise UsageError(f"bad value range in --input-shape {text!r}: write it as low-high, e.g. 1x16:int64:0-1000") from None
        if dtype not in ("int64", "int32") or not 0 <= low < high <= np.iinfo(dtype).max:
            raise UsageError(f"bad value range {parts[2]!r} in --input-shape {text!r}: integer inputs only, 0 <= low < high")
    name = name.strip() or f"input_{index}"
    axis = batch_axes.get(name, 0)
    tensor, _ = tensor_from_dims(name, [None if i == axis else d for i, d in enumerate(dims)], dtype, axis)
    return replace(tensor, low=low, high=high)
