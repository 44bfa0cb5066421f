"""Convert a run's TFLite (and ``.pte``) files in a second process while this one exports and quantizes ONNX.

On a small model the litert-torch conversions (fp32, and PT2E int8 with calibration) are about half of what
`compress quantize` computes, and they do not depend on the ONNX work. So at the start of a run the torch module, the
example inputs and the calibration set go to a second Python process over a pipe (objects of this process, pickled
here, never read from a file), which converts the jobs the pre-flight and the exports will ask for, one thread each,
and sends the bytes back. They enter the run's conversion cache (compress.export.reuse) under the keys the exports
compute, so nothing is converted twice and every file holds the bytes an in-process conversion writes. When the
second process cannot help (one core, a module whose classes are not compress's or torch's, a pickling or
conversion failure), this process converts as before; errors then surface with their usual messages.

Example:
    >>> with conversions():
    ...     ahead = convert_ahead(module, example, [Job("tflite", "int8", calib, "minmax", True)])
    ...     ...                      # ONNX work, meanwhile
    ...     ahead.collect()          # the cache holds the int8 conversion; the pre-flight and export reuse it
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import dataclass

from torch import nn

from compress.data import Dataset

TRUSTED_MODULES = ("torch", "compress")  # module classes the second process may import to unpickle the model


@dataclass(frozen=True)
class Job:
    """One conversion: what ``build_tflite`` / ``build_pte`` take besides the module and example (nothing excluded)."""

    fmt: str                # tflite | pte
    precision: str
    calib_data: Dataset | None
    calibration: str
    per_channel: bool


_WARM: list[tuple[subprocess.Popen, int]] = []  # a second process started by prewarm(), waiting for its request


class Ahead:
    """The second process at work; ``collect()`` waits for it and keeps what it converted."""

    def __init__(self, process: subprocess.Popen, reader: int, keys: list[tuple]):
        self.process, self.reader, self.keys = process, reader, keys

    def collect(self) -> int:
        """Wait for the second process, keep its conversions in the run's cache; how many it made (0 on failure)."""
        from compress.export.reuse import keep

        with os.fdopen(self.reader, "rb") as pipe:
            data = pipe.read()
        self.process.wait()
        try:
            answers = pickle.loads(data)  # written by the second process this one started, over its own pipe
        except Exception:
            return 0
        made = 0
        for key, answer in zip(self.keys, answers):
            if answer is not None:
                result, notes = answer
                keep(key, result, notes)
                made += 1
        return made


def prewarm() -> None:
    """Start the second process now, so that it imports torch and litert-torch while this one loads the model; the
    next ``convert_ahead`` hands it its request (unused, it is stopped at exit)."""
    if not _WARM and (os.cpu_count() or 1) >= 2:
        _WARM.append(_spawn())


def _spawn() -> tuple[subprocess.Popen, int]:
    reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "compress.export.ahead", str(writer)], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, pass_fds=(writer,))
    os.close(writer)
    atexit.register(_stop, process)
    return process, reader


def _stop(process: subprocess.Popen) -> None:
    """At exit: a second process still converting (a run that ended before collecting) or still waiting is stopped."""
    if process.poll() is None:
        process.kill()
        process.wait()


def convert_ahead(module: nn.Module, example: tuple, jobs: list[Job], program: str | None = None) -> Ahead | None:
    """Start converting ``jobs`` of ``module`` in a second process; None when that cannot help here.

    ``program``: the torch.export ``.pt2`` file ``module`` was loaded from. Modules unlifted from a program do not
    pickle (torch puts a local function in them), so the second process loads that file itself, through the same
    checks as any model file (compress.safe_load: nothing in it runs), and converts only if its weights are exactly
    ``module``'s."""
    if not jobs or (os.cpu_count() or 1) < 2 or not _classes_importable(module):
        return None
    keys = [_key(module, example, job) for job in jobs]
    request = {"module": module, "example": example, "jobs": jobs}
    try:
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        if program is None:  # converted here, as before
            return None
        from compress.export.reuse import model_key

        request = {**request, "module": None, "program": str(program), "digest": model_key(module)[1]}
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    process, reader = _WARM.pop() if _WARM and _WARM[-1][0].poll() is None else _spawn()
    threading.Thread(target=_send, args=(process.stdin, data), daemon=True).start()
    return Ahead(process, reader, keys)


def _classes_importable(module: nn.Module) -> bool:
    """Every submodule's class comes from torch or compress: unpickling the model imports nothing of the user's."""
    return all(type(part).__module__.split(".")[0] in TRUSTED_MODULES for part in module.modules())


def _key(module: nn.Module, example: tuple, job: Job) -> tuple:
    from compress.export import pte, tflite

    keyed = {"tflite": tflite.conversion_key, "pte": pte.conversion_key}[job.fmt]
    return keyed(module, example, job.precision, job.calib_data, job.calibration, job.per_channel, [])


def _send(stdin, request: bytes) -> None:
    try:
        with stdin:
            stdin.write(request)
    except (BrokenPipeError, OSError):  # the second process ended early: collect() finds nothing
        pass


def _convert(module: nn.Module, example: tuple, job: Job) -> tuple[tuple, list[str]] | None:
    """One job's ``(result, notes)`` as ``build_tflite`` / ``build_pte`` return them; None when it failed."""
    from compress.export.pt2e import eval_mode
    from compress.export.pte import build_pte
    from compress.export.tflite import build_tflite

    build = {"tflite": build_tflite, "pte": build_pte}[job.fmt]
    notes: list[str] = []
    try:
        result = build(eval_mode(module), example, job.precision, job.calib_data, job.calibration, job.per_channel, [], notes)
    except Exception:  # this process's caller converts it again and reports the error properly
        return None
    return result, notes


def _program_module(path: str, digest: str) -> nn.Module | None:
    """The module of the ``.pt2`` at ``path`` (loaded with compress's checks, nothing trusted), if its weights digest
    to ``digest`` (compress.export.reuse.model_key); None otherwise."""
    from compress.export.pt2e import eval_mode
    from compress.export.reuse import model_key
    from compress.model import load_model

    try:
        module = eval_mode(load_model(path).module)
    except Exception:
        return None
    return module if model_key(module)[1] == digest else None


def main(writer: int) -> None:
    """The second process: read the request from stdin, convert, write the answers to ``writer``."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # the first process works on the other core
    for heavy in ("compress.export.tflite", "litert_torch"):  # imported while the first process loads the model
        with contextlib.suppress(ImportError):
            importlib.import_module(heavy)
    received = sys.stdin.buffer.read()
    if not received:  # prewarmed, then not needed
        return
    request = pickle.loads(received)  # sent by the process that started this one
    module = request["module"]
    if module is None:
        module = _program_module(request["program"], request["digest"])
    answers = [_convert(module, request["example"], job) if module is not None else None for job in request["jobs"]]
    with os.fdopen(writer, "wb") as pipe:
        pipe.write(pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    main(int(sys.argv[1]))
