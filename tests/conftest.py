"""Shared fixtures: a private cache, quickly trained zoo checkpoints, the CLI runner."""
from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads spinning between ops made the suite crawl on 2 cores; set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """Tests never touch the user's ~/.cache/compress."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["COMPRESS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def zoo_checkpoint(private_cache, tmp_path_factory):
    """``zoo_checkpoint("mnist_cnn", epochs=2, width=1.0)`` → path of a trained checkpoint (cached per session)."""
    from compress.zoo import train_zoo_model

    made: dict[tuple, Path] = {}
    folder = tmp_path_factory.mktemp("zoo")

    def make(name: str, epochs: int | None = None, width: float = 1.0, seed: int = 0) -> Path:
        key = (name, epochs, width, seed)
        if key not in made:
            out = folder / f"{name}-w{width:g}-e{epochs}-s{seed}.pt"
            made[key] = train_zoo_model(name, out=out, epochs=epochs, width=width, seed=seed).path
        return made[key]

    return make


@pytest.fixture(scope="session")
def cli():
    """Invoke the CLI in-process: ``result = cli("zoo", "list", "--json")``."""
    from typer.testing import CliRunner

    from compress.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def splits():
    """The digits28 train/val/test splits the mnist_cnn checkpoints are trained and tested on (seed 0)."""
    from compress.data import load_dataset

    return load_dataset("digits28").split(0)
