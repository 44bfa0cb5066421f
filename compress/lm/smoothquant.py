"""SmoothQuant for W8A8 decoder LMs, on torch: activation outlier channels are divided by
``s = max|x|^alpha / max|w|^(1-alpha)`` (folded into the norm or linear before) and the weights' input channels
multiplied by it, so int8 activations lose less to outliers and int8 weights take the difficulty
(Xiao et al. 2022). Only the float weights (and folded norms) change.

torchao 0.18's SmoothQuant (torchao.prototype.smoothquant) keeps the smoothing factor as a runtime multiply inside
its own linear; compress folds it, so any backend's int8 grid applies unchanged.

Example:
    >>> import torch
    >>> from compress.lm.schemes import plan_layers
    >>> from tests.lm_models import tiny_module
    >>> model = tiny_module("llama")  # a seeded 2-layer random Llama
    >>> done = smoothquant_(model, plan_layers(model, "int8-weight"), torch.randint(0, 64, (4, 32)))
    >>> [c.reason for c in done if c.name.endswith("up_proj")]
    ['int8 per output channel; SmoothQuant alpha 0.50']
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from compress.lm.calibrate import Progress, Windows
from compress.lm.folding import fold_scales, groups_with_inputs
from compress.lm.schemes import LayerChoice


def smoothing_scale(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-channel factor from the activations' and weights' channel maxima.

    Example:
        >>> smoothing_scale(torch.tensor([16.0, 1.0]), torch.tensor([1.0, 1.0]), 0.5).tolist()
        [4.0, 1.0]
    """
    return (x_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smoothquant_(module: nn.Module, layers: Sequence[LayerChoice], windows: Windows, *, alpha: float = 0.5,
                 progress: Progress = None) -> list[LayerChoice]:
    """Fold SmoothQuant factors in place for the quantized linears of every decoder layer (Llama family); the float
    model computes the same function afterwards. Returns the choices with the reason saying SmoothQuant.
    """
    wanted = {c.name for c in layers if c.kind == "linear" and c.precision != "fp32"}
    smoothed: set[str] = set()
    for group, x in groups_with_inputs(module, wanted, windows, "SmoothQuant", progress):
        w_max = torch.stack([lin.weight.abs().amax(0) for lin in group.linears.values()]).amax(0)
        fold_scales(group, smoothing_scale(x.abs().amax(0), w_max, alpha))
        smoothed.update(group.linears)
    return [dataclasses.replace(c, reason=f"{c.reason}; SmoothQuant alpha {alpha:.2f}") if c.name in smoothed
            else c for c in layers]
