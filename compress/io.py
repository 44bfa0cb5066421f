"""Atomic, durable file writes, and a full disk named as such: nothing half-written ever looks finished.

Example:
    >>> with atomic_path("out/model.onnx") as tmp:
    ...     write_somehow(tmp)          # fsynced and renamed to out/model.onnx only on success
    >>> with disk_full_named("runs/x", "/tmp/work"):   # ENOSPC, or any failure while a folder is full -> DiskFull
    ...     quantize_somehow()
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from compress.jsonsafe import dumps
from compress.errors import EnvironmentFailure, UsageError

LOW_SPACE_BYTES = 1 << 20  # a failure while a folder has less than this (or 2 % of a small disk) free: the disk is full


class DiskFull(EnvironmentFailure):
    """No space left on the device holding ``path`` (exit 3)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        super().__init__(f"no space left on device ({self.path}): free space and rerun")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; fsync it and move it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def move_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename ``source`` onto ``target`` (same file system) durably; the parent is created."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    fsync_dir(target.parent)
    return target


def copy_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` through a temporary name (the parent is created)."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


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

    The run directory is the user's ``--out``: naming an existing file (or a path under one), a read-only or
    forbidden place is bad input, exit 2; a full disk is DiskFull, exit 3; any other failure is the environment, exit 3.

    Example:
        >>> make_run_dir("runs/mnist")
        PosixPath('runs/mnist')
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is an existing file; give a directory for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--out {path}: a part of the path is an existing file; give a directory for the run") from None
    except OSError as exc:
        cause = disk_full_cause(exc, path)
        if cause is not None:
            raise cause from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UsageError(f"cannot write to the run directory {path}: {exc.strerror}; choose another --out") from None
        raise EnvironmentFailure(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to the run directory {path}: permission denied or read-only; choose another --out")
    return path


def full_folder(*folders: str | os.PathLike) -> Path | None:
    """The first of ``folders`` (or its nearest existing parent) that is (nearly) full, else None."""
    for folder in folders:
        existing = Path(folder).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            usage = shutil.disk_usage(existing)
            if usage.free < min(LOW_SPACE_BYTES, usage.total // 50):
                return Path(folder)
        except OSError:
            continue
    return None


def disk_full_cause(exc: BaseException, *folders: str | os.PathLike) -> DiskFull | None:
    """A DiskFull for ``exc`` when it is ENOSPC, or when one of ``folders`` is (nearly) full: third-party writers
    (onnxruntime, protobuf) report a failed write later, as e.g. "Wire format was corrupt" reading the truncated file."""
    if isinstance(exc, DiskFull):
        return exc
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(folders[0] if folders else Path(link.filename).parent if link.filename else "?")
    if isinstance(exc, OSError) and exc.errno not in (None, errno.EIO):
        return None  # the system named another cause (read-only, permission, missing file)
    if isinstance(exc, Exception):
        folder = full_folder(*folders)
        if folder is not None:
            return DiskFull(folder)
    return None


def unwritable_message(exc: BaseException) -> str | None:
    """One line for a write refused by the file system (read-only, no permission, full), else None."""
    cause = disk_full_cause(exc)
    if cause is not None:
        return str(cause)
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {exc.filename or 'a file'}: {exc.strerror}; make the folder writable or choose another one"
    return None


@contextlib.contextmanager
def disk_full_named(*folders: str | os.PathLike) -> Iterator[None]:
    """Re-raise a failure inside the block as DiskFull when the disk is its cause (see ``disk_full_cause``).

    Place it inside any ``TemporaryDirectory`` it names, so the space is measured before the cleanup frees it.
    """
    try:
        yield
    except Exception as exc:
        cause = disk_full_cause(exc, *folders)
        if cause is None or cause is exc:
            raise
        raise cause from exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
