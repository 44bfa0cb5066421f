"""Models the cost benchmark builds in code, with random weights (cost does not depend on the weights' values),
saved as ``torch.export`` programs with a dynamic batch axis.

Example:
    >>> path = save_program("bert_encoder", Path("/tmp/cost"))      # /tmp/cost/bert_encoder.pt2, ~20M parameters
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class BertEncoder(nn.Module):
    """BERT-like encoder: token + position embeddings, ``layers`` post-norm encoder layers, tanh-pooled mean."""

    def __init__(self, vocab: int = 8192, width: int = 512, layers: int = 5, heads: int = 8, seq: int = 128):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.randn(1, seq, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, batch_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pool = nn.Linear(width, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.tokens(ids) + self.positions)
        return torch.tanh(self.pool(hidden.mean(dim=1)))


class LstmEncoder(nn.Module):
    """A stack of ``layers`` LSTMs over feature frames (speech-encoder-like); returns every frame's hidden state."""

    def __init__(self, features: int = 80, hidden: int = 512, layers: int = 3):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.lstm(frames)[0]


# name -> (module factory, example input); quick sizes keep a smoke run short
BUILT = {
    "bert_encoder": (lambda quick: BertEncoder(width=128, layers=2, heads=4) if quick else BertEncoder(),
                     lambda quick: torch.randint(0, 8192, (2, 128))),
    "lstm_encoder": (lambda quick: LstmEncoder(hidden=128) if quick else LstmEncoder(),
                     lambda quick: torch.randn(2, 50 if quick else 100, 80)),
}


def save_program(name: str, folder: Path, quick: bool = False) -> tuple[Path, int]:
    """Export model ``name`` of BUILT (seeded random weights, dynamic batch) to ``folder/name.pt2``; (path, parameters)."""
    torch.manual_seed(0)
    build, example = BUILT[name]
    module = build(quick).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module, (example(quick),), dynamic_shapes=({0: batch},))
    path = folder / f"{name}.pt2"
    torch.export.save(program, str(path))
    return path, sum(p.numel() for p in module.parameters())
