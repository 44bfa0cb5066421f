"""Decoder LMs → one ExecuTorch ``.pte`` with a static KV cache inside the program, XNNPACK-delegated; and its runner.

How the program is made: a copy of the transformers ``*ForCausalLM`` runs its own forward with one attention function
swapped in (transformers' AttentionInterface, as optimum-executorch does): each attention layer owns two buffers
``[1, max_context, kv_heads, head_dim]`` that ``llama::update_cache`` writes at ``input_pos`` and ``llama::custom_sdpa``
reads causally up to ``input_pos + seq_len`` (the custom ops the executorch wheel ships; plain SDPA on GQA failed to
lower on a view after it). The method is ``forward(input_ids[1, T], input_pos[1]) -> logits[1, T, vocab]`` with a
dynamic ``T`` (1..max_context): a prompt is prefilled in ONE call, decode is the same method with ``T = 1``. Constant
methods ``get_max_seq_len`` / ``get_vocab_size`` (the names ExecuTorch's LLM runner reads) tell the runner its shapes.
Positions beyond ``input_pos + T`` are never read, so the buffers' uninitialised start does not matter and a reset is
``input_pos = 0``.

Precisions (torchao ``quantize_`` on the linear layers before ``torch.export``; embeddings stay fp32 unless a plan
asks for an int8/int4 table, compress.lm.pte_embedding):
- ``fp32``: the model as it is; every linear, norm and matmul runs in XNNPACK.
- ``8da4w``: int8 dynamic activations (per token) × int4 *symmetric* weights grouped by ``block_size``
  (``Int8DynamicActivationIntxWeightConfig``): XNNPACK's int4 kernels. Asymmetric int4 weights are refused: XNNPACK
  lowers them without a word and computes garbage.
- ``int8-weight`` / ``int4-weight`` are refused (``UNAVAILABLE``): XNNPACK takes torchao's weight-only linears
  (``dequantize_affine`` + ``mm``) into its delegate, stores the weights as float (the file is fp32-sized) and computes
  wrong logits (measured on a tiny Llama: top-1 agreement with torch 0.03 and 0.0). ONNX builds them.
A layer whose input width does not divide ``block_size`` gets the largest halved block that divides it (down to 16),
else stays fp32, and its ``LayerChoice.reason`` says which.

Example:
    >>> result = export_pte_lm(model, Path("run/model.8da4w.pte"), "8da4w", max_context=256)
    >>> decoder = PteDecoder(result.path, threads=2)
    >>> logits = decoder.prefill([1, 2, 3])          # (3, vocab) float32, one runtime call
    >>> nxt = decoder.decode(int(logits[-1].argmax()))  # (vocab,)
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from compress.catalog import Technique
from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.lm.schemes import LayerChoice, LMExport, weights_technique
from compress.safety.io import atomic_path

PRECISIONS = ("fp32", "8da4w")
WEIGHT_ONLY = ("XNNPACK takes torchao's weight-only linears into its delegate but keeps float-sized weights and computes "
               "wrong logits (measured: top-1 agreement with torch 0.03); use 8da4w for .pte, or export to ONNX")
UNAVAILABLE = {"int8-weight": WEIGHT_ONLY, "int4-weight": WEIGHT_ONLY}
ATTENTION = "compress_static_kv"
METHOD = "forward"
MAX_SEQ_LEN = "get_max_seq_len"
VOCAB_SIZE = "get_vocab_size"
MIN_BLOCK = 16


def export_pte_lm(module, out: Path, precision: str, *, max_context: int = 512, block_size: int = 32,
                  layers: list | None = None, progress: Callable[[str], None] = lambda message: None) -> LMExport:
    """Write ``out``: ``module`` (a transformers ``*ForCausalLM``, left untouched) as a ``.pte`` with a static KV cache
    of ``max_context`` positions. ``layers`` (``LayerChoice`` list) overrides the per-layer precision; ``progress``
    hears each long step (quantizing, capturing, lowering, serializing)."""
    check_precision(precision)
    if max_context < 2:
        raise UsageError(f"max_context must be at least 2 positions, got {max_context}")
    refuse_unsupported(module)
    model = copy.deepcopy(module).eval().float()
    choices = list(layers) if layers is not None else plan_linears(model, precision, block_size)
    notes: list[str] = []
    if choices:
        progress(f"quantizing {sum(c.precision != 'fp32' for c in choices)} linear layers ({precision})")
    tables = [c for c in choices if c.kind == "embedding" and c.precision != "fp32"]
    techniques = [Technique("export", args=("executorch", "xnnpack", "static-kv-cache")),
                  *quantize_linears(model, [c for c in choices if c.kind != "embedding"])]
    if tables:
        from compress.lm.pte_embedding import quantize_embedding_

        techniques += [quantize_embedding_(model, c) for c in tables]
    program = StaticKVProgram(model, max_context)
    lowered = lower_lm(program, max_context, model.config.vocab_size, progress)
    notes.append(lowered.summary())
    notes.append(f"static KV cache: {max_context} positions, fp32, {program.cache_bytes()} bytes in the program's state; "
                 "a prompt is prefilled in one call (dynamic sequence length)")
    if getattr(module.config, "tie_word_embeddings", False):
        table = f" ({tables[0].precision} table, {choices_precision(choices, 'head')} head)" if tables else ""
        notes.append(f"tied embeddings: the .pte stores the embedding table and the output head separately{table}")
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(lowered.content)
    used = {c.precision for c in choices if c.kind != "embedding"}
    final = precision if used <= {precision} else "mixed"
    return LMExport(out, final, choices, techniques, notes)


def choices_precision(choices: list, kind: str) -> str:
    """The precision of the first choice of ``kind`` ("fp32" when there is none)."""
    return next((c.precision for c in choices if c.kind == kind), "fp32")


def check_precision(precision: str) -> None:
    """UsageError naming why for a precision the LM ``.pte`` does not build."""
    if precision in UNAVAILABLE:
        raise UsageError(f"{precision} is not available for a language-model .pte: {UNAVAILABLE[precision]}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown .pte precision {precision!r} for a language model; choose one of {', '.join(PRECISIONS)}")


def refuse_unsupported(module) -> None:
    """UsageError, in one line with the reason, for models the KV-cache attention here cannot represent."""
    config = getattr(module, "config", None)
    if config is None or not hasattr(module, "get_output_embeddings"):
        raise UsageError(f"{type(module).__name__} is not a transformers *ForCausalLM model: a .pte LM export needs one")
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "final_logit_softcapping", None):
        raise UsageError(f"{config.model_type}: attention logit soft-capping is not in compress's KV-cache attention "
                         "(.pte and .tflite); export it to ONNX instead")
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    if sliding and getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        raise UsageError(f"{config.model_type}: sliding-window attention layers need a ring-buffer cache that compress's "
                         "KV-cache attention (.pte and .tflite) does not build; export it to ONNX instead")
    if not attention_modules(module):
        raise UsageError(f"{config.model_type}: no attention layers with a layer_idx found: not a decoder compress's "
                         "KV-cache export (.pte and .tflite) knows")


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules transformers numbers (``layer_idx``), in layer order."""
    found = [m for m in model.modules() if type(m).__name__.endswith("Attention") and isinstance(getattr(m, "layer_idx", None), int)]
    return sorted(found, key=lambda m: m.layer_idx)


# --- per-layer precision ------------------------------------------------------------------------------------------


def plan_linears(model: nn.Module, precision: str, block_size: int) -> list[LayerChoice]:
    """One choice per linear layer (the head included); a block that does not divide a width is halved, said why."""
    if precision == "fp32":
        return []
    choices = []
    for name, layer in model.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        kind = "head" if layer is model.get_output_embeddings() else "linear"
        width = layer.in_features
        block = block_size
        while width % block and block > MIN_BLOCK:
            block //= 2
        if width % block:
            choices.append(LayerChoice(name, kind, "fp32", None, None, f"kept float: width {width} is not a multiple of {MIN_BLOCK}"))
            continue
        reason = f"block {block}" if block == block_size else f"width {width} is not a multiple of {block_size}: block {block}"
        choices.append(LayerChoice(name, kind, precision, block, True, reason))
    return choices


def quantize_linears(model: nn.Module, choices: list) -> list[Technique]:
    """Apply ``choices`` with torchao in place; the techniques applied (one per precision/block/symmetry)."""
    from torchao.quantization import quantize_

    modules = dict(model.named_modules())
    techniques: dict[Technique, None] = {}
    for choice in choices:
        if choice.precision == "fp32":
            continue
        layer = modules.get(choice.name)
        if not isinstance(layer, nn.Linear):
            raise UsageError(f"layer {choice.name!r} is not a linear layer of this model: the .pte export quantizes linears only")
        config, technique = torchao_config(choice)
        if layer.in_features % (choice.block_size or layer.in_features):
            raise UsageError(f"{choice.name}: block {choice.block_size} does not divide its width {layer.in_features}; "
                             "choose a block that does (ExecuTorch would skip the layer silently)")
        quantize_(model, config, filter_fn=lambda m, fqn, target=choice.name: fqn == target)
        techniques[technique] = None
    return list(techniques)


def torchao_config(choice) -> tuple[object, Technique]:
    """The torchao config for one layer choice, and its technique record."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    block = choice.block_size
    if choice.precision == "8da4w":
        if choice.symmetric is False:
            raise UsageError(f"{choice.name}: 8da4w with asymmetric int4 weights lowers to XNNPACK but computes garbage "
                             "there; use symmetric weights (the default) or int4-weight")
        return (Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(block),
                                                      weight_mapping_type=MappingType.SYMMETRIC),
                weights_technique("8da4w", block_size=block, symmetric=True, args=("xnnpack",)))
    if choice.precision in UNAVAILABLE:
        raise UsageError(f"{choice.name}: {choice.precision} is not available in a .pte: {UNAVAILABLE[choice.precision]}")
    raise UsageError(f"{choice.name}: precision {choice.precision!r} is not one the .pte export builds ({', '.join(PRECISIONS)})")


# --- the program ---------------------------------------------------------------------------------------------------


def static_kv_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers attention function: write this call's keys/values into the layer's cache at the first position,
    attend causally over the cache up to the last one (``[B, H, T, D]`` in, ``[B, T, H, D]`` out as transformers expects)."""
    start = kwargs["position_ids"][0][0].item()
    torch._check_is_size(start)
    torch.ops.llama.update_cache(key.transpose(1, 2), module.kv_keys, start)
    torch.ops.llama.update_cache(value.transpose(1, 2), module.kv_values, start)
    return torch.ops.llama.custom_sdpa(query.transpose(1, 2), module.kv_keys, module.kv_values, start, None, 0, True, scaling), None


def _register_attention() -> None:
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::update_cache / custom_sdpa)
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, static_kv_attention)
    AttentionMaskInterface.register(ATTENTION, lambda *args, **kwargs: None)  # custom_sdpa masks causally itself


class StaticKVProgram(nn.Module):
    """``forward(input_ids[1, T], input_pos[1]) -> logits[1, T, vocab]`` over ``model`` (modified in place: give it a
    copy), with a fp32 KV cache of ``max_context`` positions registered as buffers on each attention layer."""

    def __init__(self, model: nn.Module, max_context: int):
        super().__init__()
        _register_attention()
        self.model = model
        config = model.config
        for attention in attention_modules(model):
            kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            head_dim = attention.head_dim
            attention.register_buffer("kv_keys", torch.zeros(1, max_context, kv_heads, head_dim), persistent=False)
            attention.register_buffer("kv_values", torch.zeros(1, max_context, kv_heads, head_dim), persistent=False)
        config._attn_implementation = ATTENTION

    def forward(self, input_ids: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        positions = (torch.arange(input_ids.shape[1]) + input_pos[0]).unsqueeze(0)
        return self.model(input_ids=input_ids, position_ids=positions, use_cache=False).logits

    def cache_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for name, b in self.named_buffers() if name.endswith(("kv_keys", "kv_values")))


def lower_lm(program: StaticKVProgram, max_context: int, vocab_size: int, progress: Callable[[str], None] = lambda message: None):
    """``torch.export`` (dynamic sequence length) → XNNPACK → ExecuTorch; a ``compress.backends.pte.export.Lowered``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from compress.backends.pte.export import Lowered, _partitioner_reasons, _split_ops

    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0]))
    seq = torch.export.Dim("seq_len", min=1, max=max_context)
    progress("capturing the model with torch.export (dynamic sequence length)")
    try:
        with torch.no_grad():
            exported = torch.export.export(program, example, dynamic_shapes=({1: seq}, None), strict=False)
    except Exception as exc:
        raise EnvironmentFailure(f"torch.export could not capture the language model with a static KV cache: {first_line(exc)}") from None
    constants = {MAX_SEQ_LEN: max_context, VOCAB_SIZE: int(vocab_size)}
    with _partitioner_reasons() as reasons:
        try:
            progress("lowering to ExecuTorch with the XNNPACK partitioner")
            # no edge-dialect IR check (as ExecuTorch's own LLM builder): it re-runs every op on fake tensors once per
            # delegated partition, which held SmolLM2's 8da4w lowering for over 12 minutes (py-spy)
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()], constant_methods=constants,
                                               compile_config=EdgeCompileConfig(_check_ir_validity=False))
            delegated, portable = _split_ops(edge.exported_program().graph_module, reasons)
            progress("serializing the ExecuTorch program")
            content = edge.to_executorch().buffer
        except Exception as exc:
            raise EnvironmentFailure(f"ExecuTorch could not lower the language model to XNNPACK: {first_line(exc)}") from None
    return Lowered(bytes(content), delegated, portable)


# --- the runner ----------------------------------------------------------------------------------------------------


class PteDecoder:
    """A ``.pte`` LM in ``executorch.runtime``: the Decoder protocol. The KV cache is the program's state; ``prefill``
    continues at the current position (``reset()`` starts a new sequence at 0)."""

    def __init__(self, path, threads: int | None = None):
        from compress.backends.pte.session import load_program, require_executorch

        require_executorch()
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (the llama:: kernels the program calls)

        self.path = Path(path)
        try:
            program = load_program(self.path, threads)
            names = program.method_names
            if not {METHOD, MAX_SEQ_LEN, VOCAB_SIZE} <= set(names):
                raise ValueError(f"methods {sorted(names)}")
            self.max_context = int(program.load_method(MAX_SEQ_LEN).execute([])[0])
            self.vocab_size = int(program.load_method(VOCAB_SIZE).execute([])[0])
            self.method = program.load_method(METHOD)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UsageError(f"{self.path} is not a compress language-model .pte (forward, {MAX_SEQ_LEN}, {VOCAB_SIZE}): "
                             f"{first_line(exc)}; export it with compress quantize") from None
        self.position = 0

    def reset(self) -> None:
        self.position = 0

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        if not ids:
            raise UsageError("prefill needs at least one token")
        if self.position + len(ids) > self.max_context:
            raise UsageError(f"{self.position + len(ids)} tokens do not fit the KV cache of {self.path.name} "
                             f"({self.max_context} positions); shorten the prompt or export with a larger max_context")
        if not all(0 <= i < self.vocab_size for i in ids):
            raise UsageError(f"token ids must lie in 0..{self.vocab_size - 1} (the model's vocabulary)")
        try:
            logits = self.method.execute([torch.tensor([ids], dtype=torch.long), torch.tensor([self.position], dtype=torch.long)])[0]
        except (RuntimeError, ValueError) as exc:
            raise EnvironmentFailure(f"ExecuTorch could not run {self.path.name}: {first_line(exc)}") from None
        self.position += len(ids)
        return logits[0].numpy().astype(np.float32, copy=True)

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]
