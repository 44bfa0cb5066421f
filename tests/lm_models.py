"""Tiny random-weight decoder LMs of every family, as a user would hold them: Hugging Face style directories
(config.json + model.safetensors + tokenizer.json trained offline) and a GGUF file written as llama.cpp writes one.

Example:
    >>> folder = hf_dir(tmp_path / "llama", "llama")
    >>> gguf = gguf_file(tmp_path / "tiny.gguf", tiny_module("llama"))
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

VOCAB = 320
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
FAMILIES = ("llama", "qwen2", "gemma", "gpt2")


@functools.cache
def tiny_tokenizer():
    """A byte-level BPE tokenizer of VOCAB tokens trained on the calibration text (deterministic, offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from compress.lm.text import calibration_text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([calibration_text()[:40_000]], trainer=trainer)
    return tokenizer


def tiny_config(family: str):
    """A 2-layer config of ``family`` with GQA where the family has it."""
    import transformers

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        return transformers.LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    if family == "qwen2":
        return transformers.Qwen2Config(**common)
    if family == "gemma":
        return transformers.GemmaConfig(**common, head_dim=16)
    return transformers.GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                                   bos_token_id=0, eos_token_id=0)


def tiny_module(family: str, seed: int = 0):
    """A random-weight ``*ForCausalLM`` of ``family`` (seeded, float32, eval)."""
    import torch
    import transformers

    classes = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM", "gpt2": "GPT2LMHeadModel"}
    torch.manual_seed(seed)
    module = getattr(transformers, classes[family])(tiny_config(family)).float().eval()
    with torch.no_grad():  # wider than the default init, so that logits differ clearly between tokens
        for parameter in module.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.08)
    return module


def hf_dir(folder: Path, family: str, seed: int = 0) -> Path:
    """``folder`` holding config.json, model.safetensors, tokenizer.json and tokenizer_config.json (chat template)."""
    module = tiny_module(family, seed)
    folder.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(folder)
    tiny_tokenizer().save(str(folder / "tokenizer.json"))
    eos = "<|endoftext|>" if family == "gpt2" else "<|im_end|>"
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": eos,
                                                              "bos_token": "<|im_start|>"}))
    return folder


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf row permutation of q/k projections (what gguf_reader undoes)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _merges(tokenizer) -> list[str]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
LAYER_NAMES = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
               "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
               "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
               "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
               "self_attn.v_proj.bias": "attn_v.bias",
               "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
               "mlp.down_proj.weight": "ffn_down.weight"}


def gguf_file(path: Path, module, tokenizer=None) -> Path:
    """A GGUF of a llama or qwen2 ``module`` as llama.cpp writes it: Q8_0 embedding, Q4_1 projections, F32 norms and
    biases, llama's q/k rows permuted, the BPE tokenizer and ChatML template in the metadata (tied head: no
    output.weight)."""
    import gguf

    tokenizer = tokenizer or tiny_tokenizer()
    config = module.config
    arch = config.model_type
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), config.vocab_size)]
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL else 1 for t in tokens])
    writer.add_token_merges(_merges(tokenizer))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHATML)
    for name, tensor in module.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        array = tensor.float().numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            array = _permute(array, config.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            array = _permute(array, config.num_key_value_heads)
        layer = name.split(".")
        target = GGUF_NAMES.get(name) or f"blk.{layer[2]}.{LAYER_NAMES['.'.join(layer[3:])]}"
        kind = (gguf.GGMLQuantizationType.F32 if array.ndim == 1 else gguf.GGMLQuantizationType.Q8_0
                if name == "model.embed_tokens.weight" else gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(target, gguf.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def dequantized_like_gguf(module):
    """A copy of ``module`` whose weights went through gguf_file's quantization (what loading that GGUF must give)."""
    import copy

    import gguf
    import torch

    twin = copy.deepcopy(module)
    with torch.no_grad():
        for name, parameter in twin.named_parameters():
            if parameter.dim() == 2:
                kind = gguf.GGMLQuantizationType.Q8_0 if name == "model.embed_tokens.weight" else gguf.GGMLQuantizationType.Q4_1
                parameter.copy_(torch.from_numpy(gguf.dequantize(gguf.quantize(parameter.numpy(), kind), kind)))
    return twin
