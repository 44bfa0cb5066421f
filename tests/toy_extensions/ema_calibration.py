"""A toy calibration method for every calibration backend: "ema", each activation's range an exponential moving
average of the per-batch minimum and maximum (onnxruntime's MinMax calibrater with ``moving_average``; torchao's
``MovingAverageMinMaxObserver`` for TFLite and ``.pte``).

Registered with one call, ``register_calibration(EMA)``; a TFLite conversion with it runs in the second process of
`compress quantize` like a built-in method's.

Example:
    >>> EMA.knobs["averaging_constant"], sorted(EMA.implementations)
    (0.01, ['onnxruntime', 'pt2e'])
"""
from __future__ import annotations

from compress.backends import CalibrationMethod, OrtCalibrater, Pt2eObserver

AVERAGING_CONSTANT = 0.01  # torchao's default; onnxruntime's MinMax calibrater takes the same knob


def create(model_path, op_types, augmented_model_path, extra_options):
    """onnxruntime's MinMax calibrater, its ranges averaged over the calibration batches."""
    from onnxruntime.quantization.calibrate import CalibrationMethod as OrtMethod, create_calibrator

    return create_calibrator(model_path, op_types, augmented_model_path=augmented_model_path,
                             calibrate_method=OrtMethod.MinMax, extra_options={**extra_options, "moving_average": True})


def observer() -> type:
    from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver

    return MovingAverageMinMaxObserver


EMA = CalibrationMethod("ema", "a moving average of each activation's minimum and maximum",
                        {"averaging_constant": AVERAGING_CONSTANT},
                        {"onnxruntime": OrtCalibrater("MinMaxCalibrater (moving average of each activation's min/max)", create),
                         "pt2e": Pt2eObserver("MovingAverageMinMaxObserver (moving average of each activation's min/max)",
                                              observer)})
