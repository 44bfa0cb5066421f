"""GPTQ for decoder LMs, on torch (CPU): each linear's weight rounded column by column onto its grid, the rounding
error of each column compensated in the columns not yet rounded, through the inverse Hessian of the layer's
calibration inputs (Frantar et al. 2022).

torchao 0.18's GPTQ (torchao.prototype.gptq) asserts CUDA and needs mslk for int4, so this is compress's own. The
grid is the one ``compress.lm.schemes.quantize_weight`` defines, with each group's scale fixed from the original
weights and the element that sets it kept at its grid end, so the result is a fixed point of ``snap_weights_``: any
backend quantizing these float weights with the layer's grid writes exactly these values.

Example:
    >>> import torch
    >>> from compress.lm.schemes import plan_layers
    >>> from tests.lm_models import tiny_module
    >>> model = tiny_module("llama")  # a seeded 2-layer random Llama
    >>> layers = plan_layers(model, "int4-weight", symmetric=True)
    >>> done = gptq_(model, layers, torch.randint(0, 64, (4, 32)))
    >>> [c.reason for c in done if c.name.endswith("q_proj")]
    ['int4 symmetric g32; GPTQ on 4 windows']
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

import torch
from torch import nn

from compress.lm.calibrate import Progress, Windows, decoder_layers, first_layer_inputs, recording_inputs, say
from compress.lm.schemes import LayerChoice, quantize_weight, snap_weights_, weight_matrix


def hessian(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """2/n · XᵀX over all calibration tokens (rows of ``inputs``), in float64 for a stable factorisation.

    Example:
        >>> hessian([torch.ones(2, 3)]).shape
        torch.Size([3, 3])
    """
    x = torch.cat([i.to(torch.float64) for i in inputs])
    return 2 * x.T @ x / len(x)


def _anchors(weight: torch.Tensor, choice: LayerChoice, block: int) -> torch.Tensor:
    """A mask of the elements that set each group's grid (largest magnitude; min and max when asymmetric)."""
    out, width = weight.shape
    groups = weight.reshape(out, width // block, block)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    if choice.precision == "int8-weight" or choice.symmetric:
        mask.scatter_(-1, groups.abs().argmax(-1, keepdim=True), True)
    else:
        mask.scatter_(-1, groups.argmin(-1, keepdim=True), True)
        mask.scatter_(-1, groups.argmax(-1, keepdim=True), True)
    return mask.reshape(out, width)


@torch.no_grad()
def gptq_weight(weight: torch.Tensor, h: torch.Tensor, choice: LayerChoice, damp: float = 0.01,
                columns: int = 128, act_order: bool = True) -> torch.Tensor:
    """The GPTQ-rounded [out, in] weight on ``choice``'s grid, given the Hessian ``h`` of its inputs; with
    ``act_order`` the columns with the largest activations are rounded first (the grid stays the one fixed per group
    beforehand, so the order is free).

    Example:
        >>> from compress.lm.schemes import LayerChoice
        >>> torch.manual_seed(0) and None
        >>> w, x = torch.randn(8, 64), torch.randn(256, 64)
        >>> q = gptq_weight(w, hessian([x]), LayerChoice("l", "linear", "int4-weight", 32, True, ""))
        >>> rtn = quantize_weight(w, "int4-weight", 32, True).dequantize()
        >>> bool(((x @ (q - w).T) ** 2).sum() < ((x @ (rtn - w).T) ** 2).sum())
        True
    """
    with one_thread():
        return _gptq_weight(weight, h, choice, damp, columns, act_order)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread within the block: GPTQ's column loop is thousands of tiny ops, and a second
    thread only adds a synchronisation per op (measured on a 960x576 SmolLM2 q/k/v stack under load: 2 threads
    6.9 s wall and 2.2 s CPU, 1 thread 0.5 s and 0.15 s).

    Example:
        >>> with one_thread():
        ...     torch.get_num_threads()
        1
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gptq_weight(weight: torch.Tensor, h: torch.Tensor, choice: LayerChoice, damp: float, columns: int,
                 act_order: bool) -> torch.Tensor:
    w = weight.detach().to(torch.float64).clone()
    out, width = w.shape
    grid = quantize_weight(weight, choice.precision, choice.block_size, choice.symmetric)
    block = grid.block_size
    scale = grid.scale.to(torch.float64).repeat_interleave(block, dim=1)
    offset = None if grid.offset is None else grid.offset.to(torch.float64).repeat_interleave(block, dim=1)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    qmin, qmax = (-128, 127) if choice.precision == "int8-weight" else (-8, 7) if choice.symmetric else (0, 15)
    anchor = _anchors(weight.detach().to(torch.float32), choice, block)
    fixed_q = grid.q.to(torch.float64)

    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(width, dtype=h.dtype)
    order = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(width)
    w, h = w[:, order], h[order][:, order]
    scale, safe, anchor, fixed_q = scale[:, order], safe[:, order], anchor[:, order], fixed_q[:, order]
    offset = None if offset is None else offset[:, order]
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    for start in range(0, width, columns):
        stop = min(start + columns, width)
        w1, err1, hinv1 = w[:, start:stop].clone(), torch.zeros(out, stop - start, dtype=w.dtype), \
            hinv[start:stop, start:stop]
        for i in range(stop - start):
            col, d = start + i, hinv1[i, i]
            zero = 0 if offset is None else offset[:, col]
            q = torch.clamp(torch.round((w1[:, i] - zero) / safe[:, col]), qmin, qmax)
            q = torch.where(anchor[:, col], fixed_q[:, col], q)
            rounded = q * scale[:, col] + zero
            err = (w1[:, i] - rounded) / d
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            w1[:, i] = rounded
            err1[:, i] = err
        w[:, start:stop] = w1
        w[:, stop:] -= err1 @ hinv[start:stop, stop:]
    return w[:, torch.argsort(order)].to(weight.dtype)


def same_input_groups(seen: dict[str, list[torch.Tensor]], choices: dict[str, LayerChoice]) -> list[list[str]]:
    """The recorded linears grouped by identical inputs and grid (q/k/v; gate/up): GPTQ rounds each output row on its
    own given the shared Hessian, so a group's stacked weight is rounded in one pass (one Python loop over its columns
    instead of one per linear: ~35 % fewer column steps on a Llama layer) with the same result.

    Example:
        >>> x, c = [torch.ones(2, 3)], LayerChoice("q", "linear", "int4-weight", 32, True, "")
        >>> same_input_groups({"q": x, "k": [t.clone() for t in x], "o": [torch.zeros(2, 3)]}, {"q": c, "k": c, "o": c})
        [['q', 'k'], ['o']]
    """
    groups: list[list[str]] = []
    for name in seen:
        grid = lambda n: (choices[n].precision, choices[n].block_size, choices[n].symmetric)  # noqa: E731
        home = next((g for g in groups if grid(g[0]) == grid(name) and len(seen[g[0]]) == len(seen[name])
                     and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(seen[g[0]], seen[name]))), None)
        if home is None:
            groups.append([name])
        else:
            home.append(name)
    return groups


@torch.no_grad()
def gptq_(module: nn.Module, layers: Sequence[LayerChoice], windows: Windows, *, damp: float = 0.01,
          progress: Progress = None) -> list[LayerChoice]:
    """Apply GPTQ in place to every quantized linear of the decoder layers, layer after layer (each layer calibrated
    on what the already-rounded layers before it compute); the head and embeddings are rounded to nearest. Returns
    the choices with the reason saying GPTQ.
    """
    wanted = {c.name: c for c in layers if c.kind == "linear" and c.precision != "fp32"}
    named = dict(module.named_modules())
    inputs = first_layer_inputs(module, windows)
    stack = decoder_layers(module)
    for index, layer in enumerate(stack):
        prefix = next(n for n, m in named.items() if m is layer)
        mine = {n: named[n] for n in wanted if n.startswith(prefix + ".")}
        with recording_inputs(mine) as seen:
            inputs.outputs(layer)
        for names in same_input_groups(seen, wanted):
            weights = [weight_matrix(mine[n]) for n in names]
            rounded = gptq_weight(torch.cat(weights), hessian(seen[names[0]]), wanted[names[0]], damp)
            for w, part in zip(weights, rounded.split([w.shape[0] for w in weights])):
                w.copy_(part)
        inputs = inputs.through(layer)
        say(progress, f"GPTQ: decoder layer {index + 1}/{len(stack)} ({len(mine)} linears)")
    count = sum(h.shape[0] for h in inputs.hidden)
    done = [dataclasses.replace(c, reason=f"{c.reason}; GPTQ on {count} windows") if c.name in wanted else c
            for c in layers]
    return snap_weights_(module, done)
