"""What an ONNX decoder graph needs from a transformers causal LM: its family, sizes, norms, activation, rotary
tables and linear layers (torch names, ``[out, in]`` weights), read from the module's own parameters and buffers.

Llama, SmolLM, Mistral-style and Qwen2 (rotary, RMSNorm, gated MLP, grouped KV heads), Gemma (RMSNorm ``1 + w``,
embeddings scaled by ``sqrt(hidden)``) and GPT-2 (learned positions, LayerNorm, fused qkv Conv1D) are read; anything
else is refused with the reason.

Example:
    >>> spec = read_decoder(module)                      # doctest: +SKIP
    >>> spec.family, spec.num_layers, spec.num_kv_heads  # doctest: +SKIP
    ('llama', 2, 2)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from compress.errors import UsageError

LLAMA_LIKE = {"llama", "qwen2", "mistral", "gemma"}


@dataclass
class Linear:
    """One linear layer: torch module name, weight ``[out, in]`` (float32), optional bias."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    kind: str = "linear"          # "linear" | "head"


@dataclass
class Norm:
    weight: np.ndarray            # the effective multiplier (Gemma's 1 + w already added)
    bias: np.ndarray | None       # LayerNorm only
    eps: float


@dataclass
class Block:
    attn_norm: Norm
    mlp_norm: Norm
    qkv: list[Linear]             # [q, k, v] or one fused [qkv] (GPT-2)
    out: Linear
    mlp_in: list[Linear]          # [gate, up] or [fc]
    mlp_out: Linear


@dataclass
class DecoderSpec:
    family: str
    vocab_size: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    activation: str               # "silu" | "gelu_tanh" | "gelu"
    norm_kind: str                # "rms" | "layer"
    embed: np.ndarray             # [vocab, hidden]
    embed_name: str
    embed_scale: float | None
    positions: np.ndarray | None  # learned position table (GPT-2)
    inv_freq: np.ndarray | None   # rotary
    rope_scaling: float
    blocks: list[Block] = field(default_factory=list)
    final_norm: Norm | None = None
    head: Linear | None = None
    tied: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def linears(self) -> list[Linear]:
        out = [lin for b in self.blocks for lin in (*b.qkv, b.out, *b.mlp_in, b.mlp_out)]
        return out + [self.head]


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().float().cpu().numpy().copy()


def _linear(module: torch.nn.Module, name: str, conv1d: bool = False) -> Linear:
    weight = module.weight.detach().float()
    return Linear(name, _np(weight.T if conv1d else weight), _np(getattr(module, "bias", None)))


def _activation(act: torch.nn.Module) -> str:
    """Which formula the module's activation computes, found by evaluating it (class names vary by version)."""
    x = torch.linspace(-6, 6, 97)
    y = act(x)
    candidates = {"silu": torch.nn.functional.silu(x),
                  "gelu_tanh": torch.nn.functional.gelu(x, approximate="tanh"),
                  "gelu": torch.nn.functional.gelu(x)}
    for name, ref in candidates.items():
        if torch.allclose(y, ref, atol=1e-6):
            return name
    raise UsageError(f"activation {type(act).__name__} is not one the ONNX decoder writes (silu, gelu, gelu-tanh)")


def _rms(norm: torch.nn.Module, gemma: bool) -> Norm:
    w = _np(norm.weight)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps")
    return Norm(w + 1.0 if gemma else w, None, float(eps))


def read_decoder(module: torch.nn.Module) -> DecoderSpec:
    """Read ``module`` (a transformers ``*ForCausalLM``) into a :class:`DecoderSpec`; UsageError for other models."""
    config = getattr(module, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == "gpt2":
        return _read_gpt2(module, config)
    if model_type not in LLAMA_LIKE:
        raise UsageError(f"model type {model_type!r} has no ONNX KV-cache export here "
                         f"(supported: {', '.join(sorted(LLAMA_LIKE | {'gpt2'}))})")
    return _read_llama_like(module, config, model_type)


def _read_llama_like(module, config, model_type: str) -> DecoderSpec:
    inner = module.model
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if layer_types != {"full_attention"} or getattr(config, "sliding_window", None) and getattr(
            config, "use_sliding_window", model_type == "mistral"):
        raise UsageError(f"{model_type}: sliding-window attention layers are not exported to ONNX here")
    gemma = model_type == "gemma"
    attn0 = inner.layers[0].self_attn
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    embed = _np(inner.embed_tokens.weight)
    spec = DecoderSpec(
        family=model_type, vocab_size=embed.shape[0], hidden_size=config.hidden_size, num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=head_dim,
        scaling=float(attn0.scaling), activation=_activation(inner.layers[0].mlp.act_fn), norm_kind="rms",
        embed=embed, embed_name="model.embed_tokens", embed_scale=math.sqrt(config.hidden_size) if gemma else None,
        positions=None, inv_freq=_np(inner.rotary_emb.inv_freq),
        rope_scaling=float(getattr(inner.rotary_emb, "attention_scaling", 1.0)))
    for i, layer in enumerate(inner.layers):
        p = f"model.layers.{i}"
        a, m = layer.self_attn, layer.mlp
        spec.blocks.append(Block(
            attn_norm=_rms(layer.input_layernorm, gemma), mlp_norm=_rms(layer.post_attention_layernorm, gemma),
            qkv=[_linear(a.q_proj, f"{p}.self_attn.q_proj"), _linear(a.k_proj, f"{p}.self_attn.k_proj"),
                 _linear(a.v_proj, f"{p}.self_attn.v_proj")],
            out=_linear(a.o_proj, f"{p}.self_attn.o_proj"),
            mlp_in=[_linear(m.gate_proj, f"{p}.mlp.gate_proj"), _linear(m.up_proj, f"{p}.mlp.up_proj")],
            mlp_out=_linear(m.down_proj, f"{p}.mlp.down_proj")))
    spec.final_norm = _rms(inner.norm, gemma)
    spec.head = Linear("lm_head", _np(module.lm_head.weight), _np(module.lm_head.bias), kind="head")
    spec.tied = module.lm_head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
    return spec


def _read_gpt2(module, config) -> DecoderSpec:
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise UsageError("gpt2 with scale_attn_by_inverse_layer_idx is not exported to ONNX here")
    t = module.transformer
    embed = _np(t.wte.weight)
    heads = config.n_head
    head_dim = config.n_embd // heads
    spec = DecoderSpec(
        family="gpt2", vocab_size=embed.shape[0], hidden_size=config.n_embd, num_heads=heads, num_kv_heads=heads,
        head_dim=head_dim, scaling=1.0 / math.sqrt(head_dim) if config.scale_attn_weights else 1.0,
        activation=_activation(t.h[0].mlp.act), norm_kind="layer", embed=embed, embed_name="transformer.wte",
        embed_scale=None, positions=_np(t.wpe.weight), inv_freq=None, rope_scaling=1.0)

    def ln(norm):
        return Norm(_np(norm.weight), _np(norm.bias), float(norm.eps))

    for i, block in enumerate(t.h):
        p = f"transformer.h.{i}"
        spec.blocks.append(Block(
            attn_norm=ln(block.ln_1), mlp_norm=ln(block.ln_2),
            qkv=[_linear(block.attn.c_attn, f"{p}.attn.c_attn", conv1d=True)],
            out=_linear(block.attn.c_proj, f"{p}.attn.c_proj", conv1d=True),
            mlp_in=[_linear(block.mlp.c_fc, f"{p}.mlp.c_fc", conv1d=True)],
            mlp_out=_linear(block.mlp.c_proj, f"{p}.mlp.c_proj", conv1d=True)))
    spec.final_norm = ln(t.ln_f)
    spec.head = Linear("lm_head", _np(module.lm_head.weight), None, kind="head")
    spec.tied = module.lm_head.weight.data_ptr() == t.wte.weight.data_ptr()
    return spec
