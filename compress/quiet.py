"""Third-party noise off the user's stderr: native logs (absl, TFLite converter, XNNPACK, oneDNN), foreign Python
warnings (torch's LeafSpec FutureWarnings) and library loggers (torchao's ``Failed to load ... _C_mxfp8``).

The CLI calls :func:`silence_third_party` once at start-up unless ``--verbose`` or ``--debug`` is on the line.
Native libraries write to file descriptor 2 directly, so fd 2 is pointed at a private log file while Python's
``sys.stderr`` keeps the real terminal; on an internal failure (exit 3) the log's last lines are shown.

Example:
    >>> log = silence_third_party()      # compress's own progress and errors still reach the terminal
    >>> native_log_tail(log, lines=20)   # what the native libraries said, for an exit-3 message
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

# Library loggers whose INFO/WARNING lines are not the user's business (their errors reach the user as compress's).
THIRD_PARTY_LOGGERS = ("torch", "torchao", "absl", "tensorflow", "onnxscript", "onnxruntime", "litert_torch", "ai_edge_torch")
# Native log levels, set before the libraries load: 3 = errors only (TensorFlow/LiteRT, glog, absl).
NATIVE_LOG_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3", "ABSL_MIN_LOG_LEVEL": "3"}


def silence_third_party() -> Path:
    """Send native fd-2 output to a log file, drop warnings not raised by compress, quiet library loggers.

    Returns the log file's path (deleted by the caller when the process ends).
    """
    for key, value in NATIVE_LOG_ENV.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"compress(\.|$)")
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    fd, path = tempfile.mkstemp(prefix="compress-native-", suffix=".log")
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    os.set_inheritable(2, True)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    return Path(path)


def native_log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` non-empty lines the native libraries wrote (empty when they said nothing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]
