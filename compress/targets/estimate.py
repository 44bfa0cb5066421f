"""An analytic latency estimate for a device you cannot reach: MACs and bytes per inference, and a roofline.

Counted from the file itself (ONNX graph with inferred shapes, or the TFLite interpreter's ops): multiply-accumulates
of Conv / depthwise Conv / MatMul / Gemm / FullyConnected / BatchMatMul / LSTM / GRU / RNN, split into int8 and
float work, plus the bytes of every weight and every intermediate tensor. The estimate is
``max(compute time, memory time)`` on one core of a named ARM CPU, whose nominal peaks (NEON width x issue rate x a
typical clock; single-core sustained DRAM bandwidth of a board or phone with that core) are assumptions, not
measurements: override them with ``peak_gops`` / ``bandwidth_gbs``. Results are labelled ``estimate``, never latency.

Example:
    >>> result = estimate_artifact("model.int8.tflite", core="cortex-a53")
    >>> result["label"], result["bound"], result["macs"]
    ('estimate', 'compute', 762112)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import UsageError


@dataclass(frozen=True)
class Core:
    """One core's nominal peaks: MACs per cycle for fp32 and int8 NEON code, clock, and DRAM bandwidth."""

    name: str
    ghz: float
    fp32_macs_per_cycle: float
    int8_macs_per_cycle: float
    bandwidth_gbs: float
    note: str

    def peak_gops(self, int8: bool) -> float:
        """Giga-operations per second (1 MAC = 2 operations)."""
        return 2 * self.ghz * (self.int8_macs_per_cycle if int8 else self.fp32_macs_per_cycle)


CORES = {
    "cortex-a53": Core("Arm Cortex-A53", 1.8, 2, 8, 3.0, "in-order, 64-bit NEON datapath, no dot product (Raspberry Pi 3, low-end phones)"),
    "cortex-a55": Core("Arm Cortex-A55", 2.0, 4, 16, 6.0, "in-order, SDOT (little cores of recent phones)"),
    "cortex-a72": Core("Arm Cortex-A72", 1.8, 4, 8, 4.0, "out-of-order, no dot product (Raspberry Pi 4)"),
    "cortex-a76": Core("Arm Cortex-A76", 2.4, 8, 32, 10.0, "2 x 128-bit FMA/SDOT pipes (Raspberry Pi 5, 2019+ phone big cores)"),
    "cortex-a78": Core("Arm Cortex-A78", 2.8, 8, 32, 15.0, "2 x 128-bit FMA/SDOT pipes (2021+ phone big cores)"),
    "cortex-x1": Core("Arm Cortex-X1", 3.0, 16, 64, 20.0, "4 x 128-bit FMA/SDOT pipes (flagship prime cores)"),
}
DEFAULT_CORE = "cortex-a76"


def estimate_artifact(path: str | Path, core: str | None = None, batch: int = 1, peak_gops: float | None = None,
                      bandwidth_gbs: float | None = None) -> dict:
    """MACs, bytes moved and a roofline time for one inference of ``path`` on one core of ``core``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"artifact {path} not found; check the path")
    core = core or DEFAULT_CORE
    if core not in CORES:
        raise UsageError(f"unknown core {core!r} for the estimate; choose {', '.join(CORES)} (or give --peak-gops and --bandwidth-gbs)")
    if batch < 1 or (peak_gops is not None and peak_gops <= 0) or (bandwidth_gbs is not None and bandwidth_gbs <= 0):
        raise UsageError("--batch, --peak-gops and --bandwidth-gbs must be positive")
    from compress.catalog import estimated_suffixes, find_format

    fmt = find_format(path)
    if fmt is None or fmt.estimate_costs is None:
        raise UsageError(f"{path.name}: the estimate reads {' and '.join(estimated_suffixes())} files")
    costs = fmt.estimate_costs(path, batch)
    spec = CORES[core]
    int8_peak = peak_gops or spec.peak_gops(int8=True)
    fp32_peak = peak_gops or spec.peak_gops(int8=False)
    bandwidth = bandwidth_gbs or spec.bandwidth_gbs
    compute_ms = (2 * costs["int8_macs"] / (int8_peak * 1e9) + 2 * costs["float_macs"] / (fp32_peak * 1e9)) * 1e3
    memory_ms = costs["bytes_moved"] / (bandwidth * 1e9) * 1e3
    estimate = max(compute_ms, memory_ms)
    assumptions = [
        f"{spec.name}: {spec.note}; nominal {spec.ghz} GHz, {spec.fp32_macs_per_cycle:g} fp32 / {spec.int8_macs_per_cycle:g} int8 MACs "
        f"per cycle, {spec.bandwidth_gbs:g} GB/s" + (" (overridden)" if peak_gops or bandwidth_gbs else ""),
        "one core at its peak, every weight and intermediate tensor through DRAM once; real kernels reach a fraction of "
        "peak and small models live in cache, so treat this as an order of magnitude, not a latency",
    ]
    if costs["uncounted_ops"]:
        assumptions.append(f"not counted (no MAC formula): {', '.join(sorted(costs['uncounted_ops']))}")
    return {
        "label": "estimate", "target": f"estimate:{core}", "core": core, "batch": batch,
        "macs": int(costs["int8_macs"] + costs["float_macs"]), "int8_macs": int(costs["int8_macs"]), "float_macs": int(costs["float_macs"]),
        "weight_bytes": int(costs["weight_bytes"]), "bytes_moved": int(costs["bytes_moved"]),
        "peak_gops": {"int8": round(int8_peak, 2), "fp32": round(fp32_peak, 2)}, "bandwidth_gbs": bandwidth,
        "compute_ms": round(compute_ms, 6), "memory_ms": round(memory_ms, 6), "estimate_ms": round(estimate, 6),
        "bound": "compute" if compute_ms >= memory_ms else "memory", "assumptions": assumptions,
    }
