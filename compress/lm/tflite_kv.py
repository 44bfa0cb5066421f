"""Decoder LMs → TFLite with prefill and decode signatures over an external KV cache, and its runner.

litert-torch's generative path (its re-authored ``DecoderOnlyModel`` and its HF exporter) imports TensorFlow's
flatbuffer schema at import time, and TensorFlow is not part of compress's stack; so compress builds the same
signatures itself, converting with ``litert_torch.signature(...).convert()`` (no TensorFlow) and litert-torch's
generative quantization recipes. The transformers model runs its own forward with one attention function swapped in
(as for the ``.pte``, compress.lm.pte_kv): each layer writes this call's keys/values into the cache it is given at
``input_pos`` (``index_copy``), attends with a mask of the positions ``<= input_pos``, and returns the new cache.
Architectures: whatever compress.lm.pte_kv takes (Llama, SmolLM, Qwen2, Gemma, GPT-2 checked on tiny models) minus
what it refuses (soft-capping, sliding windows).

Signatures: ``prefill_{L}`` (``tokens[1, L]`` int32, ``input_pos[L]`` int32, ``kv_0..kv_{2n-1}`` → ``logits[1, L,
vocab]`` and the updated ``kv_*``) for ``L`` in 32 and 128 (those up to half the cache), and ``decode`` (``L = 1``).
The KV cache is external: ``kv_{2i}`` / ``kv_{2i+1}`` are layer ``i``'s keys / values ``[1, max_context, kv_heads,
head_dim]``, fed in and read back by the runner. A prompt is prefilled in one call of the smallest signature that holds
it, padded at the end (causal attention: the padding changes no real position's logits, and its cache rows are
overwritten by the next tokens).

Precisions: ``fp32``; ``int8-weight`` (weight-only int8 per channel) and ``8da4w`` (dynamic int8 activations × int4
weights in blocks of 32), both litert-torch generative recipes applied at conversion. ``int4-weight`` is refused: those
recipes have no weight-only int4 that LiteRT's CPU kernels run.

Example:
    >>> export_tflite_lm(model, Path("run/model.fp32.tflite"), "fp32", max_context=256)
    >>> decoder = TfliteDecoder("run/model.fp32.tflite", threads=2)
    >>> decoder.prefill([1, 2, 3]).shape, decoder.decode(4).shape
    ((3, 49152), (49152,))
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress.catalog import Technique
from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.safety.io import atomic_path
from compress.lm.pte_kv import LMExport, attention_modules, refuse_unsupported
from compress.lm.schemes import weights_technique

PRECISIONS = ("fp32", "int8-weight", "8da4w")
RECIPE_GRIDS = {"int8-weight": {"per_channel": True}, "8da4w": {"block_size": 32}}  # the grids quant_config's recipes write
PREFILL_LENGTHS = (32, 128)
DECODE = "decode"
ATTENTION = "compress_external_kv"


def export_tflite_lm(module, out: Path, precision: str, *, max_context: int = 512) -> LMExport:
    """Write ``out``: ``module`` (a transformers ``*ForCausalLM``, left untouched) as a TFLite file with prefill and
    decode signatures over an external KV cache of ``max_context`` positions; UsageError with the reason where not."""
    if precision == "int4-weight":
        raise UsageError("int4-weight is not available for a language-model .tflite: litert-torch's generative recipes "
                         "have no weight-only int4; use 8da4w (dynamic int8 x int4 blocks of 32) or export to ONNX")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown .tflite precision {precision!r} for a language model; choose one of {', '.join(PRECISIONS)}")
    refuse_unsupported(module)
    lengths = prefill_lengths(max_context)
    step = ExternalKVStep(copy.deepcopy(module).eval().float(), max_context).eval()
    try:
        import litert_torch
    except ImportError:
        raise EnvironmentFailure("litert-torch is not installed (needed for .tflite files): pip install 'compress[tflite]'") from None
    caches = step.empty_cache()
    converter = None
    for length in (*lengths, 1):
        name = DECODE if length == 1 else f"prefill_{length}"
        sample = {"tokens": torch.zeros(1, length, dtype=torch.int32), "input_pos": torch.arange(length, dtype=torch.int32), "kv": caches}
        converter = (converter or litert_torch).signature(name, step, sample_kwargs=sample)
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            tmp.write_bytes(converter.convert(quant_config=quant_config(precision)).model_content())
        except Exception as exc:
            raise EnvironmentFailure(f"litert-torch could not convert the language model: {first_line(exc)}") from None
    techniques = [Technique("export", args=("tflite", "litert", "external-kv-cache"))]
    if precision != "fp32":
        techniques.append(weights_technique(precision, args=("litert-recipe",), **RECIPE_GRIDS[precision]))
    notes = [f"signatures prefill_{'/'.join(map(str, lengths))} and decode; KV cache of {max_context} positions, "
             f"{step.cache_bytes()} bytes fed in and out by the runner (external)"]
    return LMExport(out, precision, [], techniques, notes)


def quant_config(precision: str):
    """litert-torch's generative recipe for ``precision`` (None for fp32)."""
    if precision == "fp32":
        return None
    from litert_torch.generative.quantize import quant_attrs, quant_recipes

    if precision == "int8-weight":
        return quant_recipes.full_weight_only_recipe()
    return quant_recipes.full_dynamic_recipe(weight_dtype=quant_attrs.Dtype.INT4, granularity=quant_attrs.Granularity.BLOCKWISE_32)


def prefill_lengths(max_context: int) -> list[int]:
    """The prefill signatures' fixed lengths: 32 and 128 where they fit half the cache, else half the cache."""
    if max_context < 4:
        raise UsageError(f"max_context must be at least 4 positions, got {max_context}")
    return [n for n in PREFILL_LENGTHS if n <= max_context // 2] or [max_context // 2]


def external_kv_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers attention function: write keys/values into the given cache at ``position_ids``, attend over the
    whole cache under the step's mask, keep the new cache on the module for the step to return."""
    keys, values = module.kv_in
    positions = kwargs["position_ids"][0]
    keys = keys.index_copy(1, positions, key.transpose(1, 2))
    values = values.index_copy(1, positions, value.transpose(1, 2))
    module.kv_out = (keys, values)
    groups = query.shape[1] // keys.shape[2]
    out = F.scaled_dot_product_attention(query, keys.transpose(1, 2).repeat_interleave(groups, dim=1),
                                         values.transpose(1, 2).repeat_interleave(groups, dim=1),
                                         attn_mask=module.kv_mask, scale=scaling)
    return out.transpose(1, 2), None


class ExternalKVStep(nn.Module):
    """``forward(tokens[1, L], input_pos[L], kv) -> {"logits", "kv_0", ...}`` over ``model`` (modified: give it a copy)."""

    def __init__(self, model: nn.Module, max_context: int):
        super().__init__()
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(ATTENTION, external_kv_attention)
        AttentionMaskInterface.register(ATTENTION, lambda *args, **kwargs: None)  # the step builds the mask
        self.model = model
        self.max_context = max_context
        self.attentions = attention_modules(model)
        model.config._attn_implementation = ATTENTION

    def empty_cache(self) -> list[torch.Tensor]:
        config = self.model.config
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return [torch.zeros(1, self.max_context, kv_heads, a.head_dim) for a in self.attentions for _ in range(2)]

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.empty_cache())

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, kv: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        visible = torch.arange(self.max_context)[None, :] <= input_pos[:, None]
        mask = torch.where(visible, 0.0, float("-inf"))[None, None]
        for i, attention in enumerate(self.attentions):
            attention.kv_in, attention.kv_mask = (kv[2 * i], kv[2 * i + 1]), mask
        logits = self.model(input_ids=tokens.long(), position_ids=input_pos[None].long(), use_cache=False).logits
        outputs = {"logits": logits}
        for i, attention in enumerate(self.attentions):
            outputs[f"kv_{2 * i}"], outputs[f"kv_{2 * i + 1}"] = attention.kv_out
        return outputs


class TfliteDecoder:
    """A litert-torch generative ``.tflite`` in ai_edge_litert's Interpreter: the Decoder protocol. ``prefill``
    continues at the current position; ``reset()`` starts a new sequence at 0."""

    def __init__(self, path, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"TFLite model {self.path} not found; check the path")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise EnvironmentFailure("ai-edge-litert is not installed (needed for .tflite files): pip install 'compress[tflite]'") from None
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=int(threads) if threads else None)
            signatures = self.interpreter.get_signature_list()
        except Exception as exc:
            raise UsageError(f"{self.path} is not a loadable TFLite model: {first_line(exc)}") from None
        self.prefills = sorted((int(m.group(1)), name) for name in signatures if (m := re.fullmatch(r"prefill_(\d+)", name)))
        if DECODE not in signatures or not self.prefills:
            raise UsageError(f"{self.path} has no prefill_N and decode signatures (it has {sorted(signatures)}): "
                             "not a language-model .tflite from compress")
        self.runners = {name: self.interpreter.get_signature_runner(name) for name in [DECODE, *(n for _, n in self.prefills)]}
        details = self.runners[DECODE].get_input_details()
        self.cache_shapes = {name: tuple(d["shape"]) for name, d in details.items() if re.fullmatch(r"kv_\d+", name)}
        if not self.cache_shapes or "logits" not in self.runners[DECODE].get_output_details():
            raise UsageError(f"{self.path} has no kv_N inputs or logits output: not a language-model .tflite from compress")
        self.max_context = int(next(iter(self.cache_shapes.values()))[1])
        self.vocab_size = int(self.runners[DECODE].get_output_details()["logits"]["shape"][-1])
        self.reset()

    def reset(self) -> None:
        self.position = 0
        self.cache = {name: np.zeros(shape, np.float32) for name, shape in self.cache_shapes.items()}

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        if not ids:
            raise UsageError("prefill needs at least one token")
        if not all(0 <= i < self.vocab_size for i in ids):
            raise UsageError(f"token ids must lie in 0..{self.vocab_size - 1} (the model's vocabulary)")
        if self.position + len(ids) > self.max_context:
            raise UsageError(f"{self.position + len(ids)} tokens do not fit the KV cache of {self.path.name} "
                             f"({self.max_context} positions); shorten the prompt or export with a larger max_context")
        if len(ids) == 1:
            return self._run(DECODE, ids, 1)[0:1]
        fits = [(length, name) for length, name in self.prefills if length >= len(ids) and self.position + length <= self.max_context]
        if not fits:
            raise UsageError(f"{len(ids)} tokens at position {self.position} fit no prefill signature of {self.path.name} "
                             f"(lengths {[n for n, _ in self.prefills]}, KV cache of {self.max_context} positions); "
                             "shorten the prompt or export with a larger max_context")
        length, name = fits[0]
        return self._run(name, ids + [0] * (length - len(ids)), len(ids))[:len(ids)]

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def _run(self, signature: str, ids: list[int], real: int) -> np.ndarray:
        positions = np.arange(self.position, self.position + len(ids), dtype=np.int32)
        tokens = np.asarray([ids], np.int32)
        try:
            outputs = self.runners[signature](tokens=tokens, input_pos=positions, **self.cache)
        except Exception as exc:
            raise EnvironmentFailure(f"LiteRT could not run {self.path.name} ({signature}): {first_line(exc)}") from None
        self.cache = {name: outputs[name] for name in self.cache}
        self.position += real
        return np.asarray(outputs["logits"][0], np.float32)
