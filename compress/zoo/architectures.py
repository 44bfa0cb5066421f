"""The seed networks of ../shared/seed-models.md, re-implemented in PyTorch.

Defaults are the articles' hyper-parameters; ``width`` scales channels/units (students for distillation).
Softmax belongs to the loss: every classifier returns logits.

Example:
    >>> MnistCNN(width=0.25)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import math

import torch
from torch import nn


def scaled(units: int, width: float) -> int:
    """``units`` times the width multiplier, at least 1."""
    return max(1, int(round(units * width)))


class CNN64(nn.Module):
    """Article 1: Conv2D(32, 3x3, ReLU) -> MaxPool 2x2 -> Flatten -> Dense(128, ReLU) -> Dense(10); 3x64x64 input."""

    def __init__(self, width: float = 1.0, classes: int = 10):
        super().__init__()
        c, h = scaled(32, width), scaled(128, width)
        self.features = nn.Sequential(nn.Conv2d(3, c, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * 31 * 31, h), nn.ReLU(), nn.Linear(h, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LSTMClassifier(nn.Module):
    """Article 1: LSTM(50 units) -> Dense(10) on the last hidden state; (batch, time, features) input."""

    def __init__(self, width: float = 1.0, features: int = 8, classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(features, scaled(50, width), batch_first=True)
        self.head = nn.Linear(scaled(50, width), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(x)
        return self.head(sequence[:, -1])


class AttentionClassifier(nn.Module):
    """Article 1: additive attention pooling, score = V·tanh(W·h), softmax over time, context = Σ weights·h.

    Each time step is first encoded (Dense + learned position, ReLU) so pooling keeps where a row was.
    The learned position starts large (N(0, 3²), against a Dense output of about ±0.5), so each hidden unit
    is switched on for only some rows and is linear in those rows' pixels: the pooled context then carries
    row-specific linear features, the way a linear classifier on the flat image does (~0.98 on digits).
    With a zero start every row shared one encoding and the model topped out near 0.93.
    """

    def __init__(self, width: float = 1.0, features: int = 8, steps: int = 8, classes: int = 10):
        super().__init__()
        hidden, units = scaled(128, width), scaled(32, width)
        self.encode = nn.Linear(features, hidden)
        self.position = nn.Parameter(torch.randn(steps, hidden) * 3.0)
        self.W = nn.Linear(hidden, units)
        self.V = nn.Linear(units, 1, bias=False)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.encode(x) + self.position)
        weights = torch.softmax(self.V(torch.tanh(self.W(h))), dim=1)  # (batch, time, 1)
        return self.head((weights * h).sum(dim=1))


class MultiTask(nn.Module):
    """Article 1: Input(64) -> Dense(128, ReLU) -> heads Dense(10) and Dense(5)."""

    def __init__(self, width: float = 1.0, features: int = 64, classes: tuple[int, int] = (10, 5)):
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(features, scaled(128, width)), nn.ReLU())
        self.head_a = nn.Linear(scaled(128, width), classes[0])
        self.head_b = nn.Linear(scaled(128, width), classes[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.shared(x)
        return self.head_a(shared), self.head_b(shared)


class MultiHeadSelfAttention(nn.Module):
    """Article 2: separate Q/K/V/O projections, scaled dot-product attention."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.heads, self.depth = heads, d_model // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        return x.reshape(batch, steps, self.heads, self.depth).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.depth)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        batch, _, steps, _ = context.shape
        return self.o(context.transpose(1, 2).reshape(batch, steps, self.heads * self.depth))


class TransformerClassifier(nn.Module):
    """Article 2: an encoder block (8-head self-attention, d_model 512, feed-forward, norms) + classifier.

    The classifier reads every position (flatten → Dense), not the mean over tokens: with 64 pixel tokens the mean
    pool reached 0.88 on digits (it must squeeze where a pixel is into the pooled features), the flat head 0.967.
    """

    def __init__(self, width: float = 1.0, vocab: int = 17, steps: int = 64, heads: int = 8, classes: int = 10):
        super().__init__()
        d_model = heads * scaled(64, width)
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.randn(steps, d_model))
        self.attention = MultiHeadSelfAttention(d_model, heads)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model))
        self.head = nn.Linear(steps * d_model, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position
        x = self.norm1(x + self.attention(x))
        x = self.norm2(x + self.feed_forward(x))
        return self.head(x.flatten(1))


class CNNSame(nn.Module):
    """Article 3: Conv(32,3x3,SAME) -> MaxPool(2,SAME) -> Conv(64,3x3,SAME) -> MaxPool(2,SAME) -> Dense(128) -> Dense."""

    def __init__(self, width: float = 1.0, size: int = 28, classes: int = 10):
        super().__init__()
        c1, c2, h = scaled(32, width), scaled(64, width), scaled(128, width)
        pooled = math.ceil(math.ceil(size / 2) / 2)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * pooled * pooled, h), nn.ReLU(), nn.Linear(h, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ElmanRNN(nn.Module):
    """Article 3: a basic (Elman) RNN cell with ``num_units`` hidden -> Dense(classes)."""

    def __init__(self, width: float = 1.0, features: int = 8, num_units: int = 64, classes: int = 10):
        super().__init__()
        self.rnn = nn.RNN(features, scaled(num_units, width), batch_first=True)
        self.head = nn.Linear(scaled(num_units, width), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.rnn(x)
        return self.head(sequence[:, -1])


class MnistCNN(nn.Module):
    """Article 4: Conv(32)->Pool->Conv(64)->Pool->Conv(64)->Flatten->Dense(64, ReLU)->Dense(10); 1x28x28."""

    def __init__(self, width: float = 1.0, classes: int = 10):
        super().__init__()
        c1, c2, h = scaled(32, width), scaled(64, width), scaled(64, width)
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c2, 3), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 3 * 3, h), nn.ReLU(), nn.Linear(h, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LinearRegression(nn.Module):
    """Article 4: y = θ·x + b."""

    def __init__(self, features: int = 10):
        super().__init__()
        self.linear = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)
