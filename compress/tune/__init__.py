"""`compress tune`: accuracy-aware search under a budget (Optuna), trials on local processes or Ray.

Example:
    >>> result = tune(handle, TuneConfig(max_degradation=0.005, trials=12), out_dir="runs/tune")
    >>> result.best["size_bytes"] < result.baseline["size_bytes"]
    True
"""
from compress.tune.config import TuneConfig
from compress.tune.search import TuneResult, tune

__all__ = ["TuneConfig", "TuneResult", "tune"]
