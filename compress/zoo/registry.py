"""The zoo's catalogue: which architecture, which article, which data, which training settings.

Example:
    >>> entry = ZOO["mnist_cnn"]
    >>> entry.build(width=0.5).__class__.__name__
    'MnistCNN'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from compress.loading.spec import InputSpec, TensorSpec
from compress.zoo import architectures as arch


@dataclass(frozen=True)
class ZooEntry:
    name: str
    article: str
    architecture: str
    builder: Callable[..., nn.Module]
    dataset: str
    inputs: tuple[TensorSpec, ...]
    epochs: int
    lr: float = 1e-3
    batch_size: int = 64
    widthless: bool = False
    expected: dict = field(default_factory=dict)  # what a default training run reaches (README figures)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.inputs)

    def build(self, width: float = 1.0) -> nn.Module:
        return self.builder() if self.widthless else self.builder(width=width)


def _metric(name: str, value: float) -> dict:
    """A test-split figure that a default training run (seed 0) reached, measured by ``python -m bench.zoo``."""
    return {"name": name, "value": value, "higher_is_better": True}


def _image(channels: int, size: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("image", (-1, channels, size, size)),)


SEQUENCE = (TensorSpec("sequence", (-1, 8, 8)),)

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("cnn64", "1: CNN", "Conv2D(32)-MaxPool-Dense(128)-Dense(10)", arch.CNN64, "digits64rgb", _image(3, 64), epochs=24, batch_size=128, expected=_metric("accuracy", 0.9861)),
        ZooEntry("lstm", "1: RNN", "LSTM(50)-Dense(10)", arch.LSTMClassifier, "digits_seq", SEQUENCE, epochs=30, lr=1e-2, expected=_metric("accuracy", 0.9777)),
        ZooEntry("attention", "1: AttentionLayer", "Dense(128)+pos-additive attention pool-Dense(10)", arch.AttentionClassifier, "digits_seq", SEQUENCE, epochs=140, lr=1e-2, expected=_metric("accuracy", 0.9833)),
        ZooEntry("multitask", "1: multi-task", "Dense(128)-[Dense(10), Dense(5)]", arch.MultiTask, "digits_multitask", (TensorSpec("features", (-1, 64)),), epochs=30, lr=3e-3, expected={**_metric("accuracy", 0.9861), "heads": {"digit": _metric("accuracy", 0.9861), "digit_pair": _metric("accuracy", 0.9749)}}),
        ZooEntry("transformer", "2: MultiHeadAttention", "Embedding-MHA(8 heads, d512)-FFN-norms-Flatten-Dense(10)", arch.TransformerClassifier, "digits_tokens", (TensorSpec("tokens", (-1, 64), "int64", 0, 17),), epochs=6, lr=5e-4, batch_size=32, expected=_metric("accuracy", 0.9610)),
        ZooEntry("cnn_same", "3: CNN", "Conv(32,SAME)-Pool-Conv(64,SAME)-Pool-Dense(128)-Dense(10)", arch.CNNSame, "digits28", _image(1, 28), epochs=15, expected=_metric("accuracy", 0.9833)),
        ZooEntry("rnn", "3: RNN", "Elman RNN(64)-Dense(10)", arch.ElmanRNN, "digits_seq", SEQUENCE, epochs=50, lr=1e-2, expected=_metric("accuracy", 0.9833)),
        ZooEntry("mnist_cnn", "4: CNN", "Conv(32)-Pool-Conv(64)-Pool-Conv(64)-Dense(64)-Dense(10)", arch.MnistCNN, "digits28", _image(1, 28), epochs=20, expected=_metric("accuracy", 0.9861)),
        ZooEntry("linreg", "4: linear regression", "y = θ·x + b", arch.LinearRegression, "diabetes", (TensorSpec("features", (-1, 10)),), epochs=1000, lr=0.1, batch_size=1024, widthless=True, expected=_metric("r2", 0.3413)),
    ]
}


def zoo_entry(name: str) -> ZooEntry:
    from compress.errors import UsageError

    if name not in ZOO:
        raise UsageError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)} (see `compress zoo list`)")
    return ZOO[name]
