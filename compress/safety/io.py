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
import tempfile
from pathlib import Path
from typing import Iterator

from compress.safety.jsonsafe import dumps
from compress.errors import EnvironmentFailure, UsageError

LOW_SPACE_BYTES = 1 << 20  # a failure while a folder has less than this (or 2 % of a small disk) free: the disk is full


class DiskFull(EnvironmentFailure):
    """No space left on the device holding ``path`` (exit 3); ``temporary``: ``path`` is on the temporary folder's
    device (``$TMPDIR``), not the run directory's, so that folder is named."""

    def __init__(self, path: str | os.PathLike, temporary: bool = False):
        self.path = str(path)
        if temporary:
            super().__init__(f"no space left in the temporary folder {tempfile.gettempdir()} ($TMPDIR): free space there "
                             "or set TMPDIR to a folder with room, and rerun")
        else:
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
    """Standard JSON (non-finite floats as null, see compress.safety.jsonsafe), written atomically."""
    write_text_atomic(path, dumps(obj) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    from compress.catalog import file_sha256

    return file_sha256(path)


def make_run_dir(path: str | os.PathLike) -> Path:
    """Create the run directory ``path`` (and its parents).

    The run directory is the user's ``--out``: naming an existing file (or a path under one), a symlink loop or a
    symlink to nothing, a read-only, forbidden or impossible place (``/proc/x``) is bad input, exit 2; a full disk is
    DiskFull, exit 3; any other failure is the environment, exit 3.

    Example:
        >>> make_run_dir("runs/mnist")
        PosixPath('runs/mnist')
    """
    path = Path(path)
    refuse_bad_link(path, "--out")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is an existing file; give a directory for the run")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--out {path}: a part of the path is an existing file; give a directory for the run") from None
    except OSError as exc:
        raise _unmakeable(exc, path, f"the run directory {path}", "choose another --out") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to the run directory {path}: permission denied or read-only; choose another --out")
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse (UsageError, exit 2) a file path that cannot be written, before any work: a directory, a symlink loop or
    a symlink to nothing, a folder that cannot be made or written (``/proc/x.pt``). Its folder is created.

    Example:
        >>> check_output_file("models/mnist.pt")
        PosixPath('models/mnist.pt')
    """
    path = Path(path)
    refuse_bad_link(path, option)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"{option} {path}: a part of the path is an existing file; give a path in a folder") from None
    except OSError as exc:
        raise _unmakeable(exc, path.parent, f"{path}", f"choose another {option}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def refuse_bad_link(path: str | os.PathLike, option: str) -> None:
    """UsageError when ``path`` (or a folder above it) is a symlink loop or a symlink to nothing."""
    path = Path(path)
    try:
        path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 says RuntimeError("Symlink loop from ..."), later ones OSError(ELOOP)
        raise UsageError(f"{option} {path} runs into a symlink loop; fix the link or give another path") from None
    for part in (path, *path.parents):
        if part.is_symlink() and not part.exists():
            raise UsageError(f"{option} {path}: {part} is a symlink to {os.readlink(part)}, which does not exist; "
                             "fix the link or give another path")


def _unmakeable(exc: OSError, folder: Path, what: str, remedy: str) -> Exception:
    """The error for ``folder`` that could not be created or written: DiskFull (exit 3), a UsageError when the place is
    impossible or forbidden (exit 2), else an EnvironmentFailure (exit 3)."""
    cause = disk_full_cause(exc, folder)
    if cause is not None:
        return cause
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL):
        return UsageError(f"cannot write to {what}: {exc.strerror}; {remedy}")
    return EnvironmentFailure(f"cannot create {what}: {exc.strerror or exc}")


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
            written = Path(link.filename).parent if link.filename else None
            full = full_folder(*folders) or written or (folders[0] if folders else "?")
            return DiskFull(full, temporary=_on_temporary_device(full, folders))
    if isinstance(exc, OSError) and exc.errno not in (None, errno.EIO):
        return None  # the system named another cause (read-only, permission, missing file)
    if isinstance(exc, Exception):
        folder = full_folder(*folders)
        if folder is not None:
            return DiskFull(folder, temporary=_on_temporary_device(folder, folders))
    return None


def _on_temporary_device(full: str | os.PathLike, folders: tuple) -> bool:
    """Whether the full folder ``full`` is on the temporary folder's file system and not on the first of ``folders``'
    (the run directory's): then $TMPDIR is what to free or move."""
    def device(folder) -> int | None:
        existing = Path(folder).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            return existing.stat().st_dev
        except OSError:
            return None

    full_device = device(full)
    return (full_device is not None and full_device == device(tempfile.gettempdir())
            and (not folders or device(folders[0]) != full_device))


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
