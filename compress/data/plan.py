"""Which samples calibrate and which evaluate: calibration from train+val, evaluation on test, never the same.

Example:
    >>> plan = plan_data(handle, "digits28", calib_samples=256, seed=0)
    >>> plan.calibration.split_name, plan.test.split_name
    ('train+val[256]', 'test')
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from compress.data import Dataset, resolve_data
from compress.data.origin import data_origin
from compress.data.validate import check_dataset, check_labels
from compress.errors import UsageError
from compress.loading.model import ModelHandle
from compress.loading.spec import InputSpec


PROBE_SAMPLES = 64  # random inputs that stand in for a test split when there is no data (fidelity, never accuracy)


@dataclass
class DataPlan:
    calibration: Dataset
    test: Dataset | None          # None: no real data, so no accuracy claim
    name: str | None
    split_seed: int
    synthetic: bool = False
    spec: InputSpec | None = None  # the model's inputs and batch axes, for runners fed this data
    origin: dict = field(default_factory=dict)  # {"source", "sha256"}: compress.data.origin
    probe: Dataset | None = None   # no data: random inputs on which artifacts are compared with fp32 torch (fidelity only)

    def report_dataset(self) -> dict | None:
        if self.test is None:
            return None
        return {"name": self.name, "split": "test", "samples": self.test.size, "split_seed": self.split_seed,
                "calibration_samples": self.calibration.size, "calibration_split": self.calibration.split_name,
                "fingerprint": self.test.fingerprint(), **self.origin}


def image_shape(handle: ModelHandle) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the first input when it is an image batch (what image-folder data is resized to), else None."""
    first = handle.input_spec.tensors[0]
    return first.sample_shape if len(first.shape) == 4 else None


def plan_data(handle: ModelHandle, data: str | Dataset | None, calib_samples: int = 256, seed: int = 0) -> DataPlan:
    """Resolve ``--data`` (default: the zoo checkpoint's own dataset and split seed) into calibration and test sets.

    The data is checked here, before anything runs: values (compress.data.validate), shapes against the model's
    input spec, and class labels against the classes the model predicts.
    """
    split_seed = seed
    if data is None and handle.dataset:
        data, split_seed = handle.dataset["name"], int(handle.dataset.get("split_seed", seed))
    spec = handle.input_spec
    if data is None:
        return DataPlan(spec.random_dataset(calib_samples, seed), None, None, seed, synthetic=True, spec=spec,
                        probe=spec.random_dataset(PROBE_SAMPLES, seed + 1))
    dataset = check_dataset(data) if isinstance(data, Dataset) else resolve_data(data, image_shape(handle), spec)
    dataset = replace(dataset, x=spec.samples_first(dataset.x, f"data {dataset.name!r}"), axes=spec.input_axes)
    check_labels(dataset, handle.heads, Path(handle.source_path).name)
    if dataset.size < 10:
        raise UsageError(f"data {dataset.name!r} has only {dataset.size} samples; give at least 10 (calibration and test must not overlap)")
    splits = dataset.split(split_seed)
    origin = data_origin(data) if isinstance(data, str) else {}
    return DataPlan(splits.calibration(calib_samples, seed), splits.test, dataset.name, split_seed, spec=spec, origin=origin)


def model_splits(handle: ModelHandle, data: str | None, seed: int = 0):
    """Train/val/test splits for a pass: ``data`` (or the model's own dataset) split with the model's split seed.

    None when there is no data at all (a pass that needs labels says so itself).

    Example:
        >>> model_splits(handle, None).train.x.shape[0]     # a zoo checkpoint: its dataset, its split seed
        1077
    """
    name = data or (handle.dataset or {}).get("name")
    return resolve_data(name).split((handle.dataset or {}).get("split_seed", seed)) if name else None
