"""Zoo checkpoints: one ``.pt`` file that ``torch.load(..., weights_only=True)`` opens safely.

It holds only tensors and plain Python values: the architecture name and config, the state_dict,
the input spec, the dataset and split seed, the metrics at save time and the library versions.
Loading rebuilds the module from the zoo's own code; nothing pickled is executed.

Example:
    >>> save_checkpoint("m.pt", "mnist_cnn", {"width": 1.0}, model, seed=0, metrics={})
    >>> model, meta = load_checkpoint("m.pt")
"""
from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn

from compress.errors import UsageError
from compress.safety.io import atomic_path

CHECKPOINT_FORMAT = "compress.zoo/1"


# the packages besides the formats' (compress.backends: ``packages``) whose version can change an output's bytes (models,
# exported files, figures): the stage-cache key, manifests and reports record them; constraints.txt pins the tested set
TORCH_PACKAGES = ("torch", "torchao", "torch-pruning")
NUMERIC_PACKAGES = ("numpy", "scikit-learn", "scipy")


def output_packages() -> list[str]:
    """Every package whose version can change an output's bytes: torch's, each format's, then the numeric ones."""
    from compress.catalog import format_packages

    return list(dict.fromkeys([*TORCH_PACKAGES, *format_packages(), *NUMERIC_PACKAGES]))


def library_versions() -> dict[str, str]:
    """Python, compress's own version and every installed :func:`output_packages` version, e.g. ``{"torch": "2.13.0+cpu", ...}``."""
    from importlib import metadata

    from compress import __version__

    versions = {"python": platform.python_version(), "compress": __version__}
    for package in output_packages():
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def save_checkpoint(path: str | Path, arch: str, config: dict, model: nn.Module, seed: int, metrics: dict, extra: dict | None = None) -> Path:
    """Write a zoo checkpoint atomically and return its path."""
    from compress.zoo.registry import zoo_entry

    entry = zoo_entry(arch)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "config": dict(config),
        "state_dict": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        "input_spec": entry.input_spec.to_list(),
        "dataset": {"name": entry.dataset, "split_seed": int(seed)},
        "seed": int(seed),
        "metrics": metrics,
        "versions": library_versions(),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def is_zoo_checkpoint(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def build_from_checkpoint(payload: dict, source: str) -> nn.Module:
    """Rebuild the zoo module and load its weights; errors name the file."""
    from compress.zoo.registry import zoo_entry

    try:
        entry = zoo_entry(payload["arch"])
        model = entry.build(**{k: v for k, v in payload["config"].items() if k == "width"})
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise UsageError(f"{source}: not a valid zoo checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return model.eval()
