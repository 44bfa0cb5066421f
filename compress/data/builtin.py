"""Built-in datasets made from real data that scikit-learn ships (no download).

Every digits variant is the same 1,797 real 8x8 handwritten digits of ``sklearn.datasets.load_digits``,
shaped for one seed model: upsampled images, rows as time steps, pixels as tokens, flat features.

Example:
    >>> digits_tokens().x[0].dtype
    dtype('int64')
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from compress.data.dataset import Dataset, Head
from compress.errors import EnvironmentFailure

DIGIT = Head("digit", "classification", 10)


def sklearn_data_file(name: str) -> Path:
    """A data file scikit-learn ships (``sklearn/datasets/data/``), found without importing scikit-learn (its import
    costs about 2 s of CPU, more than reading the file)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise EnvironmentFailure(f"scikit-learn's {name} is missing: pip install scikit-learn")
    return path


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """``load_digits()``'s images in [0, 1] and targets, read from its file the way it reads it."""
    with gzip.open(sklearn_data_file("digits.csv.gz"), "rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    images = (data[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    return images, data[:, -1].astype(np.int64)


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(images[:, None])
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False).numpy()


def _labeled(name: str, x: np.ndarray, meta: str) -> Dataset:
    return Dataset(name, (np.ascontiguousarray(x),), (_digits()[1],), (DIGIT,), meta={"description": meta})


def digits8() -> Dataset:
    return _labeled("digits8", _digits()[0][:, None], "sklearn digits, 1x8x8 in [0,1]")


def digits28() -> Dataset:
    return _labeled("digits28", _upsample(_digits()[0], 28), "sklearn digits upsampled to 1x28x28 (MNIST-like)")


def digits64rgb() -> Dataset:
    gray = _upsample(_digits()[0], 64)
    return _labeled("digits64rgb", np.repeat(gray, 3, axis=1), "sklearn digits upsampled to 3x64x64")


def digits_seq() -> Dataset:
    return _labeled("digits_seq", _digits()[0], "sklearn digits as sequences: 8 time steps (rows) x 8 features")


def digits_tokens() -> Dataset:
    tokens = np.rint(_digits()[0].reshape(-1, 64) * 16).astype(np.int64)
    return _labeled("digits_tokens", tokens, "sklearn digits as 64 tokens (pixel intensity 0..16)")


def digits_multitask() -> Dataset:
    images, digit = _digits()
    pair = digit // 2  # a real 5-way label: {0,1} {2,3} {4,5} {6,7} {8,9}
    return Dataset(
        "digits_multitask",
        (images.reshape(-1, 64),),
        (digit, pair),
        (DIGIT, Head("digit_pair", "classification", 5)),
        meta={"description": "sklearn digits, 64 features; heads: digit (10) and digit // 2 (5)"},
    )


def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    x = (bunch.data * np.sqrt(len(bunch.data))).astype(np.float32)  # unit-variance features
    return Dataset(
        "diabetes",
        (x,),
        (bunch.target.astype(np.float32)[:, None],),
        (Head("progression", "regression"),),
        meta={"description": "sklearn diabetes, 10 standardized features, disease progression"},
    )
