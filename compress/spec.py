"""What a model takes and gives: named, typed tensors with a dynamic batch axis.

Example:
    >>> spec = InputSpec.parse(["1x3x64x64"])
    >>> spec.tensors[0].shape, spec.tensors[0].dtype
    ((-1, 3, 64, 64), 'float32')
    >>> [t.shape for t in spec.example_inputs(batch=2)]
    [torch.Size([2, 3, 64, 64])]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from compress.errors import UsageError

DTYPES = ("float32", "float16", "int64", "int32", "bool")


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor. ``shape[0] == -1`` marks the dynamic batch axis."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int = 0   # value range for integer inputs (token ids, masks)
    high: int = 2

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> "TensorSpec":
        return cls(**{**data, "shape": tuple(int(d) for d in data["shape"])})

    def random(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        shape = (batch, *self.shape[1:])
        if self.dtype.startswith("float"):
            return rng.standard_normal(shape).astype(self.dtype)
        if self.dtype == "bool":
            return rng.integers(0, 2, shape).astype(bool)
        return rng.integers(self.low, self.high, shape).astype(self.dtype)


@dataclass(frozen=True)
class InputSpec:
    tensors: tuple[TensorSpec, ...]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def to_list(self) -> list[dict]:
        return [t.to_dict() for t in self.tensors]

    @classmethod
    def from_list(cls, items: list[dict]) -> "InputSpec":
        return cls(tuple(TensorSpec.from_dict(item) for item in items))

    @classmethod
    def parse(cls, texts: list[str]) -> "InputSpec":
        """Parse ``--input-shape`` values: ``1x3x64x64``, ``1x16:int64``, ``1x16:int64:0-1000``, ``name=1x8:float32``.

        Anything else raises UsageError (exit 2), never another exception.
        """
        return cls(tuple(_parse_tensor(text, index) for index, text in enumerate(texts)))

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple:
        """Random torch tensors matching the spec (for tracing/export only, never for calibration)."""
        import torch

        rng = np.random.default_rng(seed)
        return tuple(torch.from_numpy(t.random(batch, rng)) for t in self.tensors)

    def check(self, arrays: tuple[np.ndarray, ...], where: str) -> None:
        """Raise a UsageError naming the mismatch when ``arrays`` do not fit the spec."""
        if len(arrays) != len(self.tensors):
            raise UsageError(f"{where}: the model takes {len(self.tensors)} input(s) but the data has {len(arrays)}")
        for tensor, array in zip(self.tensors, arrays):
            if tuple(array.shape[1:]) != tuple(tensor.shape[1:]):
                raise UsageError(
                    f"{where}: input {tensor.name!r} expects shape (batch, {', '.join(map(str, tensor.shape[1:]))}) "
                    f"but the data has {tuple(array.shape)}; fix --input-shape or the data"
                )


MAX_ELEMENTS = 1 << 28  # values in one sample of one input (1 GiB of float32): a larger shape is a typo


def _parse_tensor(text: str, index: int) -> TensorSpec:
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
    return TensorSpec(name.strip() or f"input_{index}", (-1, *dims[1:]), dtype, low, high)
