"""Per-layer sensitivity of a decoder LM to its grid, and mixed precision from it: each quantized layer is rounded
alone onto its grid and the KL divergence of the model's next-token distribution from the float one is measured on
calibration windows; the most sensitive layers are then kept at a higher precision within a size budget (as
llama.cpp's Q4_K_M keeps some tensors at 6 bits).

Example:
    >>> import torch
    >>> from compress.lm.schemes import plan_layers
    >>> from tests.lm_models import tiny_module
    >>> model = tiny_module("llama")  # a seeded 2-layer random Llama
    >>> plan = plan_layers(model, "int4-weight")
    >>> mixed = mix_by_sensitivity(model, plan, torch.randint(0, 64, (2, 16)), budget_bytes=plan_bytes(model, plan))
    >>> [c.precision for c in mixed] == [c.precision for c in plan]
    True
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

import torch
from torch import nn

from compress.lm.calibrate import Progress, Windows, decoder_layers, first_layer_inputs, say, window_batches
from compress.lm.schemes import LayerChoice, quantize_weight, weight_matrix

_ORDER = {"fp32": 3, "int8-weight": 2, "int4-weight": 1, "8da4w": 1}


def weight_bytes(choice: LayerChoice, shape: Sequence[int]) -> int:
    """Bytes of a layer's weight on its grid: integers plus float32 scales (and offsets when asymmetric).

    Example:
        >>> weight_bytes(LayerChoice("l", "linear", "int4-weight", 32, False, ""), (8, 64))
        384
    """
    out, width = shape
    if choice.precision == "fp32":
        return out * width * 4
    if choice.precision == "int8-weight":
        groups = width // (choice.block_size or width)
        return out * width + out * groups * 4
    groups = width // (choice.block_size or width)
    return out * width // 2 + out * groups * (4 if choice.symmetric else 8)


def plan_bytes(module: nn.Module, layers: Sequence[LayerChoice]) -> int:
    """Total weight bytes of a plan (a weight shared by two layers counted once, at its first layer's grid)."""
    seen, total = set(), 0
    for choice in layers:
        w = weight_matrix(module.get_submodule(choice.name))
        if w.data_ptr() not in seen:
            seen.add(w.data_ptr())
            total += weight_bytes(choice, w.shape)
    return total


def _mean_kl(reference: list[torch.Tensor], module: nn.Module, batches: list[torch.Tensor]) -> float:
    total, count = 0.0, 0
    for ref, ids in zip(reference, batches):
        log_q = module(input_ids=ids, use_cache=False).logits.float().log_softmax(-1)
        total += float((ref.exp() * (ref - log_q)).sum())
        count += ref.shape[0] * ref.shape[1]
    return total / count


class _Skip(nn.Module):
    """Stands in for a decoder layer before the one measured: passes its input on."""

    def forward(self, hidden, *args, **kwargs):
        return hidden


class _Replay(_Skip):
    """Stands in for the layer just before the one measured: returns that layer's cached float inputs, batch by
    batch."""

    def __init__(self, cached: list[torch.Tensor]):
        super().__init__()
        self.batches = iter(cached)

    def forward(self, hidden, *args, **kwargs):
        return next(self.batches)


@contextlib.contextmanager
def _starting_at(stack: nn.ModuleList, index: int, cached: list[torch.Tensor]) -> Iterator[None]:
    """The model computes decoder layers from ``index`` on, the ones before replaced by their cached result."""
    originals = list(stack)
    try:
        for j in range(index):
            stack[j] = _Replay(cached) if j == index - 1 else _Skip()
        yield
    finally:
        for j, layer in enumerate(originals):
            stack[j] = layer


@torch.no_grad()
def layer_sensitivity(module: nn.Module, layers: Sequence[LayerChoice], windows: Windows,
                      progress: Progress = None) -> dict[str, float]:
    """KL(float ‖ quantized) of the next-token distribution, per token, with only that layer on its grid.

    A linear inside decoder layer ``i`` is measured from layer ``i`` on (the float inputs of layer ``i`` cached), so
    a 30-layer model costs about half its forward passes. A weight tied between the embedding and the head is
    rounded for both (measured at whichever comes first).
    """
    batches = window_batches(windows)
    reference = [module(input_ids=ids, use_cache=False).logits.float().log_softmax(-1) for ids in batches]
    stack = decoder_layers(module)
    prefixes = {next(n for n, m in module.named_modules() if m is layer) + ".": i for i, layer in enumerate(stack)}
    inputs, cached = first_layer_inputs(module, windows), []
    for layer in stack:
        cached.append(inputs.hidden)
        inputs = inputs.through(layer)
    quantized = [c for c in layers if c.precision != "fp32"]
    result = {}
    for index, choice in enumerate(quantized):
        start = next((i for p, i in prefixes.items() if choice.name.startswith(p)), 0)
        w = weight_matrix(module.get_submodule(choice.name))
        saved = w.clone()
        w.copy_(quantize_weight(w, choice.precision, choice.block_size, choice.symmetric).dequantize())
        try:
            with _starting_at(stack, start, cached[start]):
                result[choice.name] = _mean_kl(reference, module, batches)
        finally:
            w.copy_(saved)
        say(progress, f"sensitivity: {index + 1}/{len(quantized)} {choice.name} KL {result[choice.name]:.3g}")
    return result


def mix_by_sensitivity(module: nn.Module, layers: Sequence[LayerChoice], windows: Windows, *,
                       budget_bytes: int | None = None, promote_to: str = "int8-weight",
                       progress: Progress = None) -> list[LayerChoice]:
    """The plan with its most sensitive lower-precision layers promoted to ``promote_to`` (int8 per channel) while
    the plan's weight bytes stay within ``budget_bytes`` (default: 1.1x the given plan), every reason saying the
    layer's sensitivity rank.
    """
    sensitivity = layer_sensitivity(module, layers, windows, progress)
    ranked = sorted(sensitivity, key=sensitivity.get, reverse=True)
    rank = {name: i + 1 for i, name in enumerate(ranked)}
    budget = budget_bytes if budget_bytes is not None else int(1.1 * plan_bytes(module, layers))
    plan = {c.name: c for c in layers}
    for name in ranked:
        choice = plan[name]
        if _ORDER[choice.precision] >= _ORDER[promote_to]:
            continue
        promoted = dataclasses.replace(choice, precision=promote_to, block_size=None, symmetric=True)
        trial = [promoted if c.name == name else c for c in plan.values()]
        if plan_bytes(module, trial) <= budget:
            plan[name] = dataclasses.replace(
                promoted, reason=f"int8 per output channel: sensitivity rank {rank[name]}/{len(ranked)} "
                                 f"(KL {sensitivity[name]:.3g} at {choice.precision}), kept higher within the size "
                                 "budget")
    return [plan[c.name] if plan[c.name].precision != c.precision else
            dataclasses.replace(c, reason=f"{c.reason}; sensitivity rank {rank[c.name]}/{len(ranked)} "
                                          f"(KL {sensitivity[c.name]:.3g})") if c.name in rank else c
            for c in layers]
