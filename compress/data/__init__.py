"""Data: the samples a run uses, and how outputs are judged on them.

- registry, builtin, dataset, origin, validate: datasets (built-in real data that ships offline, plus a user's .npz,
  image folder or Python callable), where they come from, and their checks.
- plan: which samples calibrate and which evaluate; outputs: each model output's kind and fidelity floor; labels:
  whether y judges an output (and the note that says so);
  evaluate: task metrics and fidelity against the reference; streams: state fed back over a stream, evaluated.

Example:
    >>> from compress.data import load_dataset
    >>> ds = load_dataset("digits28")
    >>> splits = ds.split(seed=0)
    >>> splits.test.x[0].shape
    (360, 1, 28, 28)
"""
from compress.data.dataset import Dataset, Head, Splits
from compress.data.registry import BUILTIN_DATASETS, load_dataset, resolve_data

__all__ = ["Dataset", "Head", "Splits", "BUILTIN_DATASETS", "load_dataset", "resolve_data"]
