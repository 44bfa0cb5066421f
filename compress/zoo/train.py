"""Train a zoo model on its dataset and save a checkpoint (cached by name, width, epochs and seed).

Example:
    >>> result = train_zoo_model("linreg", seed=0)
    >>> round(result.metrics["task"]["value"], 2) > 0.4
    True
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from compress.data import load_dataset
from compress.errors import UsageError
from compress.data.evaluate import task_metrics
from compress.limits import MAX_EPOCHS
from compress.passes.training import fit, predict
from compress.zoo.checkpoint import save_checkpoint
from compress.zoo.registry import zoo_entry


@dataclass
class TrainResult:
    name: str
    path: Path
    model: nn.Module
    metrics: dict
    seconds: float
    cached: bool


def cache_dir() -> Path:
    base = os.environ.get("COMPRESS_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "compress")
    return Path(base) / "zoo"


def default_checkpoint_path(name: str, width: float, epochs: int, seed: int) -> Path:
    return cache_dir() / f"{name}-w{width:g}-e{epochs}-s{seed}.pt"


def evaluate_module(model: nn.Module, dataset_name: str, seed: int) -> dict:
    """The task metric of ``model`` on the test split of its dataset."""
    test = load_dataset(dataset_name).split(seed).test
    return {"task": task_metrics(test.heads, predict(model, test), test.y), "split": "test", "samples": test.size}


def check_epochs(epochs: int) -> int:
    """``epochs`` if it is 1 to MAX_EPOCHS, else a UsageError (a typo must not train until someone kills it)."""
    if not 1 <= epochs <= MAX_EPOCHS:
        raise UsageError(f"--epochs {epochs}: give 1 to {MAX_EPOCHS:,} epochs")
    return epochs


def train_zoo_model(
    name: str,
    out: str | Path | None = None,
    epochs: int | None = None,
    seed: int = 0,
    width: float = 1.0,
    reuse: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``name`` (or reuse the cached checkpoint) and return where it is with its test metrics."""
    from compress.zoo.checkpoint import build_from_checkpoint
    import torch

    entry = zoo_entry(name)
    epochs = check_epochs(entry.epochs if epochs is None else epochs)
    width = 1.0 if entry.widthless else width
    cached_path = default_checkpoint_path(name, width, epochs, seed)
    if reuse and cached_path.exists():
        payload = torch.load(cached_path, weights_only=True)
        model = build_from_checkpoint(payload, str(cached_path))
        if out is not None and Path(out) != cached_path:
            save_checkpoint(out, name, payload["config"], model, seed, payload["metrics"])
        return TrainResult(name, Path(out or cached_path), model, payload["metrics"], 0.0, True)
    torch.manual_seed(seed)
    model = entry.build(width=width)
    splits = load_dataset(entry.dataset).split(seed)
    started = time.perf_counter()
    optimizer = "sgd" if name == "linreg" else "adam"
    fit(model, splits.train, splits.train.heads, epochs, entry.lr, entry.batch_size, seed, optimizer, on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    metrics = evaluate_module(model, entry.dataset, seed)
    metrics["train_seconds"] = round(seconds, 2)
    config = {"width": width, "epochs": epochs}
    save_checkpoint(cached_path, name, config, model, seed, metrics)
    if out is not None:
        save_checkpoint(out, name, config, model, seed, metrics)
    return TrainResult(name, Path(out or cached_path), model, metrics, seconds, False)
