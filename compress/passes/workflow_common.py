"""What the prune, distill and qat workflows share: data splits, verified exports, latency comparisons.

Example:
    >>> splits, plan = resolve_splits(handle, None)            # the model's own dataset and split seed
    >>> splits, plan, heads = load_splits(clock, handle, None)  # the same, timed, with the heads verification reads
    >>> entries = export_verified(handle, run_dir, "model", ["onnx"], True, plan, reference, heads, None)
    >>> [e["name"] for e in entries]
    ['fp32-onnx', 'int8-onnx']
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.backends import default_formats

if TYPE_CHECKING:
    from compress.report.model import Artifact

FORMATS = tuple(default_formats())


def resolve_splits(handle, data, seed: int = 0, calib_samples: int = 256):
    """Train/val/test splits for the passes and the DataPlan (calibration from train+val, test) for verification.

    ``data`` None means the model's own dataset and split seed (zoo checkpoints, compress-made .pt2 files).
    """
    from compress.data import Dataset, resolve_data
    from compress.data.plan import image_shape, plan_data
    from compress.errors import UsageError

    if data is None and not handle.dataset:
        raise UsageError(f"{handle.source_path} carries no dataset: pass --data (a dataset name, .npz, image folder or package.module:function)")
    own = data is None
    dataset = resolve_data(handle.dataset["name"] if own else data, image_shape(handle)) if not isinstance(data, Dataset) else data
    if not dataset.labeled:
        raise UsageError(f"data {dataset.name!r} has no labels: training and evaluation need labeled data")
    plan = plan_data(handle, None if own else dataset, calib_samples, seed)
    return dataset.split(plan.split_seed), plan


def load_splits(clock, handle, data, seed: int = 0):
    """``(splits, plan, heads)``: ``resolve_splits`` timed as the phase "loading data" on ``clock`` (a PhaseClock),
    and the output heads verification reads (compress.steps.pipeline.heads_for).

    Example:
        >>> splits, plan, heads = load_splits(PhaseClock(), handle, None, seed=0)
    """
    from compress.steps.pipeline import heads_for

    clock.begin("loading data")
    splits, plan = resolve_splits(handle, data, seed)
    return splits, plan, heads_for(handle, plan)


def export_verified(handle, run_dir: Path, stem: str, formats: list[str], int8: bool, plan, reference, heads,
                    bench: dict | None, prefix: str = "", seed: int = 0, step=None) -> list[Artifact]:
    """Export ``handle`` to fp32 (and PTQ int8) ONNX/TFLite as ``{stem}.{precision}.{fmt}``, verify each file in its
    runtime on the test split, and return the report entries (with ``compressed_size_bytes``): compress.build."""
    from compress.build import FP32, QUANTIZER, ArtifactSpec, BuildContext, build
    from compress.passes.quantize import QuantizeConfig

    specs = []
    for fmt in formats:
        specs.append(ArtifactSpec(fmt, "fp32", f"{prefix}fp32-{fmt}", f"{stem}.fp32.{fmt}", FP32, tuple(handle.techniques),
                                  phase=f"{prefix}fp32 {fmt}: export and verify"))
        if int8:
            specs.append(ArtifactSpec(fmt, "int8", f"{prefix}int8-{fmt}", f"{stem}.int8.{fmt}", QUANTIZER, tuple(handle.techniques),
                                      phase=f"{prefix}int8 {fmt}: quantize and verify"))
    context = BuildContext(run_dir, plan, heads, QuantizeConfig(seed=seed), reference, bench=bench, compressed_size=True,
                           step=step or (lambda message: None))
    return build(handle, specs, context).artifacts


def compare_latency(artifacts: list[Artifact], baseline_prefix: str) -> None:
    """``speedup_vs_baseline`` (batch-1 p50 of the ``baseline_prefix`` fp32 file of the same format / own p50) and a note."""
    from compress.steps.latency import device_p50 as p50

    base = {a.format: a for a in artifacts if a.name.startswith(baseline_prefix) and a.precision == "fp32"}
    for artifact in artifacts:
        reference = base.get(artifact.format)
        if reference is None or artifact is reference or not p50(artifact) or not p50(reference):
            continue
        artifact.speedup_vs_baseline = round(p50(reference) / p50(artifact), 3)
        artifact.notes = [*artifact.notes, f"p50 {p50(artifact):.3f} ms vs {p50(reference):.3f} ms for {reference.name} at batch 1 "
                                           f"({artifact.speedup_vs_baseline:.2f}x)"]
