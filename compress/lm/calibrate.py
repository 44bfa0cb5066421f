"""Calibration plumbing shared by GPTQ, AWQ and SmoothQuant: token windows in, each decoder layer's inputs out.

The model runs once up to its first decoder layer; after that each layer runs on its own captured inputs, so an
algorithm that changes layer ``i`` feeds layer ``i + 1`` with what the changed layer computes (sequential
calibration), without re-running the whole model.

Example:
    >>> import torch, transformers
    >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                num_attention_heads=4, num_key_value_heads=2)
    >>> model = transformers.LlamaForCausalLM(cfg).eval()
    >>> inputs = first_layer_inputs(model, [[1, 2, 3, 4], [5, 6, 7, 8]])
    >>> for layer in decoder_layers(model):
    ...     inputs = inputs.through(layer)
    >>> inputs.hidden[0].shape
    torch.Size([2, 4, 32])
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from compress.errors import UsageError

Windows = Sequence[Sequence[int]] | torch.Tensor
Progress = Callable[[str], None] | None


class _Captured(Exception):
    pass


def decoder_layers(module: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (the longest ModuleList of config.num_hidden_layers blocks).

    Example:
        >>> decoder_layers(nn.Sequential())
        Traceback (most recent call last):
        compress.errors.UsageError: no decoder layer stack found: calibration needs a *ForCausalLM model
    """
    count = getattr(getattr(module, "config", None), "num_hidden_layers", None)
    stacks = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not stacks:
        raise UsageError("no decoder layer stack found: calibration needs a *ForCausalLM model")
    return stacks[0]


def window_batches(windows: Windows, batch: int = 8) -> list[torch.Tensor]:
    """Token windows as LongTensor batches (windows of equal length share a batch).

    Example:
        >>> [b.shape for b in window_batches([[1, 2], [3, 4], [5, 6, 7]])]
        [torch.Size([2, 2]), torch.Size([1, 3])]
    """
    rows = [torch.as_tensor(w, dtype=torch.long).reshape(-1) for w in windows]
    if not rows or any(len(r) == 0 for r in rows):
        raise UsageError("calibration needs at least one non-empty token window")
    by_length: dict[int, list[torch.Tensor]] = {}
    for row in rows:
        by_length.setdefault(len(row), []).append(row)
    return [torch.stack(same[i:i + batch]) for same in by_length.values() for i in range(0, len(same), batch)]


@dataclass
class LayerInputs:
    """What a decoder layer receives, per calibration batch: hidden states, the other arguments (GPT-2 passes its
    mask positionally) and the keyword arguments."""

    hidden: list[torch.Tensor]
    args: list[tuple]
    kwargs: list[dict]

    @torch.no_grad()
    def outputs(self, layer: nn.Module) -> list[torch.Tensor]:
        """The layer's outputs on these inputs."""
        outs = [layer(h, *a, **kw) for h, a, kw in zip(self.hidden, self.args, self.kwargs)]
        return [o[0] if isinstance(o, tuple) else o for o in outs]

    def through(self, layer: nn.Module) -> "LayerInputs":
        """The next layer's inputs: these run through ``layer``."""
        return LayerInputs(self.outputs(layer), self.args, self.kwargs)


@torch.no_grad()
def first_layer_inputs(module: nn.Module, windows: Windows) -> LayerInputs:
    """Run the model up to its first decoder layer on each window batch and keep what that layer receives."""
    first = decoder_layers(module)[0]
    hidden, rest, kwargs = [], [], []

    def grab(_m, args, kw):
        hidden.append(args[0] if args else kw.pop("hidden_states"))
        rest.append(tuple(args[1:]))
        kwargs.append({k: v for k, v in kw.items() if k not in ("cache", "past_key_values", "past_key_value")}
                      | {"use_cache": False})
        raise _Captured

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for ids in window_batches(windows):
            with contextlib.suppress(_Captured):
                module(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return LayerInputs(hidden, rest, kwargs)


@contextlib.contextmanager
def recording_inputs(layers: dict[str, nn.Module]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every input of the named layers is recorded (flattened to [tokens, width]).

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> with recording_inputs({"lin": lin}) as seen:
        ...     _ = lin(torch.randn(4, 5, 3))
        >>> seen["lin"][0].shape
        torch.Size([20, 3])
    """
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [layer.register_forward_pre_hook(
        lambda _m, args, name=name: seen[name].append(args[0].detach().reshape(-1, args[0].shape[-1])))
        for name, layer in layers.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def say(progress: Progress, message: str) -> None:
    """Report progress when a reporter was given."""
    if progress is not None:
        progress(message)
