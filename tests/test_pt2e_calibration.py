"""PT2E calibration (TFLite and .pte int8): min/max ranges observed on whole batches by a dynamic-batch twin equal
the ranges observed one sample per call, up to float rounding; models that fix their batch fall back to one sample
per call."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import compress.backends.pt2e as pt2e
from compress.data import Dataset
from compress.backends.tflite.export import _layer_aware_quantizer


class Reshaping(torch.nn.Module):
    """Reads its batch size (``x.size(0)``): a dynamic capture makes it a graph value."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.head(y.reshape(x.size(0), -1))


class FixedBatch(torch.nn.Module):
    """Hard-codes batch 1 in a reshape: only a batch-1 capture exists."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(64, 5)

    def forward(self, x):
        return self.head(x.reshape(1, 64))


def _ranges(prepared) -> dict[str, tuple[float, float]]:
    return {name: (float(m.min_val), float(m.max_val)) for name, m in prepared.named_modules()
            if name.startswith("activation_post_process_") and m.min_val.numel() == 1}


def _calibration(samples: int) -> Dataset:
    return Dataset("calib", (np.random.default_rng(0).normal(size=(samples, 1, 8, 8)).astype(np.float32),))


@pytest.mark.parametrize("model", [Reshaping, torch.nn.Sequential])
def test_batched_ranges_equal_one_sample_per_call(model, monkeypatch):
    torch.manual_seed(0)
    net = (model() if model is Reshaping else model(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                                     torch.nn.Linear(144, 5))).eval()
    example, calib = (torch.zeros(1, 1, 8, 8),), _calibration(70)  # 70: the last batch is a partial one
    called = []
    real = pt2e._observe_batched
    monkeypatch.setattr(pt2e, "_observe_batched", lambda *args: called.append(real(*args)) or called[-1])
    batched = pt2e.prepared_and_calibrated(net, example, _layer_aware_quantizer("minmax", True, []), calib, "minmax", [])
    assert called == [True]
    monkeypatch.setattr(pt2e, "_observe_batched", lambda *args: False)
    single = pt2e.prepared_and_calibrated(net, example, _layer_aware_quantizer("minmax", True, []), calib, "minmax", [])
    ranges, expected = _ranges(batched), _ranges(single)
    assert ranges.keys() == expected.keys() and len(ranges) >= 3
    for name, (low, high) in expected.items():
        assert ranges[name] == pytest.approx((low, high), rel=1e-5, abs=1e-6), name


def test_a_model_that_fixes_its_batch_is_calibrated_one_sample_per_call(monkeypatch):
    net = FixedBatch().eval()
    calib = Dataset("calib", (np.random.default_rng(0).normal(size=(8, 1, 64)).astype(np.float32),))
    quantizer = _layer_aware_quantizer("minmax", True, [])
    called = []
    real = pt2e._observe_batched
    monkeypatch.setattr(pt2e, "_observe_batched", lambda *args: called.append(real(*args)) or called[-1])
    prepared = pt2e.prepared_and_calibrated(net, (torch.zeros(1, 1, 64),), quantizer, calib, "minmax", [])
    assert called == [False]  # no dynamic-batch twin: one sample per call
    ranges = _ranges(prepared)
    assert ranges and all(np.isfinite(r).all() for r in ranges.values())  # every observer saw the samples
    inputs = calib.x[0]
    assert min(low for low, _ in ranges.values()) <= float(inputs.min()) + 1e-6
