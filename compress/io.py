"""Atomic file writes: nothing half-written ever looks finished.

Example:
    >>> with atomic_path("out/model.onnx") as tmp:
    ...     write_somehow(tmp)          # renamed to out/model.onnx only on success
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

from compress.jsonsafe import dumps


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Standard JSON (non-finite floats as null, see compress.jsonsafe), written atomically."""
    write_text_atomic(path, dumps(obj) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_run_dir(path: str | os.PathLike) -> Path:
    """Create the run directory ``path`` (and its parents).

    Naming an existing file (or a path under one) is bad input, exit 2; a directory that cannot be created or
    written (read-only file system, permissions) is the environment, exit 3 with the cause.

    Example:
        >>> make_run_dir("runs/mnist")
        PosixPath('runs/mnist')
    """
    from compress.errors import EnvironmentFailure, UsageError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is an existing file; give a directory for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--out {path}: a part of the path is an existing file; give a directory for the run") from None
    except OSError as exc:
        raise EnvironmentFailure(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EnvironmentFailure(f"cannot write into the run directory {path}: permission denied or read-only")
    return path
