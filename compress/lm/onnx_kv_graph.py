"""The decoder graph with past/present key-values, in the layout onnxruntime-genai and optimum use.

Inputs: ``input_ids`` [B, S], ``attention_mask`` [B, P+S], ``position_ids`` [B, S],
``past_key_values.{i}.key/.value`` [B, kv_heads, P, head_dim]. Outputs: ``logits`` [B, S, vocab],
``present.{i}.key/.value`` [B, kv_heads, P+S, head_dim]. A whole prompt is one run (S tokens at once); a decode step
is S = 1 with the previous run's presents as pasts. Grouped KV heads are attended without copying them: queries are
viewed as [B, kv_heads, groups, S, head_dim] against keys [B, kv_heads, 1, ...].

Example:
    >>> model = build_decoder_graph(read_decoder(module), 512, emit_linear, {})   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import torch

from compress.lm.onnx_families import DecoderSpec, Linear, Norm
from compress.lm.onnx_graph import MS_DOMAIN, GraphWriter

LinearEmitter = Callable[[GraphWriter, str, Linear], str]   # (graph, input, layer) -> output name


def emit_float_linear(g: GraphWriter, x: str, lin: Linear) -> str:
    """``x @ W^T (+ b)`` with the weight stored transposed ``[in, out]`` as MatMul reads it."""
    y = g.op("MatMul", x, g.init(f"{lin.name}.weight_t", lin.weight.T), name=f"{lin.name}/MatMul")
    return _bias(g, y, lin)


def _bias(g: GraphWriter, y: str, lin: Linear) -> str:
    return y if lin.bias is None else g.op("Add", y, g.init(f"{lin.name}.bias", lin.bias), name=f"{lin.name}/Add")


def _norm(g: GraphWriter, x: str, norm: Norm, kind: str, name: str) -> str:
    w = g.init(f"{name}.weight", norm.weight)
    if kind == "layer":
        return g.op("LayerNormalization", x, w, g.init(f"{name}.bias", norm.bias), axis=-1, epsilon=norm.eps,
                    name=name)
    var = g.op("ReduceMean", g.op("Mul", x, x), g.ints(-1), keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.scalar(norm.eps))))
    return g.op("Mul", g.op("Mul", x, inv), w, name=name)


def _activation(g: GraphWriter, x: str, kind: str) -> str:
    if kind == "silu":
        return g.op("Mul", x, g.op("Sigmoid", x))
    return g.op("Gelu", x, approximate="tanh" if kind == "gelu_tanh" else "none")


def _rotary_tables(spec: DecoderSpec, max_context: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [max_context, head_dim], computed as transformers' rotary embedding does (float32)."""
    inv = torch.from_numpy(spec.inv_freq).float()[:, None]
    pos = torch.arange(max_context, dtype=torch.float32)[None, :]
    freqs = (inv @ pos).T
    emb = torch.cat((freqs, freqs), dim=-1)
    return ((emb.cos() * spec.rope_scaling).numpy(), (emb.sin() * spec.rope_scaling).numpy())


def _rotate(g: GraphWriter, x: str, cos: str, sin: str, half: int) -> str:
    x1 = g.op("Slice", x, g.ints(0), g.ints(half), g.ints(-1))
    x2 = g.op("Slice", x, g.ints(half), g.ints(2 * half), g.ints(-1))
    rotated = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
    return g.op("Add", g.op("Mul", x, cos), g.op("Mul", rotated, sin))


def _heads(g: GraphWriter, x: str, heads: int, head_dim: int) -> str:
    """[B, S, heads*head_dim] → [B, heads, S, head_dim]."""
    return g.op("Transpose", g.op("Reshape", x, g.ints(0, 0, heads, head_dim)), perm=[0, 2, 1, 3])


def _attention_bias(g: GraphWriter, input_ids: str, mask: str) -> str:
    """Additive bias [B, 1, 1, S, P+S]: 0 where a query may see a key (causal and not padding), float min elsewhere."""
    total = g.op("Gather", g.op("Shape", mask), g.ints(1), axis=0)
    total = g.op("Squeeze", total)
    seq = g.op("Squeeze", g.op("Gather", g.op("Shape", input_ids), g.ints(1), axis=0))
    past = g.op("Sub", total, seq)
    one = g.op("Squeeze", g.ints(1))
    zero = g.op("Squeeze", g.ints(0))
    keys = g.op("Unsqueeze", g.op("Range", zero, total, one), g.ints(0))          # [1, T]
    queries = g.op("Unsqueeze", g.op("Range", past, total, one), g.ints(1))       # [S, 1]
    causal = g.op("LessOrEqual", keys, queries)                                   # [S, T]
    visible = g.op("Unsqueeze", g.op("Equal", mask, g.ints(1)), g.ints(1, 2, 3))  # [B, 1, 1, 1, T]
    allowed = g.op("And", causal, visible)
    return g.op("Where", allowed, g.scalar(0.0), g.scalar(float(np.finfo(np.float32).min)), name="attention_bias")


def _gqa_lengths(g: GraphWriter, mask: str) -> tuple[str, str]:
    """GroupQueryAttention's ``seqlens_k`` (int32 [B], tokens seen minus one) and ``total_sequence_length``."""
    seen = g.op("ReduceSum", mask, g.ints(1), keepdims=0)
    seqlens = g.op("Cast", g.op("Sub", seen, g.ints(1)), to=onnx.TensorProto.INT32)
    total = g.op("Squeeze", g.op("Gather", g.op("Shape", mask), g.ints(1), axis=0))
    return seqlens, g.op("Cast", total, to=onnx.TensorProto.INT32)


def _declare_presents(g: GraphWriter, i: int, kvh: int, hd: int) -> None:
    for kv in ("key", "value"):
        g.output(f"present.{i}.{kv}", f"present.{i}.{kv}", "float", ["batch_size", kvh, "total_sequence_length", hd])


def _mlp(g: GraphWriter, h: str, block, spec: DecoderSpec, i: int, emit_linear: LinearEmitter) -> str:
    x = _norm(g, h, block.mlp_norm, spec.norm_kind, f"layers.{i}.mlp_norm")
    if len(block.mlp_in) == 2:
        gate, up = (emit_linear(g, x, lin) for lin in block.mlp_in)
        act = g.op("Mul", _activation(g, gate, spec.activation), up)
    else:
        act = _activation(g, emit_linear(g, x, block.mlp_in[0]), spec.activation)
    return g.op("Add", h, emit_linear(g, act, block.mlp_out))


def build_decoder_graph(spec: DecoderSpec, max_context: int, emit_linear: LinearEmitter,
                        metadata: dict[str, str], attention: str = "matmul",
                        emit_embedding: Callable[[GraphWriter, str], str] | None = None) -> onnx.ModelProto:
    """The whole decoder as one ONNX model; ``emit_linear`` writes each linear layer (float or MatMulNBits),
    ``emit_embedding`` the token lookup (default: a float Gather; compress.lm.onnx_embedding for a quantized table).
    ``attention``: "matmul" (standard ops) or "gqa" (onnxruntime's fused GroupQueryAttention: rotary, cache append,
    causal softmax in one node; needs unpadded rows, as OnnxDecoder feeds)."""
    g = GraphWriter()
    kvh, hd, nh = spec.num_kv_heads, spec.head_dim, spec.num_heads
    ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"])
    mask = g.input("attention_mask", "int64", ["batch_size", "total_sequence_length"])
    pos = g.input("position_ids", "int64", ["batch_size", "sequence_length"])
    pasts = []
    for i in range(spec.num_layers):
        pasts.append([g.input(f"past_key_values.{i}.{kv}", "float", ["batch_size", kvh, "past_sequence_length", hd])
                      for kv in ("key", "value")])
    if emit_embedding is None:
        h = g.op("Gather", g.init(f"{spec.embed_name}.weight", spec.embed), ids, axis=0, name="embed_tokens")
    else:
        h = emit_embedding(g, ids)
    if spec.embed_scale is not None:
        h = g.op("Mul", h, g.scalar(spec.embed_scale))
    if spec.positions is not None:
        h = g.op("Add", h, g.op("Gather", g.init("position_embeddings", spec.positions[:max_context]), pos, axis=0))
    cos = sin = None
    if spec.inv_freq is not None:
        cos_t, sin_t = _rotary_tables(spec, max_context)
        if attention != "gqa":
            cos = g.op("Unsqueeze", g.op("Gather", g.init("cos_cache", cos_t), pos, axis=0), g.ints(1))
            sin = g.op("Unsqueeze", g.op("Gather", g.init("sin_cache", sin_t), pos, axis=0), g.ints(1))
    groups = nh // kvh
    if attention == "gqa":
        seqlens, total = _gqa_lengths(g, mask)
        if spec.inv_freq is not None:
            cos_half, sin_half = (g.init(n, t[:, : hd // 2]) for n, t in zip(("cos_half", "sin_half"), (cos_t, sin_t)))
    else:
        bias = _attention_bias(g, ids, mask)
    for i, block in enumerate(spec.blocks):
        x = _norm(g, h, block.attn_norm, spec.norm_kind, f"layers.{i}.attn_norm")
        if len(block.qkv) == 1:
            q, k, v = g.op("Split", emit_linear(g, x, block.qkv[0]), axis=-1, outputs=3, num_outputs=3)
        else:
            q, k, v = (emit_linear(g, x, lin) for lin in block.qkv)
        if attention == "gqa":
            rotary = spec.inv_freq is not None
            ctx = g.op("GroupQueryAttention", q, k, v, pasts[i][0], pasts[i][1], seqlens, total,
                       cos_half if rotary else "", sin_half if rotary else "", domain=MS_DOMAIN,
                       outputs=[f"layers.{i}.attention", f"present.{i}.key", f"present.{i}.value"],
                       num_heads=nh, kv_num_heads=kvh, scale=spec.scaling, do_rotary=int(rotary),
                       rotary_interleaved=0)[0]
            _declare_presents(g, i, kvh, hd)
            h = g.op("Add", h, emit_linear(g, ctx, block.out))
            h = _mlp(g, h, block, spec, i, emit_linear)
            continue
        q, k, v = _heads(g, q, nh, hd), _heads(g, k, kvh, hd), _heads(g, v, kvh, hd)
        if cos is not None:
            q, k = _rotate(g, q, cos, sin, hd // 2), _rotate(g, k, cos, sin, hd // 2)
        key = g.op("Concat", pasts[i][0], k, axis=2, outputs=[f"present.{i}.key"])        # no copy to an output
        value = g.op("Concat", pasts[i][1], v, axis=2, outputs=[f"present.{i}.value"])
        _declare_presents(g, i, kvh, hd)
        q5 = g.op("Reshape", q, g.ints(0, kvh, groups, -1, hd))
        k5 = g.op("Unsqueeze", g.op("Transpose", key, perm=[0, 1, 3, 2]), g.ints(2))
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q5, k5), g.scalar(spec.scaling)), bias)
        probs = g.op("Softmax", scores, axis=-1)
        ctx = g.op("MatMul", probs, g.op("Unsqueeze", value, g.ints(2)))            # [B, kvh, groups, S, hd]
        ctx = g.op("Reshape", g.op("Transpose", g.op("Reshape", ctx, g.ints(0, nh, -1, hd)), perm=[0, 2, 1, 3]),
                   g.ints(0, 0, nh * hd))
        h = g.op("Add", h, emit_linear(g, ctx, block.out))
        h = _mlp(g, h, block, spec, i, emit_linear)
    h = _norm(g, h, spec.final_norm, spec.norm_kind, "final_norm")
    g.output(emit_linear(g, h, spec.head), "logits", "float", ["batch_size", "sequence_length", spec.vocab_size])
    g.outputs.insert(0, g.outputs.pop())          # logits first, then present.0.key, present.0.value, ...
    return g.model(metadata)
