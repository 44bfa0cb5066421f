"""A small, deterministic training loop shared by the zoo, fine-tuning and distillation.

Example:
    >>> fit(model, splits.train, heads, epochs=2, lr=1e-3, seed=0)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from compress.data import Dataset, Head

LossFn = Callable[[tuple, tuple, tuple], torch.Tensor]


def as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def supervised_loss(heads: tuple[Head, ...]) -> LossFn:
    """Cross-entropy per classification head, MSE per regression head, summed."""

    def loss(inputs, outputs, labels):
        total = 0.0
        for head, out, y in zip(heads, outputs, labels):
            total = total + (nn.functional.cross_entropy(out, y) if head.kind == "classification" else nn.functional.mse_loss(out, y))
        return total

    return loss


def set_mode(model: nn.Module, training: bool) -> None:
    """``model.train(training)``; graphs from torch.export (which refuse it) switch their dropout/batch-norm ops instead."""
    try:
        model.train(training)
    except NotImplementedError:
        set_graph_training(model, dropout=training, batch_norm=training)


def set_graph_training(graph: torch.fx.GraphModule, dropout: bool, batch_norm: bool) -> None:
    """In a torch.export graph ``aten.dropout`` and ``aten.batch_norm`` carry their mode as an argument: set it."""
    positions = {torch.ops.aten.dropout.default: (2, "train", dropout), torch.ops.aten.batch_norm.default: (5, "training", batch_norm)}
    changed = False
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in positions:
            continue
        index, name, value = positions[node.target]
        if name in node.kwargs:
            node.kwargs = {**node.kwargs, name: value}
        else:
            node.args = (*node.args[:index], value, *node.args[index + 1:])
        changed = True
    if changed:
        graph.recompile()


def fit(
    model: nn.Module,
    data: Dataset,
    heads: tuple[Head, ...],
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    optimizer: str = "adam",
    loss_fn: LossFn | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``data``; shuffling and init depend only on ``seed``."""
    torch.manual_seed(seed)
    loss_fn = loss_fn or supervised_loss(heads)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    rng = np.random.default_rng(seed)
    xs = tuple(torch.from_numpy(a) for a in data.x)
    ys = tuple(torch.from_numpy(a) for a in data.y)
    set_mode(model, True)
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(data.size))
        running = 0.0
        for start in range(0, data.size, batch_size):
            index = order[start : start + batch_size]
            inputs = tuple(x[index] for x in xs)
            labels = tuple(y[index] for y in ys)
            opt.zero_grad()
            loss = loss_fn(inputs, as_tuple(model(*inputs)), labels)
            loss.backward()
            opt.step()
            if after_step:
                after_step()
            running += loss.item() * len(index)
        if on_epoch:
            on_epoch(epoch, running / data.size)
    set_mode(model, False)
    return model


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, batch_size: int = 256) -> list[np.ndarray]:
    """Eager PyTorch outputs, one array per output head."""
    set_mode(model, False)
    chunks: list[list[np.ndarray]] = []
    for inputs, _ in data.batches(batch_size):
        outputs = as_tuple(model(*(torch.from_numpy(a) for a in inputs)))
        chunks.append([o.detach().float().numpy() for o in outputs])
    return [np.concatenate(parts) for parts in zip(*chunks)]
