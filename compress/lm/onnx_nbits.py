"""Weights as onnxruntime ``MatMulNBits`` blocks (4 or 8 bits): plain quantization, or the exact grid of a GGUF source.

MatMulNBits (com.microsoft) computes ``A @ dequant(B)^T`` with B stored per output row ``n`` in blocks of
``block_size`` along K: ``w = (q - zero_point) * scale``, the zero point uint8 (packed like B) or absent
(``2**(bits-1)``). A K that is not a multiple of ``block_size`` is zero-padded in the last block; the kernel reads
only K columns. A GGUF Q4_1 block ``d*q + m`` is held exactly as ``d*(q - 0)`` plus a block-min term
``sum_b(m_b * sum(A over block b))``: one small float MatMul over the per-block sums of A (1 float per 32 weights).
Float zero points (``-m/d``, allowed by the op's spec) would hold it too, but onnxruntime 1.32 runs them ~20x slower
than uint8 ones (measured: 5.8 ms vs 0.28 ms for 576x1536), so they are not written.

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
    zero_points: np.ndarray | None     # uint8 (or float32, which the op also reads) [N, blocks]; None = 2**(bits-1)
    bits: int
    block_size: int
    k: int
    block_mins: np.ndarray | None = None   # float32 [N, blocks] added to every value of the block (GGUF Q4_1's m)

    def dequantize(self) -> np.ndarray:
        zp = float(2 ** (self.bits - 1)) if self.zero_points is None else self.zero_points[..., None].astype(np.float32)
        w = (self.q.astype(np.float32) - zp) * self.scales[..., None]
        if self.block_mins is not None:
            w = w + self.block_mins[..., None]
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
    MatMulNBits reproduces the GGUF's values. Q4_1 ``d*q + m`` → zero point 0 plus block mins; Q4_0 ``d*(q-8)`` and
    Q8_0 ``d*q`` → the implied zero point."""
    bits = GRID_BITS[quant_type]
    x = _blocks(w.astype(np.float32), block_size)
    d = scales.astype(np.float32)
    safe = np.where(d == 0, 1.0, d)[..., None]
    if quant_type == "Q4_1":
        if w.shape[1] % block_size:
            raise ValueError(f"a Q4_1 grid needs a width that is a multiple of {block_size}, got {w.shape[1]}")
        m = mins.astype(np.float32)
        q = np.where(d[..., None] == 0, 0, np.clip(np.rint((x - m[..., None]) / safe), 0, 15))
        return NBitsWeight(q.astype(np.uint8), d, np.zeros(d.shape, np.uint8), bits, block_size, w.shape[1], m)
    q = np.clip(np.rint(x / safe) + 2 ** (bits - 1), 0, 2 ** bits - 1)
    return NBitsWeight(q.astype(np.uint8), d, None, bits, block_size, w.shape[1])


def emit_matmul_nbits(g: GraphWriter, x: str, weight: NBitsWeight, name: str, accuracy_level: int) -> str:
    """``x @ W^T`` as one MatMulNBits node named ``name`` (plus the block-min term when the weight has one)."""
    b, scales, zp = weight.initializers()
    inputs = [x, g.init(f"{name}.qweight", b), g.init(f"{name}.scales", scales)]
    if zp is not None:
        inputs.append(g.init(f"{name}.qzeros", zp))
    y = g.op("MatMulNBits", *inputs, domain=MS_DOMAIN, name=name, K=weight.k, N=len(weight.q),
             bits=weight.bits, block_size=weight.block_size, accuracy_level=accuracy_level)
    if weight.block_mins is None:
        return y
    blocks = weight.block_mins.shape[1]
    sums = g.op("ReduceSum", g.op("Reshape", x, g.ints(-1, blocks, weight.block_size)), g.ints(-1), keepdims=0)
    mins = g.op("MatMul", sums, g.init(f"{name}.block_mins_t", weight.block_mins.T), name=f"{name}/block_mins")
    return g.op("Add", y, g.op("Reshape", mins, g.op("Shape", y)))
