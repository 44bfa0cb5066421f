"""The built-in calibration methods (how static int8 picks each activation's range), each registered in
compress.catalog with its implementation per calibration backend.

A method declares its knobs once (bins, percentile, symmetry) and one implementation per calibration backend, the
one a format names in ``ArtifactFormat.calibrates_with``: ``"onnxruntime"`` (ONNX) takes an ``OrtCalibrater`` (a
calibrater factory; the knobs are its ``extra_options``), ``"pt2e"`` (TFLite through LiteRT, ``.pte`` through
ExecuTorch) a ``Pt2eObserver`` (an activation observer factory).
The names mean different algorithms there: "entropy" is KL-divergence minimisation in onnxruntime (the TensorRT
algorithm) and a 2048-bin histogram search minimising L2 quantization error in PT2E (torchao's HistogramObserver;
torchao has no KL observer). A format whose backend has no implementation refuses the method; nothing falls back to another.
The data calibrated on is ``calib_data`` (``calib_samples`` samples of train+val).

Example:
    >>> CALIBRATIONS["percentile"].knobs["percentile"]
    99.999
    >>> CALIBRATIONS["entropy"].runs_as["onnxruntime"][:32]
    'EntropyCalibrater (KL-divergence'
    >>> check_calibration("entropy", "pte").runs_as[:17]
    'HistogramObserver'
"""
from __future__ import annotations

import importlib
from typing import Callable

from compress.catalog import (CALIBRATIONS, CalibrationMethod, OrtCalibrater, Pt2eObserver, calibration_names,
                              check_calibration, register_calibration, unregister_calibration)

__all__ = ["CALIBRATIONS", "CalibrationMethod", "HISTOGRAM_BINS", "OrtCalibrater", "PERCENTILE", "Pt2eObserver",
           "calibration_names", "check_calibration", "register_calibration", "unregister_calibration"]

HISTOGRAM_BINS = 2048
PERCENTILE = 99.999


def _lazy(module: str, name: str) -> Callable:
    """``module.name(...)``, imported on first call (torch loads only when a method runs)."""
    return lambda *args, **keywords: getattr(importlib.import_module(module), name)(*args, **keywords)


def _ort(method: str) -> Callable:
    """onnxruntime's own calibrater for ``CalibrationMethod.<method>``."""
    def create(model_path, op_types, augmented_model_path, extra_options):
        from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod, create_calibrator

        return create_calibrator(model_path, op_types, augmented_model_path=augmented_model_path,
                                 calibrate_method=OrtMethod[method], extra_options=extra_options)
    return create


def _pt2e_observer(runs_as: str, factory: str) -> Pt2eObserver:
    return Pt2eObserver(runs_as, _lazy("compress.backends.pt2e", factory))


def _builtin(name: str, summary: str, knobs: dict, onnx_runs_as: str, ort_method: str, pt2e_runs_as: str,
             pt2e_factory: str) -> CalibrationMethod:
    return CalibrationMethod(name, summary, knobs, {"onnxruntime": OrtCalibrater(onnx_runs_as, _ort(ort_method)),
                                                    "pt2e": _pt2e_observer(pt2e_runs_as, pt2e_factory)})


for _method in (
    _builtin("minmax", "the observed minimum and maximum of each activation", {},
             "MinMaxCalibrater (running min/max of each activation)", "MinMax",
             "MinMaxObserver (running min/max of each activation)", "minmax_observer"),
    _builtin("percentile", f"clip each activation at its {PERCENTILE}th percentile",
             {"num_bins": HISTOGRAM_BINS, "percentile": PERCENTILE, "symmetric": False},
             f"PercentileCalibrater ({HISTOGRAM_BINS}-bin histogram, the [{100 - PERCENTILE:.3f}, {PERCENTILE}] percentiles)",
             "Percentile",
             f"PercentileObserver (clips each activation at its {PERCENTILE}th percentile, read from a "
             f"{HISTOGRAM_BINS}-bin histogram)", "percentile_observer"),
    _builtin("entropy", "a histogram search for the range that loses least information",
             {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": 128, "symmetric": False},
             f"EntropyCalibrater (KL-divergence between the {HISTOGRAM_BINS}-bin histogram and its 128-bin "
             "quantized copy, as in TensorRT)", "Entropy",
             f"HistogramObserver ({HISTOGRAM_BINS}-bin histogram, range chosen to minimise L2 quantization error; "
             "torchao has no KL-divergence observer, this is the closest)", "histogram_observer"),
):
    register_calibration(_method)
