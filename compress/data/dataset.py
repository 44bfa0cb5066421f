"""The in-memory dataset: one array per model input, one label array per output head.

Example:
    >>> ds = Dataset("toy", x=(np.zeros((10, 4), np.float32),), y=(np.arange(10) % 2,),
    ...              heads=(Head("class", "classification", 2),))
    >>> ds.split(seed=0).test.size
    2
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test


@dataclass(frozen=True)
class Head:
    """One model output: ``kind`` is 'classification' (``classes`` > 0) or 'regression'."""

    name: str
    kind: str
    classes: int = 0

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.kind == "classification" else "r2"


@dataclass
class Dataset:
    """Arrays with the sample axis first. ``y`` is None for unlabeled data.

    ``axes``: each input's batch axis in the model's layout (empty: all 0). Splitting and subsets work sample-first;
    ``batches`` yields arrays in the model's layout (a state ``(layers, B, H)`` with its batch on axis 1).
    """

    name: str
    x: tuple[np.ndarray, ...]
    y: tuple[np.ndarray, ...] | None = None
    heads: tuple[Head, ...] = ()
    split_name: str = "all"
    meta: dict = field(default_factory=dict)
    axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        sizes = {len(a) for a in self.x} | {len(a) for a in (self.y or ())}
        if len(sizes) != 1:
            raise ValueError(f"dataset {self.name!r}: arrays disagree on the number of samples {sorted(sizes)}")

    @property
    def size(self) -> int:
        return len(self.x[0])

    @property
    def labeled(self) -> bool:
        return self.y is not None

    def subset(self, index: np.ndarray, split_name: str) -> "Dataset":
        return Dataset(
            self.name,
            tuple(a[index] for a in self.x),
            None if self.y is None else tuple(a[index] for a in self.y),
            self.heads,
            split_name,
            dict(self.meta),
            self.axes,
        )

    def split(self, seed: int = 0) -> "Splits":
        """Deterministic 70/10/20 train/val/test split for ``seed``."""
        order = np.random.default_rng(seed).permutation(self.size)
        n_train = int(round(SPLIT_FRACTIONS[0] * self.size))
        n_val = int(round(SPLIT_FRACTIONS[1] * self.size))
        return Splits(
            train=self.subset(order[:n_train], "train"),
            val=self.subset(order[n_train : n_train + n_val], "val"),
            test=self.subset(order[n_train + n_val :], "test"),
        )

    def take(self, n: int, seed: int = 0) -> "Dataset":
        """A deterministic random subset of at most ``n`` samples (e.g. for calibration)."""
        if n >= self.size:
            return self
        index = np.sort(np.random.default_rng(seed).choice(self.size, size=n, replace=False))
        return self.subset(index, f"{self.split_name}[{n}]")

    def batches(self, batch_size: int, pad: bool = False):
        """Yield (inputs tuple in the model's layout, labels tuple or None) in order.

        ``pad``: the last batch is filled up to ``batch_size`` with copies of its last sample (for a model that runs
        at one fixed batch; the caller drops the padding's outputs).
        """
        axes = self.axes or (0,) * len(self.x)
        for start in range(0, self.size, batch_size):
            stop = start + batch_size
            xs = [a[start:stop] for a in self.x]
            short = batch_size - len(xs[0])
            if pad and short:
                xs = [np.concatenate([a, np.repeat(a[-1:], short, axis=0)]) for a in xs]
            ys = None if self.y is None else tuple(a[start:stop] for a in self.y)
            yield tuple(np.moveaxis(a, 0, axis) if axis else a for a, axis in zip(xs, axes)), ys

    def fingerprint(self) -> str:
        """sha256 over every array: identifies the exact samples used."""
        digest = hashlib.sha256()
        for array in (*self.x, *(self.y or ())):
            digest.update(str(array.dtype).encode() + str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset

    def calibration(self, n: int, seed: int = 0) -> Dataset:
        """Calibration samples come from train+val, never from test."""
        pool = self.train.subset(np.arange(self.train.size), "train")
        pool = Dataset(
            pool.name,
            tuple(np.concatenate([a, b]) for a, b in zip(self.train.x, self.val.x)),
            None if pool.y is None else tuple(np.concatenate([a, b]) for a, b in zip(self.train.y, self.val.y)),
            pool.heads,
            "train+val",
            pool.meta,
            pool.axes,
        )
        return pool.take(n, seed)
