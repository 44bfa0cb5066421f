"""A token-embedding table as ExecuTorch's quantized embedding ops (``quantized_decomposed.embedding_byte`` /
``embedding_4bit``, registered by ``executorch.kernels.quantized`` and run by the portable runtime): int8 or int4
symmetric values in groups along the hidden width, one float32 scale per group. int4 is packed two per byte, the
even column in the high nibble, stored as ``q + 8`` (checked against the executorch 1.5 runtime: exact).

Example:
    >>> table = torch.randn(50, 64)
    >>> layer = QuantizedEmbedding(table, LayerChoice("embed", "embedding", "int4-weight", 32, True, ""))
    >>> float((layer(torch.tensor([[3, 7]])) - layer.dequantized()[[3, 7]]).abs().max())
    0.0
"""
from __future__ import annotations

import torch
from torch import nn

from compress.catalog import Technique
from compress.lm.schemes import LayerChoice, quantize_weight, weights_technique


class QuantizedEmbedding(nn.Module):
    """An nn.Embedding's table on an int8/int4 symmetric grid, looked up by ExecuTorch's quantized embedding op."""

    def __init__(self, table: torch.Tensor, choice: LayerChoice):
        super().__init__()
        import executorch.kernels.quantized  # noqa: F401  (registers the quantized_decomposed embedding ops)

        grid = quantize_weight(table.detach().float(), choice.precision, choice.block_size, True)
        q = grid.q.to(torch.int8)
        self.bits = 8 if choice.precision == "int8-weight" else 4
        if self.bits == 4:
            shifted = (q + 8).to(torch.uint8)
            q = (shifted[:, 0::2] << 4) | shifted[:, 1::2]
        self.register_buffer("weight", q)
        self.register_buffer("scales", grid.scale.float())
        self.width = table.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        if self.bits == 8:
            return ops.embedding_byte.dtype(self.weight, self.scales, None, -128, 127, ids, dtype=torch.float32)
        return ops.embedding_4bit.dtype(self.weight, self.scales, None, -8, 7, ids, dtype=torch.float32)

    def dequantized(self) -> torch.Tensor:
        """The table this layer looks up, in float (for checks)."""
        return self(torch.arange(len(self.weight)).unsqueeze(0))[0]


def quantize_embedding_(model: nn.Module, choice: LayerChoice) -> Technique:
    """Replace the embedding ``choice.name`` of ``model`` by a QuantizedEmbedding (a tied head keeps its own
    weight); returns the technique's record."""
    parent_name, _, attr = choice.name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    table = getattr(parent, attr).weight
    setattr(parent, attr, QuantizedEmbedding(table, choice))
    op = "embedding_byte" if choice.precision == "int8-weight" else "embedding_4bit"
    return weights_technique(choice.precision, layer=choice.name, block_size=choice.block_size, symmetric=True,
                             op_types=(f"quantized_decomposed.{op}",))
