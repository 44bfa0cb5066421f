"""A token-embedding table as onnxruntime's ``GatherBlockQuantized`` (com.microsoft): int8 or int4 rows in blocks
along the hidden width, one float scale per block (and a uint8 zero point per block when asymmetric), gathered
and dequantized in one node. Layout (checked against onnxruntime 1.32): ``data`` uint8 ``[vocab, hidden]`` (int8)
or ``[vocab, hidden/2]`` (int4, two values per byte, low nibble first), ``scales`` float32 ``[vocab, blocks]``,
``zero_points`` uint8 packed like ``data`` (absent: ``2**(bits-1)``), ``gather_axis=0``, ``quantize_axis=1``.

Example:
    >>> table = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    >>> weight = embedding_blocks(table, "int4-weight", 32, symmetric=False)
    >>> float(np.abs(weight.dequantize() - table).max()) < 0.3
    True
"""
from __future__ import annotations

import numpy as np

from compress.errors import UsageError
from compress.lm.onnx_graph import MS_DOMAIN, GraphWriter
from compress.lm.onnx_nbits import NBitsWeight, quantize_blocks

BITS = {"int8-weight": 8, "int4-weight": 4}


def embedding_block(width: int, block_size: int) -> int | None:
    """The block GatherBlockQuantized reads for a hidden ``width``: ``block_size`` or the largest power of two
    below it (down to 16) that divides the width; None when none does.

    Example:
        >>> embedding_block(576, 128), embedding_block(48, 32), embedding_block(40, 32)
        (64, 16, None)
    """
    block = block_size
    while block >= 16 and width % block:
        block //= 2
    return block if block >= 16 else None


def embedding_blocks(table: np.ndarray, precision: str, block_size: int, symmetric: bool) -> NBitsWeight:
    """``table`` [vocab, hidden] rounded to nearest on the ``precision`` grid in blocks of ``block_size``."""
    if precision not in BITS:
        raise UsageError(f"embedding precision {precision!r}: use one of fp32, {', '.join(BITS)}")
    if table.shape[1] % block_size:
        raise UsageError(f"embedding width {table.shape[1]} is not a multiple of block {block_size}")
    return quantize_blocks(table, BITS[precision], block_size, symmetric)


def _packed(values: np.ndarray, bits: int) -> np.ndarray:
    """uint8 ``[rows, n]`` values packed along the last axis as GatherBlockQuantized reads them."""
    if bits == 8:
        return values.astype(np.uint8)
    if values.shape[1] % 2:
        values = np.concatenate([values, np.zeros((len(values), 1), values.dtype)], axis=1)
    return (values[:, 0::2] | (values[:, 1::2] << 4)).astype(np.uint8)


def emit_gather_block_quantized(g: GraphWriter, ids: str, weight: NBitsWeight, name: str) -> str:
    """``table[ids]`` as one GatherBlockQuantized node named ``name`` (output float32 [batch, seq, hidden])."""
    vocab = len(weight.q)
    inputs = [g.init(f"{name}.qweight", _packed(weight.q.reshape(vocab, -1), weight.bits)), ids,
              g.init(f"{name}.scales", weight.scales.astype(np.float32))]
    if weight.zero_points is not None:
        inputs.append(g.init(f"{name}.qzeros", _packed(weight.zero_points, weight.bits)))
    return g.op("GatherBlockQuantized", *inputs, domain=MS_DOMAIN, name=name, bits=weight.bits,
                block_size=weight.block_size, gather_axis=0, quantize_axis=1)
