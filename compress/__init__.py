"""compress: make trained PyTorch models small and fast for phones and edge boards, and prove it.

The public Python API is imported lazily so that `compress --help` stays quick.

Example:
    >>> import compress
    >>> handle = compress.load_model("mnist_cnn.pt")
"""
from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "load_model": "compress.loading.model",
    "ModelHandle": "compress.loading.model",
    "InputSpec": "compress.loading.spec",
    "load_dataset": "compress.data",
    "resolve_data": "compress.data",
    "train_zoo_model": "compress.zoo",
    "quantize": "compress.passes.quantize",
    "QuantizeConfig": "compress.passes.quantize",
    "PruneConfig": "compress.passes.prune",
    "DistillConfig": "compress.passes.distill",
    "QatConfig": "compress.passes.qat",
    "run_prune": "compress.passes.prune_workflow",
    "run_distill": "compress.passes.distill_workflow",
    "run_qat": "compress.passes.qat_workflow",
    "load_recipe": "compress.recipe",
    "run_recipe": "compress.recipe.run",
    "run_fleet": "compress.recipe.fleet",
    "benchmark_artifact": "compress.steps.benchmark",
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
