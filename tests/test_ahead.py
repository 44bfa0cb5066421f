"""The second process that converts TFLite/.pte files beside the ONNX work (compress.export.ahead): what it refuses
to take, and that it never outlives the process that started it. The files it makes are compared with in-process
conversions in tests/test_quantize.py."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from compress.export.ahead import Job, convert_ahead
from tests.models_for_tests import MultiHead


class UserLayer(torch.nn.Module):
    """A class of the user's (its module is not torch or compress): unpickling it would import the user's code."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


UserLayer.__module__ = "users_model"


def test_modules_with_user_classes_are_converted_in_this_process():
    job = Job("tflite", "fp32", None, "minmax", True)
    assert convert_ahead(UserLayer(), (torch.zeros(1, 4),), [job]) is None
    assert convert_ahead(MultiHead(), (torch.zeros(1, 8, 8),), []) is None  # nothing to convert


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split()[2] != "Z"


def test_an_unused_prewarmed_process_ends_with_its_parent():
    script = "from compress.export import ahead; ahead.prewarm(); print(ahead._WARM[0][0].pid, flush=True)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)


def test_a_pt2_model_is_reloaded_there_and_converted_to_the_same_bytes(tmp_path):
    from compress.export.pt2e import eval_mode, export_batch
    from compress.export.reuse import conversions
    from compress.export.tflite import build_tflite
    from compress.model import load_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(1, 1, 8, 8),)), str(path))
    handle = load_model(path)
    module = eval_mode(handle.module)
    example = handle.input_spec.example_inputs(batch=export_batch(handle), seed=0)
    job = Job("tflite", "fp32", None, "minmax", True)
    with conversions():
        ahead = convert_ahead(module, example, [job], program=str(path))
        assert ahead is not None and ahead.collect() == 1  # an unlifted .pt2 module does not pickle: the file went
        from_there = build_tflite(module, example, "fp32", None, "minmax", True, [], [])[0]
    assert from_there == build_tflite(module, example, "fp32", None, "minmax", True, [], [])[0]  # converted here
    with torch.no_grad():
        next(module.parameters()).add_(1.0)  # the model in memory is no longer the file's
    with conversions():
        assert convert_ahead(module, example, [job], program=str(path)).collect() == 0
