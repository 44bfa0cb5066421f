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
