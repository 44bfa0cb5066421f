"""Small non-zoo models the quantize tests export as TorchScript and torch.export programs."""
from __future__ import annotations

import torch
from torch import nn


class TokenClassifier(nn.Module):
    """Two int64 inputs: token ids and an attention mask."""

    def __init__(self, vocab: int = 50, dim: int = 32, classes: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.proj(self.embed(ids)))
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)


class StatefulGRU(nn.Module):
    """A recurrent step with state in and out: (x, h) -> (y, h')."""

    def __init__(self, features: int = 8, hidden: int = 32):
        super().__init__()
        self.cell = nn.GRUCell(features, hidden)
        self.out = nn.Linear(hidden, 5)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        h_next = self.cell(x, h)
        return self.out(h_next), h_next


class Embedder(nn.Module):
    """A non-classification output: a 16-d embedding of 8x8 images."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiHead(nn.Module):
    """Four outputs of four kinds: class logits (10), an embedding (32), a box (4) and one score per sample."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        self.classes, self.embed, self.box, self.score = nn.Linear(64, 10), nn.Linear(64, 32), nn.Linear(64, 4), nn.Linear(64, 1)

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return self.classes(h), self.embed(h), self.box(h), self.score(h)


class TinyEncoder(nn.Module):
    """BERT-like: int64 token ids + attention mask -> a mean-pooled 32-d sentence embedding (one attention layer)."""

    def __init__(self, vocab: int = 60, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5 + (1 - mask.unsqueeze(1).to(x.dtype)) * -1e4
        hidden = self.norm(x + self.ffn(torch.softmax(scores, dim=-1) @ v))
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class WideRangeLSTM(nn.Module):
    """A 3-layer LSTM encoder whose input feature 0 is ~1000x the others (and down-weighted to match): per-tensor
    static int8 of that input rounds every other feature to zero, so int8 ruins the embedding."""

    def __init__(self, features: int = 8, hidden: int = 32, layers: int = 3):
        super().__init__()
        self.proj = nn.Linear(features, hidden)
        with torch.no_grad():
            self.proj.weight[:, 0] /= 1000.0
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm(self.proj(x))
        return self.out(sequence[:, -1])


class TinyVad(nn.Module):
    """GRU-like streaming model: chunk (B, 8) and state (2, B, 16), batch on the state's axis 1 ->
    speech probability (B, 1) and the next state (2, B, 16)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.rec = nn.ModuleList([nn.Linear(16, 16) for _ in range(2)])
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        h = torch.relu(self.inp(x))
        layers = []
        for i, rec in enumerate(self.rec):
            h = torch.tanh(rec(h) + state[i])
            layers.append(h)
        return torch.sigmoid(self.out(h)), torch.stack(layers)


class PitchBins(nn.Module):
    """A pitch classifier over 360 ordered bins (CREPE-like): a frame of 64 samples -> a bump of logits centred on the
    predicted bin, or with ``sigmoid`` the independent per-bin probabilities."""

    def __init__(self, sigmoid: bool = False, width: float = 4.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 1))
        self.register_buffer("bins", torch.arange(360, dtype=torch.float32))
        self.sigmoid, self.width = sigmoid, width

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        centre = 180.0 + 150.0 * torch.tanh(self.net(frame))
        logits = -0.5 * ((self.bins - centre) / self.width) ** 2
        return torch.sigmoid(logits + 3.0) if self.sigmoid else logits


class CtcHead(nn.Module):
    """Per-timestep CTC logits (B, T, C) over 12 symbols from (B, T, 16) features, confident as a trained head is."""

    def __init__(self, features: int = 16, symbols: int = 12):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 32), nn.ReLU())
        self.head = nn.Linear(32, symbols)
        with torch.no_grad():
            self.head.weight *= 20.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Landmarks(nn.Module):
    """5 facial landmarks as 10 pixel coordinates (x, y) on a 32x32 image."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 32.0 * torch.sigmoid(self.net(image))


class FloatTable(nn.Module):
    """A small Linear before a large table used in an elementwise product (Mul, which int8 ONNX keeps in float): the
    int8 file is the fp32 file's size, less 3/4 of the Linear's few weights."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 8)
        self.table = nn.Parameter(torch.randn(8, 4000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.lin(x).unsqueeze(-1) * self.table).mean(-1)
