"""AWQ for decoder LMs, on torch (CPU): per input channel, weights of channels that carry large activations are
scaled up before rounding (and the inputs scaled down, folded into the norm or linear before), with the exponent of
the activation magnitude searched per group to minimise the group's output error on calibration inputs
(Lin et al. 2023).

torchao 0.18's AWQ (torchao.prototype.awq) keeps the scale as a runtime multiply on the activations inside its
quantized tensor subclass; compress folds it into the float weights instead, so any backend's grid applies unchanged.

Example:
    >>> import torch, transformers
    >>> from compress.lm.schemes import plan_layers
    >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
    ...                                num_attention_heads=4, num_key_value_heads=2)
    >>> model = transformers.LlamaForCausalLM(cfg).eval()
    >>> done = awq_(model, plan_layers(model, "int4-weight", symmetric=True), torch.randint(0, 64, (4, 32)))
    >>> [c.reason.split("; ")[1].split(" ")[0] for c in done if c.name.endswith("down_proj")]
    ['AWQ']
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from compress.lm.calibrate import Progress, Windows, decoder_layers, first_layer_inputs, recording_inputs, say
from compress.lm.folding import ScalingGroup, fold_scales, scaling_groups
from compress.lm.schemes import LayerChoice, quantize_weight

ALPHAS = tuple(i / 20 for i in range(20))


def _rounding_error(x: torch.Tensor, group: ScalingGroup, choices: dict[str, LayerChoice], s: torch.Tensor) -> float:
    error = 0.0
    for name, linear in group.linears.items():
        choice = choices.get(name)
        if choice is None:
            continue
        w = linear.weight.detach()
        rounded = quantize_weight(w * s, choice.precision, choice.block_size, choice.symmetric).dequantize() / s
        error += float(((x @ (rounded - w).T) ** 2).sum())
    return error


def search_scale(x: torch.Tensor, group: ScalingGroup, choices: dict[str, LayerChoice]) -> tuple[torch.Tensor, float]:
    """The per-channel scale (mean |x| ** alpha, alpha searched on a grid; alpha 0 is round-to-nearest) with the
    least output error of the group's rounded linears on inputs ``x`` [tokens, width]; and that alpha.

    Example:
        >>> from compress.lm.folding import ScalingGroup
        >>> lin = nn.Linear(32, 4, bias=False)
        >>> x = torch.randn(64, 32) * torch.linspace(0.1, 10, 32)
        >>> c = {"l": LayerChoice("l", "linear", "int4-weight", 32, True, "")}
        >>> s, alpha = search_scale(x, ScalingGroup(nn.Identity(), {"l": lin}), c)
        >>> alpha > 0
        True
    """
    magnitude = x.abs().mean(0).clamp(min=1e-6)
    best = (float("inf"), torch.ones_like(magnitude), 0.0)
    for alpha in ALPHAS:
        s = magnitude.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        error = _rounding_error(x, group, choices, s)
        if error < best[0]:
            best = (error, s, alpha)
    return best[1], best[2]


@torch.no_grad()
def awq_(module: nn.Module, layers: Sequence[LayerChoice], windows: Windows, *, max_tokens: int = 4096,
         progress: Progress = None) -> list[LayerChoice]:
    """Search and fold AWQ scales in place for every quantized linear of the decoder layers (Llama family). The
    float model computes the same function afterwards; its weights now round better onto the chosen grids. Returns
    the choices with the reason saying AWQ and the alpha found.
    """
    wanted = {c.name: c for c in layers if c.kind == "linear" and c.precision != "fp32"}
    named = dict(module.named_modules())
    inputs = first_layer_inputs(module, windows)
    stack = decoder_layers(module)
    alphas: dict[str, float] = {}
    for index, layer in enumerate(stack):
        prefix = next(n for n, m in named.items() if m is layer)
        groups = [g for g in scaling_groups(layer, prefix) if any(n in wanted for n in g.linears)]
        firsts = {next(iter(g.linears)): next(iter(g.linears.values())) for g in groups}
        with recording_inputs(firsts) as seen:
            inputs.outputs(layer)
        for group in groups:
            x = torch.cat(seen[next(iter(group.linears))])
            x = x[torch.linspace(0, len(x) - 1, min(max_tokens, len(x))).long()]
            s, alpha = search_scale(x, group, wanted)
            fold_scales(group, s)
            alphas.update({name: alpha for name in group.linears})
        inputs = inputs.through(layer)
        say(progress, f"AWQ: decoder layer {index + 1}/{len(stack)} ({len(groups)} scale groups)")
    return [dataclasses.replace(c, reason=f"{c.reason}; AWQ alpha {alphas[c.name]:.2f}") if c.name in alphas else c
            for c in layers]
