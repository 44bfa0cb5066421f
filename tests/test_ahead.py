"""The second process that converts TFLite/.pte files beside the ONNX work (compress.steps.ahead): what it refuses
to take, and that it never outlives the process that started it. The files it makes are compared with in-process
conversions in tests/test_quantize.py."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
import torch

from compress.steps.ahead import Job, convert_ahead
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
    script = "from compress.steps import ahead; ahead.prewarm(); print(ahead._WARM[0][0].pid, flush=True)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid)


def test_a_pt2_model_is_reloaded_there_and_converted_to_the_same_bytes(tmp_path):
    from compress.backends.pt2e import eval_mode, export_batch
    from compress.backends.reuse import conversions
    from compress.backends.tflite.export import build_tflite
    from compress.loading.model import load_model

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


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()


def test_each_answer_is_waited_for_only_when_asked_and_kept_with_the_bytes_made_here():
    import numpy as np

    from compress.data import Dataset
    from compress.backends.reuse import conversions
    from compress.backends.tflite.export import build_tflite

    net, example = _small_net(), (torch.zeros(1, 1, 8, 8),)
    calib = Dataset("calib", (np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32),))
    jobs = [Job("tflite", "int8", calib, "minmax", True), Job("tflite", "fp32", None, "minmax", True)]
    waits = []
    with conversions():
        ahead = convert_ahead(net, example, jobs, waiting=lambda: waits.append(1) or contextlib.nullcontext())
        assert ahead is not None and ahead.formats == ["tflite"] and ahead.received == 0  # nothing read before it is asked for
        int8 = build_tflite(net, example, "int8", calib, "minmax", True, [], [])[0]
        assert ahead.received == 1 and ahead.made == 1 and waits  # the int8 answer only
        fp32 = build_tflite(net, example, "fp32", None, "minmax", True, [], [])[0]
        assert ahead.made == 2 and ahead.process.returncode == 0  # every answer read: the process is reaped
    assert int8 == build_tflite(net, example, "int8", calib, "minmax", True, [], [])[0]  # outside a run: converted here
    assert fp32 == build_tflite(net, example, "fp32", None, "minmax", True, [], [])[0]


def test_a_second_process_that_ended_before_anyone_waited_counts_its_cpu_in_its_own_phase():
    import numpy as np

    from compress.data import Dataset
    from compress.backends.reuse import conversions
    from compress.backends.tflite.export import build_tflite
    from compress.steps.phases import PhaseClock

    net, example = _small_net(), (torch.zeros(1, 1, 8, 8),)
    calib = Dataset("calib", (np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32),))
    clock = PhaseClock()

    @contextlib.contextmanager
    def waiting():
        asked_by = clock.running
        clock.begin("second process")
        yield
        clock.begin(asked_by)

    with conversions():
        ahead = convert_ahead(net, example, [Job("tflite", "fp32", None, "minmax", True), Job("tflite", "int8", calib, "minmax", True)],
                              waiting=waiting)
        deadline = time.monotonic() + 120
        while not ahead._ended and time.monotonic() < deadline:  # both answers written, its pipe closed
            time.sleep(0.1)
        clock.begin("fp32 tflite")  # the first wait finds everything there: no wait, but the process is reaped
        build_tflite(net, example, "fp32", None, "minmax", True, [], [])
        assert ahead.process.returncode == 0 and ahead.made == 1  # reaped; the int8 answer waits to be asked for
        clock.begin("int8 tflite")
        build_tflite(net, example, "int8", calib, "minmax", True, [], [])
        assert ahead.made == 2
    phases = {row["phase"]: row for row in clock.record()["phases"]}
    assert phases["second process"]["cpu_s"] > 1.0 > phases["fp32 tflite"]["cpu_s"]  # its conversions, not this phase's
    assert phases["int8 tflite"]["cpu_s"] < 1.0


def test_a_conversion_that_failed_there_is_made_here_with_its_usual_error():
    import numpy as np

    from compress.data import Dataset
    from compress.backends.reuse import conversions
    from compress.backends.tflite.export import build_tflite

    net, example = _small_net(), (torch.zeros(1, 1, 8, 8),)
    wrong = Dataset("calib", (np.zeros((4, 1, 5, 5), np.float32),))  # too small for the convolution and the linear
    with conversions():
        ahead = convert_ahead(net, example, [Job("tflite", "int8", wrong, "minmax", True)])
        with pytest.raises(Exception) as here:
            build_tflite(net, example, "int8", wrong, "minmax", True, [], [])
        assert ahead.received == 1 and ahead.made == 0  # it answered "failed"; this process converted and raised
    assert "shape" in str(here.value) or "size" in str(here.value)


def test_a_run_that_ends_first_stops_the_second_process():
    from compress.backends.reuse import conversions

    net, example = _small_net(), (torch.zeros(1, 1, 8, 8),)
    with conversions():
        ahead = convert_ahead(net, example, [Job("tflite", "fp32", None, "minmax", True)])
    assert ahead.process.returncode is not None  # stopped and reaped when the run's block ended
    assert not _alive(ahead.process.pid)


def _marked_processes(mark: str) -> list[int]:
    """Live processes whose environment holds ``mark``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _alive(int(entry)):
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if mark.encode() in environ.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_command_that_fails_after_starting_the_second_process_leaves_none_behind(zoo_checkpoint, tmp_path):
    import uuid

    mark = f"COMPRESS_TEST_MARK={uuid.uuid4().hex}"
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"not an npz")
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(zoo_checkpoint("mnist_cnn")), "--data",
                           str(bad), "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
    deadline = time.monotonic() + 30
    while _marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _marked_processes(mark) == []  # the exit handlers stopped the prewarmed second process
