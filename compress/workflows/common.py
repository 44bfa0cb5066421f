"""What the prune, distill and qat workflows share: data splits, verified exports, latency comparisons.

Example:
    >>> splits, plan = resolve_splits(handle, None)            # the model's own dataset and split seed
    >>> entries = export_verified(handle, run_dir, "model", ["onnx"], True, plan, reference, heads, None)
"""
from __future__ import annotations

from pathlib import Path

from compress.formats import QuantizeJob, default_formats, get as get_format

FORMATS = tuple(default_formats())


def resolve_splits(handle, data, seed: int = 0, calib_samples: int = 256):
    """Train/val/test splits for the passes and the DataPlan (calibration from train+val, test) for verification.

    ``data`` None means the model's own dataset and split seed (zoo checkpoints, compress-made .pt2 files).
    """
    from compress.data import Dataset, resolve_data
    from compress.dataplan import image_shape, plan_data
    from compress.errors import UsageError

    if data is None and not handle.dataset:
        raise UsageError(f"{handle.source_path} carries no dataset: pass --data (a dataset name, .npz, image folder or package.module:function)")
    own = data is None
    dataset = resolve_data(handle.dataset["name"] if own else data, image_shape(handle)) if not isinstance(data, Dataset) else data
    if not dataset.labeled:
        raise UsageError(f"data {dataset.name!r} has no labels: training and evaluation need labeled data")
    plan = plan_data(handle, None if own else dataset, calib_samples, seed)
    return dataset.split(plan.split_seed), plan


def export_verified(handle, run_dir: Path, stem: str, formats: list[str], int8: bool, plan, reference, heads,
                    bench: dict | None, prefix: str = "", seed: int = 0, step=None) -> list[dict]:
    """Export ``handle`` to fp32 (and PTQ int8) ONNX/TFLite as ``{stem}.{precision}.{fmt}``, verify each file in its
    runtime on the test split, and return the report entries (with ``compressed_size_bytes``)."""
    from compress.passes.prune import compressed_size
    from compress.pipeline import verify_artifact
    from compress.rundir import located, staged

    step = step or (lambda message: None)
    entries = []

    def verify(filename, precision, techniques, name, notes=(), float_ops=()):
        entry = verify_artifact(run_dir, filename, precision, [*handle.techniques, *techniques], plan, reference, heads,
                                name=name, bench=bench, notes=list(notes), float_ops=list(float_ops))
        entry["compressed_size_bytes"] = compressed_size(run_dir / entry["path"])
        entries.append(entry)

    for fmt in formats:
        fp32 = f"{stem}.fp32.{fmt}"
        step(f"{prefix}fp32 {fmt}: export and verify")
        export_fp32(handle, staged(run_dir, fp32), fmt)
        verify(fp32, "fp32", ["export:fp32"], f"{prefix}fp32-{fmt}")
        if int8:
            step(f"{prefix}int8 {fmt}: quantize and verify")
            out = staged(run_dir, f"{stem}.int8.{fmt}")
            result = quantize_int8(handle, fmt, out, located(run_dir, fp32), plan.calibration, seed)
            verify(out.name, result.precision, result.techniques, f"{prefix}int8-{fmt}", result.notes, result.float_ops)
    return entries


def compare_latency(artifacts: list[dict], baseline_prefix: str) -> None:
    """``speedup_vs_baseline`` (batch-1 p50 of the ``baseline_prefix`` fp32 file of the same format / own p50) and a note."""
    from compress.latency import device_p50 as p50

    base = {a["format"]: a for a in artifacts if a["name"].startswith(baseline_prefix) and a["precision"] == "fp32"}
    for artifact in artifacts:
        reference = base.get(artifact["format"])
        if reference is None or artifact is reference or not p50(artifact) or not p50(reference):
            continue
        artifact["speedup_vs_baseline"] = round(p50(reference) / p50(artifact), 3)
        artifact["notes"].append(f"p50 {p50(artifact):.3f} ms vs {p50(reference):.3f} ms for {reference['name']} at batch 1 "
                                 f"({artifact['speedup_vs_baseline']:.2f}x)")


def export_fp32(handle, path: Path, fmt: str) -> None:
    get_format(fmt).export_fp32(handle, path)


def quantize_int8(handle, fmt: str, out: Path, fp32: Path, calib_data, seed: int = 0):
    """``fmt``'s static int8 file (what `compress quantize` makes with default settings) at ``out``; ``fp32`` is read
    by the formats that quantize the fp32 file."""
    record = get_format(fmt)
    return record.quantize(QuantizeJob(handle, "int8", out, fp32 if record.quantizes_fp32_file else None, calib_data, seed=seed))
