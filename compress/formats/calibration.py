"""Calibration methods (how static int8 picks each activation's range): one typed record each.

A method declares its knobs once (bins, percentile, symmetry) and what it runs as in each runtime, because the
names mean different algorithms there: "entropy" is KL-divergence minimisation in onnxruntime (the TensorRT
algorithm) and a 2048-bin histogram search minimising L2 quantization error in PT2E (torchao's HistogramObserver;
torchao has no KL observer). The data calibrated on is ``calib_data`` (``calib_samples`` samples of train+val).

Example:
    >>> CALIBRATIONS["percentile"].knobs["percentile"]
    99.999
    >>> CALIBRATIONS["entropy"].runs_as["onnxruntime"][:32]
    'EntropyCalibrater (KL-divergence'
"""
from __future__ import annotations

from dataclasses import dataclass, field

HISTOGRAM_BINS = 2048
PERCENTILE = 99.999


@dataclass(frozen=True)
class CalibrationMethod:
    """``knobs``: the method's settings (onnxruntime's calibrator takes them as ``extra_options``, PT2E's observers
    read the same values); ``runs_as``: runtime name -> what really computes the range there."""

    name: str
    summary: str
    knobs: dict = field(default_factory=dict)
    runs_as: dict[str, str] = field(default_factory=dict)


CALIBRATIONS: dict[str, CalibrationMethod] = {}


def register_calibration(method: CalibrationMethod) -> CalibrationMethod:
    """Add ``method``; each format's quantizer maps the name to its runtime's algorithm (see ``runs_as``)."""
    CALIBRATIONS[method.name] = method
    return method


for _method in (
    CalibrationMethod("minmax", "the observed minimum and maximum of each activation", {}, {
        "onnxruntime": "MinMaxCalibrater (running min/max of each activation)",
        "litert": "MinMaxObserver (running min/max of each activation)"}),
    CalibrationMethod("percentile", f"clip each activation at its {PERCENTILE}th percentile",
                      {"num_bins": HISTOGRAM_BINS, "percentile": PERCENTILE, "symmetric": False}, {
        "onnxruntime": f"PercentileCalibrater ({HISTOGRAM_BINS}-bin histogram, the [{100 - PERCENTILE:.3f}, {PERCENTILE}] percentiles)",
        "litert": f"PercentileObserver (clips each activation at its {PERCENTILE}th percentile, read from a "
                  f"{HISTOGRAM_BINS}-bin histogram)"}),
    CalibrationMethod("entropy", "a histogram search for the range that loses least information",
                      {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": 128, "symmetric": False}, {
        "onnxruntime": f"EntropyCalibrater (KL-divergence between the {HISTOGRAM_BINS}-bin histogram and its 128-bin "
                       "quantized copy, as in TensorRT)",
        "litert": f"HistogramObserver ({HISTOGRAM_BINS}-bin histogram, range chosen to minimise L2 quantization error; "
                  "torchao has no KL-divergence observer, this is the closest)"}),
):
    register_calibration(_method)


def calibration_names() -> tuple[str, ...]:
    return tuple(CALIBRATIONS)


def check_calibration(name: str) -> CalibrationMethod:
    """The record for ``name``; a ValueError naming the choices otherwise."""
    if name not in CALIBRATIONS:
        raise ValueError(f"unknown calibration method {name!r}; choose one of {', '.join(CALIBRATIONS)}")
    return CALIBRATIONS[name]
