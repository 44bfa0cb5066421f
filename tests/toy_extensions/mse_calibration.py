"""A toy calibration method for ONNX only: "mse", the clipping range that minimises the expected uint8 quantization
error (clipping plus rounding) over each activation's histogram.

Registered with one call, ``register_calibration(MSE)``; TFLite and ``.pte`` have no implementation and refuse it.

Example:
    >>> best_range(np.array([0, 0, 90, 10]), np.linspace(-2.0, 2.0, 5), 0.0, 2.0)  # 10 % in [1, 2): clipped at 1.5
    (0.0, 1.5)
"""
from __future__ import annotations

import numpy as np

from compress.backends import CalibrationMethod, OrtCalibrater

BINS = 2048
SHRINKS = np.linspace(0.25, 1.0, 61)  # candidate ranges: the observed range scaled towards zero
LEVELS = 255  # uint8 activations


def best_range(counts: np.ndarray, edges: np.ndarray, minimum: float, maximum: float) -> tuple[float, float]:
    """The ``(low, high)`` among ``SHRINKS`` x the observed ``[minimum, maximum]`` (widened to hold 0) with the least
    expected squared error, weighting each histogram bin's centre by its count: clipped values lose their distance
    to the range, kept ones step²/12."""
    centres, weights = (edges[:-1] + edges[1:]) / 2, counts / max(counts.sum(), 1)
    low, high = min(float(minimum), 0.0), max(float(maximum), 0.0)
    best, best_error = (low, high), np.inf
    for shrink in SHRINKS[::-1]:  # widest first: ties keep the observed range
        a, b = low * shrink, high * shrink
        step = (b - a) / LEVELS
        clipped = np.clip(centres, a, b)
        error = float(np.sum(weights * ((centres - clipped) ** 2 + (clipped == centres) * step**2 / 12)))
        if error < best_error:
            best, best_error = (float(a), float(b)), error
    return best


def create(model_path, op_types, augmented_model_path, extra_options):
    """onnxruntime's histogram calibrater, its ranges chosen by ``best_range`` (tagged MinMax: plain ranges)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod, HistogramCalibrater, TensorsData

    class MseCalibrater(HistogramCalibrater):
        def compute_data(self) -> TensorsData:
            return TensorsData(OrtMethod.MinMax, {name: tuple(np.float32(v) for v in best_range(*h[:4]))
                                                  for name, h in self.collector.histogram_dict.items()})

    calibrater = MseCalibrater(model_path, op_types, augmented_model_path, method="percentile",
                               num_bins=extra_options["num_bins"])
    calibrater.augment_graph()
    calibrater.create_inference_session()
    return calibrater


MSE = CalibrationMethod("mse", "the clipping range with the least expected quantization error", {"num_bins": BINS},
                        {"onnxruntime": OrtCalibrater(f"MseCalibrater ({BINS}-bin histogram, the clipping range with the "
                                                      "least expected squared error)", create)})
