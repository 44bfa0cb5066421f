"""Data checked once, where it is read: kinds of values, sample count, finiteness, labels against the model's classes.

Every failure is a UsageError (exit 2) naming the array and what to fix.

Example:
    >>> check_dtype(np.array(["a", "b"]), "x", "data.npz")
    UsageError: data.npz: array 'x' holds strings (dtype <U1); save numbers (float32 inputs, integer labels)
    >>> check_dataset(Dataset("d", x=(np.array([[np.nan], [1.0]]),)))
    UsageError: data 'd': array 'x' has 1 non-finite value(s) (NaN or infinite) in 1 of 2 samples; clean or drop them
"""
from __future__ import annotations

import numpy as np

from compress.data.dataset import Dataset, Head
from compress.errors import UsageError

REFUSED_KINDS = {"U": "strings", "S": "bytes", "c": "complex numbers", "O": "Python objects", "V": "structured records",
                 "M": "dates", "m": "time spans"}


def check_dtype(array: np.ndarray, name: str, where: str) -> np.ndarray:
    """``array`` if it holds numbers or booleans; else a UsageError naming the array and its dtype."""
    if array.dtype.kind in REFUSED_KINDS:
        raise UsageError(f"{where}: array {name!r} holds {REFUSED_KINDS[array.dtype.kind]} (dtype {array.dtype}); "
                         "save numbers (float32 inputs, integer labels)")
    if array.ndim == 0:
        raise UsageError(f"{where}: array {name!r} is a single value, not samples; put the sample axis first")
    return array


def _array_names(dataset: Dataset) -> list[tuple[str, np.ndarray]]:
    inputs = [("x" if i == 0 else f"x{i}", a) for i, a in enumerate(dataset.x)]
    labels = [(dataset.heads[i].name if i < len(dataset.heads) else f"y{i}", a) for i, a in enumerate(dataset.y or ())]
    return inputs + labels


def check_dataset(dataset: Dataset) -> Dataset:
    """``dataset`` if it has samples, only finite values and non-negative integer labels; else a UsageError."""
    where = f"data {dataset.name!r}"
    if dataset.size == 0:
        raise UsageError(f"{where} has no samples; give at least 10")
    for name, array in _array_names(dataset):
        check_dtype(array, name, where)
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array)
            if bad.any():
                rows = int(bad.reshape(len(bad), -1).any(axis=1).sum())
                raise UsageError(f"{where}: array {name!r} has {int(bad.sum())} non-finite value(s) (NaN or infinite) "
                                 f"in {rows} of {len(array)} samples; clean or drop them")
    for head, labels in zip(dataset.heads, dataset.y or ()):
        if head.kind == "classification" and labels.size and labels.min() < 0:
            raise UsageError(f"{where}: labels {head.name!r} include {int(labels.min())}; class labels count from 0")
    return dataset


def check_labels(dataset: Dataset, heads: tuple[Head, ...], model: str) -> None:
    """Class labels of ``dataset`` must be classes the model has (``heads``: what the model predicts)."""
    for head, labels in zip(heads, dataset.y or ()):
        if head.kind != "classification" or not labels.size or not np.issubdtype(labels.dtype, np.integer):
            continue
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= head.classes:
            outside = int(((labels < 0) | (labels >= head.classes)).sum())
            raise UsageError(f"data {dataset.name!r}: {outside} label(s) outside the {head.classes} classes of {model} "
                             f"(labels range {low} to {high}, the model predicts 0 to {head.classes - 1}); fix the labels or the --data")
