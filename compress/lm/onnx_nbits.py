"""Weights as onnxruntime ``MatMulNBits`` blocks (4 or 8 bits): plain quantization, or the exact grid of a GGUF source.

MatMulNBits (com.microsoft) computes ``A @ dequant(B)^T`` with B stored per output row ``n`` in blocks of
``block_size`` along K: ``w = (q - zero_point) * scale``. The zero point is uint8 (packed like B), float (the scales'
type: what holds a GGUF Q4_1 block ``d*q + m`` exactly, as ``zero_point = -m/d``), or absent (``2**(bits-1)``).
A K that is not a multiple of ``block_size`` is zero-padded in the last block; the kernel reads only K columns.

Example:
    >>> w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    >>> nb = quantize_blocks(w, bits=4, block_size=32, symmetric=False)
    >>> float(np.abs(nb.dequantize() - w).max()) < 0.5
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.lm.onnx_graph import MS_DOMAIN, GraphWriter

GRID_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}  # GGUF block types whose values MatMulNBits can hold exactly


@dataclass
class NBitsWeight:
    """One ``[N, K]`` weight as MatMulNBits holds it: ``q`` unpacked ``[N, blocks, block_size]``."""

    q: np.ndarray
    scales: np.ndarray                 # float32 [N, blocks]
    zero_points: np.ndarray | None     # uint8 or float32 [N, blocks]; None = 2**(bits-1)
    bits: int
    block_size: int
    k: int

    def dequantize(self) -> np.ndarray:
        zp = float(2 ** (self.bits - 1)) if self.zero_points is None else self.zero_points[..., None]
        w = (self.q.astype(np.float32) - zp) * self.scales[..., None]
        return w.reshape(len(w), -1)[:, : self.k]

    def initializers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, scales, zero_points) in the layouts the contrib op reads."""
        n, blocks, _ = self.q.shape
        if self.bits == 4:
            b = (self.q[..., 0::2] | (self.q[..., 1::2] << 4)).astype(np.uint8)
        else:
            b = self.q.astype(np.uint8)
        zp = self.zero_points
        if zp is not None and zp.dtype == np.uint8 and self.bits == 4:
            padded = np.zeros((n, blocks + blocks % 2), np.uint8)
            padded[:, :blocks] = zp
            zp = padded[:, 0::2] | (padded[:, 1::2] << 4)
        return b, self.scales.reshape(-1).astype(np.float32), None if zp is None else zp.reshape(-1)


def _blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    n, k = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), np.float32)
    padded[:, :k] = w
    return padded.reshape(n, blocks, block_size)


def quantize_blocks(w: np.ndarray, bits: int, block_size: int, symmetric: bool) -> NBitsWeight:
    """Round-to-nearest blocks: symmetric maps the largest magnitude to -2**(bits-1) (zero point implied), asymmetric
    spans [min(w, 0), max(w, 0)] with a uint8 zero point (onnxruntime's own quantizer does the same)."""
    x = _blocks(w.astype(np.float32), block_size)
    top = 2 ** bits - 1
    if symmetric:
        idx = np.abs(x).argmax(axis=-1)[..., None]
        scales = np.take_along_axis(x, idx, axis=-1)[..., 0] / -(2 ** (bits - 1))
        scales[scales == 0] = 1.0
        q = np.clip(np.rint(x / scales[..., None]) + 2 ** (bits - 1), 0, top)
        return NBitsWeight(q.astype(np.uint8), scales.astype(np.float32), None, bits, block_size, w.shape[1])
    lo = np.minimum(x.min(axis=-1), 0.0)
    hi = np.maximum(x.max(axis=-1), 0.0)
    scales = (hi - lo) / top
    scales[scales == 0] = 1.0
    zp = np.clip(np.rint(-lo / scales), 0, top)
    q = np.clip(np.rint(x / scales[..., None]) + zp[..., None], 0, top)
    return NBitsWeight(q.astype(np.uint8), scales.astype(np.float32), zp.astype(np.uint8), bits, block_size, w.shape[1])


def from_grid(w: np.ndarray, quant_type: str, block_size: int, scales: np.ndarray, mins: np.ndarray | None
              ) -> NBitsWeight:
    """The source's own grid: integers recovered from the dequantized ``w`` and the block scales (and mins), so that
    MatMulNBits reproduces the GGUF's values. Q4_1 ``d*q + m`` → float zero point ``-m/d``; Q4_0 ``d*(q-8)`` and
    Q8_0 ``d*q`` → the implied zero point."""
    bits = GRID_BITS[quant_type]
    x = _blocks(w.astype(np.float32), block_size)
    d = scales.astype(np.float32).copy()
    if quant_type == "Q4_1":
        m = mins.astype(np.float32)
        flat = d == 0                                   # every value of the block is m: q=1, zero point 0, scale m
        safe = np.where(flat, 1.0, d)
        q = np.clip(np.rint((x - m[..., None]) / safe[..., None]), 0, 15)
        q[flat] = 1
        zp = np.where(flat, 0.0, -m / safe).astype(np.float32)
        d = np.where(flat, m, d)
        return NBitsWeight(q.astype(np.uint8), d, zp, bits, block_size, w.shape[1])
    half = 2 ** (bits - 1)
    safe = np.where(d == 0, 1.0, d)
    q = np.clip(np.rint(x / safe[..., None]) + half, 0, 2 ** bits - 1)
    return NBitsWeight(q.astype(np.uint8), d, None, bits, block_size, w.shape[1])


def emit_matmul_nbits(g: GraphWriter, x: str, weight: NBitsWeight, name: str, accuracy_level: int) -> str:
    """``x @ W^T`` as one MatMulNBits node named ``name``."""
    b, scales, zp = weight.initializers()
    inputs = [x, g.init(f"{name}.qweight", b), g.init(f"{name}.scales", scales)]
    if zp is not None:
        inputs.append(g.init(f"{name}.qzeros", zp))
    return g.op("MatMulNBits", *inputs, domain=MS_DOMAIN, name=name, K=weight.k, N=len(weight.q),
                bits=weight.bits, block_size=weight.block_size, accuracy_level=accuracy_level)
