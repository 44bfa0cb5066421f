"""AWQ for decoder LMs, on torch (CPU): per input channel, weights of channels that carry large activations are
scaled up before rounding (and the inputs scaled down, folded into the norm or linear before), with the exponent of
the activation magnitude searched per group to minimise the group's output error on calibration inputs
(Lin et al. 2023).

torchao 0.18's AWQ (torchao.prototype.awq) keeps the scale as a runtime multiply on the activations inside its
quantized tensor subclass; compress folds it into the float weights instead, so any backend's grid applies unchanged.

Example:
    >>> import torch
    >>> from compress.lm.schemes import plan_layers
    >>> from tests.lm_models import tiny_module
    >>> model = tiny_module("llama")  # a seeded 2-layer random Llama
    >>> done = awq_(model, plan_layers(model, "int4-weight", symmetric=True), torch.randint(0, 64, (4, 32)))
    >>> [c.reason.split("; ")[1].split(" ")[0] for c in done if c.name.endswith("down_proj")]
    ['AWQ']
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from compress.lm.calibrate import Progress, Windows
from compress.lm.folding import ScalingGroup, fold_scales, groups_with_inputs
from compress.lm.schemes import LayerChoice, quantize_weight

ALPHAS = tuple(i / 20 for i in range(20))
CLIP_RATIOS = tuple(1 - i / 20 for i in range(10))  # 1.0 (no clipping) down to 0.55
NOT_CLIPPED = ("q_proj", "k_proj")  # their errors meet in the attention scores (as AutoAWQ skips them)


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
        >>> torch.manual_seed(0) and None
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
def clip_weight_(x: torch.Tensor, linear: nn.Linear, choice: LayerChoice) -> float:
    """Clip each group of the weight in place to the fraction of its range (CLIP_RATIOS) whose rounded group gives
    the least output error on inputs ``x`` [tokens, width]; returns the mean ratio kept.

    Example:
        >>> torch.manual_seed(0) and None
        >>> lin = nn.Linear(64, 8, bias=False)
        >>> ratio = clip_weight_(torch.randn(128, 64), lin, LayerChoice("l", "linear", "int4-weight", 32, True, ""))
        >>> 0.5 < ratio <= 1.0
        True
    """
    w = linear.weight.detach()
    out, width = w.shape
    block = choice.block_size or width
    groups, xg = w.reshape(out, -1, block), x.reshape(len(x), -1, block)
    lo, hi = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    if choice.precision == "int8-weight" or choice.symmetric:
        hi = torch.maximum(hi.abs(), lo.abs())
        lo = -hi
    best_error = torch.full(groups.shape[:2], float("inf"))
    best = torch.ones(groups.shape[:2])
    for ratio in CLIP_RATIOS:
        clipped = torch.maximum(torch.minimum(groups, hi * ratio), lo * ratio).reshape(out, width)
        rounded = quantize_weight(clipped, choice.precision, choice.block_size, choice.symmetric).dequantize()
        error = torch.einsum("ngb,ogb->nog", xg, (rounded - w).reshape(out, -1, block)).pow(2).sum(0)
        better = error < best_error
        best_error, best = torch.where(better, error, best_error), torch.where(better, ratio, best)
    limit = best.unsqueeze(-1)
    w.copy_(torch.maximum(torch.minimum(groups, hi * limit), lo * limit).reshape(out, width))
    return float(best.mean())


@torch.no_grad()
def awq_(module: nn.Module, layers: Sequence[LayerChoice], windows: Windows, *, max_tokens: int = 1024,
         clip: bool = True, clip_tokens: int = 256, progress: Progress = None) -> list[LayerChoice]:
    """Search and fold AWQ scales in place for every quantized linear of the decoder layers (Llama family), then
    (``clip``) clip each group's weight range where that lowers the rounded output error (q/k projections excepted).
    The scales leave the float model's function unchanged; the clipping changes it slightly, towards what rounds
    well. Returns the choices with the reason saying AWQ, the alpha found and the mean clip ratio.
    """
    wanted = {c.name: c for c in layers if c.kind == "linear" and c.precision != "fp32"}
    alphas: dict[str, str] = {}
    for group, x in groups_with_inputs(module, wanted, windows, "AWQ", progress):
        x = x[torch.linspace(0, len(x) - 1, min(max_tokens, len(x))).long()]
        s, alpha = search_scale(x, group, wanted)
        fold_scales(group, s)
        alphas.update({name: f"alpha {alpha:.2f}" for name in group.linears})
        for name, linear in group.linears.items():
            if clip and name in wanted and not name.endswith(NOT_CLIPPED):
                ratio = clip_weight_(x[:: max(1, len(x) // clip_tokens)] / s, linear, wanted[name])
                alphas[name] += f", clip {ratio:.2f}"
    return [dataclasses.replace(c, reason=f"{c.reason}; AWQ {alphas[c.name]}") if c.name in alphas else c
            for c in layers]
