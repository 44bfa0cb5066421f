"""compress: make trained PyTorch models small and fast for phones and edge boards, and prove it.

The public Python API is imported lazily so that `compress --help` stays quick.

Example:
    >>> import compress
    >>> handle = compress.load_model("mnist_cnn.pt")
"""
from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "load_model": "compress.model",
    "ModelHandle": "compress.model",
    "InputSpec": "compress.spec",
    "load_dataset": "compress.data",
    "resolve_data": "compress.data",
    "train_zoo_model": "compress.zoo",
    "quantize": "compress.quantize",
    "QuantizeConfig": "compress.quantize",
    "PruneConfig": "compress.passes.prune",
    "DistillConfig": "compress.passes.distill",
    "QatConfig": "compress.passes.qat",
    "run_prune": "compress.workflows.prune",
    "run_distill": "compress.workflows.distill",
    "run_qat": "compress.workflows.qat",
    "load_recipe": "compress.recipe",
    "run_recipe": "compress.recipe.run",
    "run_fleet": "compress.fleet",
    "benchmark_artifact": "compress.benchmark",
    "verify_on_targets": "compress.targets.parity",
    "estimate_artifact": "compress.targets.estimate",
    "register_pass": "compress.passes.registry",
    "register_target": "compress.targets.base",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")


__all__ = ["__version__", *_API]
