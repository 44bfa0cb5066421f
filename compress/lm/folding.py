"""Per-input-channel scales moved between a decoder layer's linears and the norm or linear that feeds them, so the
float model computes the same function (what AWQ and SmoothQuant both do): ``x @ Wᵀ == (x / s) @ (W · s)ᵀ``.

Example:
    >>> import torch, transformers
    >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                                num_attention_heads=4, num_key_value_heads=4)
    >>> model = transformers.LlamaForCausalLM(cfg).eval()
    >>> [len(g.linears) for g in scaling_groups(model.model.layers[0], "model.layers.0")]
    [3, 1, 2, 1]
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> before = model(ids).logits
    >>> group = scaling_groups(model.model.layers[0], "model.layers.0")[0]
    >>> fold_scales(group, torch.rand(32) + 0.5)
    >>> torch.allclose(before, model(ids).logits, atol=1e-5)
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterator

import torch
from torch import nn

from compress.errors import UsageError
from compress.lm.calibrate import Progress, Windows, decoder_layers, first_layer_inputs, recording_inputs, say


@dataclass
class ScalingGroup:
    """Linears that share one input, the module whose output is that input, and their names."""

    source: nn.Module  # an RMSNorm / LayerNorm, or a linear whose output rows feed the group
    linears: dict[str, nn.Linear]


def scaling_groups(layer: nn.Module, prefix: str) -> list[ScalingGroup]:
    """The foldable groups of a Llama-family decoder layer (Llama, SmolLM, Qwen2, Gemma): norm → q/k/v, v → o
    (when v and o have the same width: not with grouped-query attention), norm → gate/up, up → down.

    Example:
        >>> scaling_groups(nn.Linear(2, 2), "x")
        Traceback (most recent call last):
        compress.errors.UsageError: x: only Llama-family layers (q/k/v/o, gate/up/down projections) can be smoothed
    """
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if not all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")) or \
            not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
        raise UsageError(f"{prefix}: only Llama-family layers (q/k/v/o, gate/up/down projections) can be smoothed")
    name = lambda part, proj: f"{prefix}.{part}.{proj}"  # noqa: E731
    groups = [ScalingGroup(layer.input_layernorm, {name("self_attn", p): getattr(attn, p)
                                                   for p in ("q_proj", "k_proj", "v_proj")})]
    if attn.v_proj.out_features == attn.o_proj.in_features:
        groups.append(ScalingGroup(attn.v_proj, {name("self_attn", "o_proj"): attn.o_proj}))
    groups.append(ScalingGroup(layer.post_attention_layernorm, {name("mlp", p): getattr(mlp, p)
                                                                for p in ("gate_proj", "up_proj")}))
    groups.append(ScalingGroup(mlp.up_proj, {name("mlp", "down_proj"): mlp.down_proj}))
    return groups


@torch.no_grad()
def fold_scales(group: ScalingGroup, s: torch.Tensor) -> None:
    """Divide the source's output channels by ``s`` and multiply the linears' input channels by it, in place."""
    source = group.source
    if isinstance(source, nn.Linear):
        source.weight.div_(s.unsqueeze(1))
        if source.bias is not None:
            source.bias.div_(s)
    elif "Gemma" in type(source).__name__:  # Gemma's norms scale by (1 + weight)
        source.weight.copy_((1 + source.weight) / s - 1)
    else:
        source.weight.div_(s)
        if getattr(source, "bias", None) is not None:
            source.bias.div_(s)
    for linear in group.linears.values():
        linear.weight.mul_(s.unsqueeze(0))


def groups_with_inputs(module: nn.Module, wanted: Collection[str], windows: Windows, method: str,
                       progress: Progress = None) -> Iterator[tuple[ScalingGroup, torch.Tensor]]:
    """Each decoder layer's scaling groups that hold a ``wanted`` linear, with the inputs their linears received on
    ``windows`` (tokens × channels), layer after layer: what the caller folds into one layer before asking for the
    next is in the inputs the next layer receives. ``method`` names the caller in ``progress``.

    Example:
        >>> for group, x in groups_with_inputs(model, {"model.layers.0.mlp.down_proj"}, windows, "AbsMax"):
        ...     fold_scales(group, x.abs().amax(0).clamp(min=1e-5).sqrt())
    """
    named = dict(module.named_modules())
    inputs = first_layer_inputs(module, windows)
    stack = decoder_layers(module)
    for index, layer in enumerate(stack):
        prefix = next(n for n, m in named.items() if m is layer)
        groups = [g for g in scaling_groups(layer, prefix) if any(n in wanted for n in g.linears)]
        firsts = {next(iter(g.linears)): next(iter(g.linears.values())) for g in groups}
        with recording_inputs(firsts) as seen:
            inputs.outputs(layer)
        for group in groups:
            yield group, torch.cat(seen[next(iter(group.linears))])
        inputs = inputs.through(layer)
        say(progress, f"{method}: decoder layer {index + 1}/{len(stack)} ({len(groups)} scale groups)")
