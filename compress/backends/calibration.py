"""Calibration methods (how static int8 picks each activation's range): one typed record each, carrying its work.

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
from dataclasses import dataclass, field
from typing import Any, Callable

HISTOGRAM_BINS = 2048
PERCENTILE = 99.999


@dataclass(frozen=True)
class OrtCalibrater:
    """onnxruntime's implementation: ``create(model_path, op_types, augmented_model_path, extra_options)`` returns a
    calibrater (``onnxruntime.quantization.calibrate.CalibraterBase``) with its augmented graph and session made;
    its ``compute_data()`` names the ORT method the ranges are tagged with."""

    runs_as: str
    create: Callable[..., Any]


@dataclass(frozen=True)
class Pt2eObserver:
    """The PT2E implementation (TFLite, ``.pte``): ``observer()`` returns the activation observer class."""

    runs_as: str
    observer: Callable[[], type]


@dataclass(frozen=True)
class CalibrationMethod:
    """``knobs``: the method's settings (onnxruntime calibraters take them as ``extra_options``, PT2E observers
    read the same values); ``implementations``: backend (``"onnxruntime"``, ``"pt2e"``) -> ``OrtCalibrater`` or
    ``Pt2eObserver``."""

    name: str
    summary: str
    knobs: dict = field(default_factory=dict)
    implementations: dict[str, OrtCalibrater | Pt2eObserver] = field(default_factory=dict)

    @property
    def formats(self) -> tuple[str, ...]:
        """The registered formats whose calibration backend implements this method."""
        from compress.backends.registry import formats

        return tuple(f.name for f in formats() if f.calibrates_with in self.implementations)

    @property
    def runs_as(self) -> dict[str, str]:
        """Runtime name (each implementing format's default runtime) -> what really computes the range there."""
        from compress.backends.registry import get

        return {get(fmt).runtime: self.implementation(fmt).runs_as for fmt in self.formats}

    def implementation(self, fmt: str) -> OrtCalibrater | Pt2eObserver:
        """What runs this method for format ``fmt``; a ValueError naming the formats that have one otherwise."""
        from compress.backends.registry import get

        backend = get(fmt).calibrates_with
        if backend not in self.implementations:
            raise ValueError(f"calibration {self.name!r} has no implementation for {fmt}; implemented for: "
                             f"{', '.join(self.formats) or 'no format'}")
        return self.implementations[backend]


CALIBRATIONS: dict[str, CalibrationMethod] = {}


def register_calibration(method: CalibrationMethod) -> CalibrationMethod:
    """Add ``method`` (replacing one of that name); only the formats whose backend it implements accept it."""
    CALIBRATIONS[method.name] = method
    return method


def unregister_calibration(name: str) -> None:
    CALIBRATIONS.pop(name, None)


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


def calibration_names(fmt: str | None = None) -> tuple[str, ...]:
    """Registered method names; with ``fmt``, those that format can run (all, for a format without a backend)."""
    return tuple(name for name, method in CALIBRATIONS.items() if fmt is None or _runs_on(method, fmt))


def _runs_on(method: CalibrationMethod, fmt: str) -> bool:
    from compress.backends.registry import get

    return get(fmt).calibrates_with in (None, *method.implementations)


def check_calibration(name: str, fmt: str | None = None):
    """The record for ``name``; with ``fmt``, its implementation for that format (None for a format that names no
    backend: its quantizer reads ``job.calibration`` itself). A ValueError saying what to choose otherwise."""
    if name not in CALIBRATIONS:
        raise ValueError(f"unknown calibration method {name!r}; choose one of {', '.join(CALIBRATIONS)}")
    if fmt is None:
        return CALIBRATIONS[name]
    from compress.backends.registry import get

    return None if get(fmt).calibrates_with is None else CALIBRATIONS[name].implementation(fmt)
