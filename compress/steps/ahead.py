"""Convert a run's TFLite (and ``.pte``) files in a second process while this one exports and quantizes ONNX.

On a small model the litert-torch conversions (fp32, and PT2E int8 with calibration) are about half of what
`compress quantize` computes, and they do not depend on the ONNX work. So at the start of a run the torch module, the
example inputs and the calibration set go to a second Python process over a pipe (objects of this process, pickled
here, never read from a file), which converts the jobs the pre-flight and the exports will ask for, one thread each,
and sends each one's bytes back as soon as it is made. Each is ``expect``-ed in the run's conversion cache
(compress.backends.reuse) under the key the export computes: the first export that asks for it waits for that one
answer only, so the ONNX work goes on meanwhile, nothing is converted twice and every file holds the bytes an
in-process conversion writes. The request carries this process's registrations (compress.backends.extensions), so a
plugin's calibration method or format converts there too. The second process dies with this one, however this one ends, SIGKILL included
(compress.safety.lifeline). When the second process cannot help (one core, a module whose classes are not compress's or
torch's, a pickling or conversion failure), this process converts as before; errors then surface with their usual
messages.

Example:
    >>> with conversions():
    ...     ahead = convert_ahead(module, example, [Job("tflite", "int8", calib, "minmax", True)])
    ...     ...                      # ONNX work, meanwhile
    ...     build_tflite(module, ...)  # waits for the int8 conversion, made there, and keeps it
"""
from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager

if TYPE_CHECKING:  # the second process sets its parent-death signal before it imports anything heavy
    from torch import nn

    from compress.data import Dataset

TRUSTED_MODULES = ("torch", "compress")  # module classes the second process may import to unpickle the model


@dataclass(frozen=True)
class Job:
    """One conversion: what ``build_tflite`` / ``build_pte`` take besides the module and example (nothing excluded)."""

    fmt: str                # a format with ``converted_ahead`` (tflite, pte)
    precision: str
    calib_data: Dataset | None
    calibration: str
    per_channel: bool


_WARM: list[tuple[subprocess.Popen, int]] = []  # a second process started by prewarm(), waiting for its request


class Ahead:
    """The second process at work. A thread of this process reads its answers off the pipe as they come (so it never
    waits to write one and goes on to the next job); ``wait_for`` hands them to the run's cache, in the order of the
    jobs, when they are needed."""

    def __init__(self, process: subprocess.Popen, reader: int, jobs: list[Job], keys: list[tuple],
                 waiting: Callable[[], ContextManager]):
        self.process, self.keys, self.waiting = process, keys, waiting
        self.formats = list(dict.fromkeys(job.fmt for job in jobs))  # what it converts
        self.received = 0  # answers handed to the run's cache (keys[:received] are kept or known failed)
        self.made = 0
        self._arrived: list = []  # answers read off the pipe so far (None: that conversion failed there)
        self._ended = False       # the pipe is at its end: no more answers
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_all, args=(reader,), daemon=True)
        self._reader.start()

    def _read_all(self, reader: int) -> None:
        try:
            while True:
                answer = _read_frame(reader)
                with self._changed:
                    if answer is _ENDED:
                        self._ended = True
                    else:
                        self._arrived.append(answer)
                    self._changed.notify_all()
                if answer is _ENDED:
                    return
        finally:
            os.close(reader)

    def _here(self, index: int) -> bool:
        return len(self._arrived) > index or self._ended

    def wait_for(self, index: int) -> None:
        """Keep the answers up to the ``index``-th job's in the run's cache, waiting for them if they have not come;
        a second process that ended early leaves the rest to this one. A wait, and reaping the process (its CPU time)
        once it has answered everything or ended, run in ``waiting()``."""
        if self.received > index:
            return
        with self._changed:
            here = self._here(index)
            if self._ended and len(self._arrived) <= self.received:  # it ended (and was reaped): nothing more comes
                return
        from compress.backends.reuse import keep

        with self.waiting() if not here else contextlib.nullcontext():
            with self._changed:
                self._changed.wait_for(lambda: self._here(index))
                arrived, ended = self._arrived[self.received:index + 1], self._ended
        for answer in arrived:
            if answer is not None:
                result, notes = answer
                keep(self.keys[self.received], result, notes)
                self.made += 1
            self.received += 1
        if self.received == len(self.keys) or ended:
            with self.waiting():  # reaping it counts all its CPU time: in its own phase, whichever phase asked
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=30)  # it exits once its last answer is written
                self.close()

    def collect(self) -> int:
        """Wait for every answer; how many conversions the second process made."""
        self.wait_for(len(self.keys) - 1)
        return self.made

    def close(self) -> None:
        """Stop the second process if it is still converting (the run ended first), and reap it."""
        _stop(self.process)
        self._reader.join(timeout=30)  # its pipe ends with it


_ENDED = object()  # the second process closed its pipe before the answer asked for


def _read_frame(reader: int):
    """The next answer on the pipe ``reader`` (None: that conversion failed there), or ``_ENDED``."""
    head = _read_exactly(reader, 8)
    body = _read_exactly(reader, struct.unpack(">Q", head)[0]) if len(head) == 8 else b""
    try:
        return pickle.loads(body)  # written by the second process this one started, over its own pipe
    except Exception:
        return _ENDED


def _read_exactly(reader: int, size: int) -> bytes:
    """``size`` bytes, or fewer if the pipe ends first."""
    parts, left = [], size
    while left:
        part = os.read(reader, min(left, 1 << 20))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _write_frame(pipe, answer) -> None:
    body = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(struct.pack(">Q", len(body)) + body)
    pipe.flush()


def prewarm() -> None:
    """Start the second process now, so that it imports torch and litert-torch while this one loads the model; the
    next ``convert_ahead`` hands it its request (unused, it is stopped at exit)."""
    if not _WARM and (os.cpu_count() or 1) >= 2:
        _WARM.append(_spawn())


def _spawn() -> tuple[subprocess.Popen, int]:
    reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "compress.steps.ahead", str(writer), str(os.getpid())],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(writer,))
    os.close(writer)
    atexit.register(_stop, process)
    return process, reader


def _stop(process: subprocess.Popen) -> None:
    """A second process still converting (a run that ended before it answered) or still waiting is stopped; reaped."""
    if process.poll() is None:
        process.kill()
    process.wait()


def convert_ahead(module: nn.Module, example: tuple, jobs: list[Job], program: str | None = None,
                  waiting: Callable[[], ContextManager] = contextlib.nullcontext) -> Ahead | None:
    """Start converting ``jobs`` of ``module`` in a second process, each ``expect``-ed in the running
    ``conversions()`` block; None when that cannot help here. ``waiting()``: a context around each wait for it.

    ``program``: the torch.export ``.pt2`` file ``module`` was loaded from. Modules unlifted from a program do not
    pickle (torch puts a local function in them), so the second process loads that file itself, through the same
    checks as any model file (compress.loading.safe_load: nothing in it runs), and converts only if its weights are exactly
    ``module``'s."""
    from compress.backends.reuse import expect, on_close

    if not jobs or (os.cpu_count() or 1) < 2 or not _classes_importable(module):
        return None
    keys = [_key(module, example, job) for job in jobs]
    try:
        registered = _registrations()
    except Exception:  # a plugin's record that does not pickle by reference: converted here
        return None
    request = {"module": module, "example": example, "jobs": jobs, **registered}
    try:
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        if program is None:  # converted here, as before
            return None
        from compress.backends.reuse import model_key

        request = {**request, "module": None, "program": str(program), "digest": model_key(module)[1]}
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
    process, reader = _WARM.pop() if _WARM and _WARM[-1][0].poll() is None else _spawn()
    threading.Thread(target=_send, args=(process.stdin, data), daemon=True).start()
    ahead = Ahead(process, reader, jobs, keys, waiting)
    for index, key in enumerate(keys):
        expect(key, lambda index=index: ahead.wait_for(index))
    on_close(ahead.close)
    return ahead


def _registrations() -> dict:
    """What the second process needs to know this process's registrations (a plugin's format, precision or
    calibration method, compress.backends.extensions): where they are imported from and the records, pickled here
    (by reference: unpickling imports the modules that define them, which this process has run already)."""
    from compress.backends import extensions

    return {"path": list(sys.path), "extensions": pickle.dumps(extensions(), protocol=pickle.HIGHEST_PROTOCOL)}


def _install(request: dict) -> None:
    """Register this process's registrations (``_registrations()``) in the second process."""
    from compress.backends import install

    sys.path[:0] = [entry for entry in request["path"] if entry not in sys.path]
    install(pickle.loads(request["extensions"]))  # written by the process that started this one


def _classes_importable(module: nn.Module) -> bool:
    """Every submodule's class comes from torch or compress: unpickling the model imports nothing of the user's."""
    return all(type(part).__module__.split(".")[0] in TRUSTED_MODULES for part in module.modules())


def _key(module: nn.Module, example: tuple, job: Job) -> tuple:
    from compress.catalog import get

    keyed = get(job.fmt).converted_ahead.key
    return keyed(module, example, job.precision, job.calib_data, job.calibration, job.per_channel, [])


def _send(stdin, request: bytes) -> None:
    try:
        with stdin:
            stdin.write(request)
    except (BrokenPipeError, OSError):  # the second process ended early: its answers end there
        pass


def _convert(module: nn.Module, example: tuple, job: Job) -> tuple[tuple, list[str]] | None:
    """One job's ``(result, notes)`` as ``build_tflite`` / ``build_pte`` return them; None when it failed."""
    from compress.backends.pt2e import eval_mode
    from compress.catalog import get

    build = get(job.fmt).converted_ahead.build
    notes: list[str] = []
    try:
        result = build(eval_mode(module), example, job.precision, job.calib_data, job.calibration, job.per_channel, [], notes)
    except Exception:  # this process's caller converts it again and reports the error properly
        return None
    return result, notes


def _program_module(path: str, digest: str) -> nn.Module | None:
    """The module of the ``.pt2`` at ``path`` (loaded with compress's checks, nothing trusted), if its weights digest
    to ``digest`` (compress.backends.reuse.model_key); None otherwise."""
    from compress.backends.pt2e import eval_mode
    from compress.backends.reuse import model_key
    from compress.loading.model import load_model

    try:
        module = eval_mode(load_model(path).module)
    except Exception:
        return None
    return module if model_key(module)[1] == digest else None


def main(writer: int) -> None:
    """The second process: read the request from stdin, convert, write each answer to ``writer`` when it is made."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # the first process works on the other core
    for heavy in ("compress.backends.tflite.export", "litert_torch"):  # imported while the first process loads the model
        with contextlib.suppress(ImportError):
            importlib.import_module(heavy)
    received = sys.stdin.buffer.read()
    if not received:  # prewarmed, then not needed
        return
    request = pickle.loads(received)  # sent by the process that started this one
    _install(request)
    module = request["module"]
    if module is None:
        module = _program_module(request["program"], request["digest"])
    with os.fdopen(writer, "wb") as pipe:
        for job in request["jobs"]:
            try:
                _write_frame(pipe, _convert(module, request["example"], job) if module is not None else None)
            except BrokenPipeError:  # the first process no longer needs them
                return


if __name__ == "__main__":
    from compress.safety.lifeline import die_with_parent

    die_with_parent(int(sys.argv[2]))
    main(int(sys.argv[1]))
    # everything is written and the pipe closed: exit now, without the seconds the interpreter spends unloading
    # torch, jax and litert-torch, for which the first process would wait to reap it
    os._exit(0)
