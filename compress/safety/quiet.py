"""Third-party noise off the user's terminal and off stdout: native logs (absl, TFLite converter, XNNPACK, oneDNN),
foreign Python warnings (torch's LeafSpec FutureWarnings), library loggers (torchao's ``Failed to load ...
_C_mxfp8``, litert-torch's ``WARNING:root:Signature 'serving_default'``), progress bars (ai-edge-quantizer's
``Applying Transformations to tensors``), ExecuTorch's ``[cpuinfo_utils.cpp:71]`` lines and prints on stdout
(onnxruntime's ``failed in shape inference``).

The CLI calls :func:`silence_third_party` once at start-up unless ``--verbose`` or ``--debug`` is on the line.
Native libraries write to file descriptor 2 directly, so fd 2 is pointed at a private log file while Python's
``sys.stderr`` keeps the real terminal; on an internal failure (exit 3) the log's last lines are shown. While a
verb works (:func:`library_output_aside`), libraries' Python-level writes to ``sys.stderr`` go to that log too, and
with ``--json`` everything written to stdout (fd 1 and ``sys.stdout``, from Python or C) goes where stderr goes:
compress writes its story to :func:`story_stream` and its result to :func:`result_stream`.

Example:
    >>> log = silence_third_party()      # compress's own progress and errors still reach the terminal
    >>> with library_output_aside(json_out=True):
    ...     print("a library's line")    # into the log, not onto stdout
    ...     result_stream().write("{}\n")  # the one JSON document, on the real stdout
    >>> native_log_tail(log, lines=20)   # what the native libraries said, for an exit-3 message
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, TextIO

# Library loggers whose INFO/WARNING lines are not the user's business (their errors reach the user as compress's):
# torch's here, each format's in its record (compress.backends: ``loggers``).
TORCH_LOGGERS = ("torch", "torchao")


def third_party_loggers() -> list[str]:
    from compress.backends import format_loggers

    return [*TORCH_LOGGERS, *format_loggers()]
# Native log levels, set before the libraries load: 3 = errors only (TensorFlow/LiteRT, glog, absl).
NATIVE_LOG_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3", "ABSL_MIN_LOG_LEVEL": "3"}
_STREAMS: dict[str, TextIO] = {}  # "terminal": the user's stderr, "log": the native log (silenced); "result": stdout


def silence_third_party() -> Path:
    """Send native fd-2 output to a log file, drop warnings not raised by compress, quiet library loggers.

    Returns the log file's path (deleted by the caller when the process ends).
    """
    for key, value in NATIVE_LOG_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"compress(\.|$)")
    for name in third_party_loggers():
        logging.getLogger(name).setLevel(logging.ERROR)
    fd, path = tempfile.mkstemp(prefix="compress-native-", suffix=".log")
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    os.set_inheritable(2, True)
    encoding = sys.stderr.encoding
    sys.stderr = _STREAMS["terminal"] = os.fdopen(terminal, "w", buffering=1, encoding=encoding, errors="backslashreplace")
    _STREAMS["log"] = open(2, "w", buffering=1, encoding=encoding, errors="backslashreplace", closefd=False)
    # logging.warning() on the root logger (litert-torch's) would set up a handler on the terminal: the log has it
    logging.basicConfig(stream=_STREAMS["log"], format="%(levelname)s:%(name)s:%(message)s")
    return Path(path)


def story_stream() -> TextIO:
    """Where compress's own progress, warnings and errors go: the user's stderr (also while libraries' is aside)."""
    return _STREAMS.get("terminal") or sys.stderr


def result_stream() -> TextIO:
    """Where compress's result goes (tables, the ``--json`` document): the real stdout, also while fd 1 is aside."""
    return _STREAMS.get("result") or sys.stdout


@contextlib.contextmanager
def library_output_aside(json_out: bool) -> Iterator[None]:
    """For a verb's work: after :func:`silence_third_party`, libraries' writes to ``sys.stderr`` go to the log; with
    ``json_out`` nothing but :func:`result_stream` reaches stdout (fd 1 and ``sys.stdout`` point where fd 2 does).
    Re-entered (a verb inside a verb), it changes nothing more."""
    if "result" in _STREAMS or "aside" in _STREAMS:
        yield
        return
    saved_stderr, saved_stdout = sys.stderr, sys.stdout
    saved_fd = _stdout_aside(saved_stdout) if json_out else None
    if "log" in _STREAMS:
        sys.stderr = _STREAMS["aside"] = _STREAMS["log"]
    try:
        yield
    finally:
        if saved_fd is not None:
            _stdout_back(saved_fd, saved_stdout)
        sys.stderr = saved_stderr
        _STREAMS.pop("aside", None)


def _stdout_aside(python_stdout: TextIO) -> int | None:
    """Point fd 1 and ``sys.stdout`` where fd 2 points; keep the real stdout as ``result``. The saved fd 1 (None when
    ``sys.stdout`` is not fd 1, as under a test runner: then it stays the result, and only fd 1 moves)."""
    python_stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    try:
        on_fd1 = python_stdout.fileno() == 1
    except (AttributeError, ValueError, io.UnsupportedOperation):
        on_fd1 = False
    _STREAMS["result"] = os.fdopen(os.dup(saved), "w", encoding=python_stdout.encoding or "utf-8") if on_fd1 else python_stdout
    return saved


def _stdout_back(saved: int, python_stdout: TextIO) -> None:
    """Undo :func:`_stdout_aside`: what C's stdio buffered goes where it was written (aside), then fd 1 is stdout."""
    sys.stdout.flush()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)
    result = _STREAMS.pop("result")
    result.flush()
    if result is not python_stdout:
        result.close()
    os.dup2(saved, 1)
    os.close(saved)
    sys.stdout = python_stdout


def native_log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` non-empty lines the native libraries wrote (empty when they said nothing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
