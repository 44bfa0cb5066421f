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
