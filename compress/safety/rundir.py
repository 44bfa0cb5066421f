"""A run directory while a command uses it: locked, with a staging area for files not yet verified.

Layout: ``.lock`` (who holds the directory), ``.partial/`` (artifacts written and verified under their own names
before they get them in the run directory; removed on every exit), ``failed/`` (artifacts that failed verification,
listed as failed in report.json).

Example:
    >>> with run_directory("runs/mnist", "quantize") as run_dir:
    ...     export_onnx(handle, staged(run_dir, "model.fp32.onnx"))
    ...     publish(run_dir, "model.fp32.onnx")          # after verification: runs/mnist/model.fp32.onnx
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import inspect
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

from compress.errors import UsageError
from compress.safety.io import disk_full_cause, fsync_file, make_run_dir, move_atomic, refuse_bad_link
from compress.safety.jsonsafe import loads

LOCK = ".lock"
STAGING = ".partial"
FAILED = "failed"
_HELD: dict[str, int] = {}  # run directories this process holds -> nesting depth (a recipe stage inside a run)


@contextlib.contextmanager
def run_directory(path: str | os.PathLike, command: str) -> Iterator[Path]:
    """Create and lock ``path`` for ``command``; on any exit remove the staging area and release the lock.

    A second process on a held directory gets a UsageError (exit 2) naming the holder; a lock left by a dead
    process does not block (flock dies with its holder). A failure while the disk is full becomes DiskFull (exit 3).
    """
    run_dir = Path(path)
    refuse_bad_link(run_dir, "--out")  # before resolve(), which a symlink loop makes raise
    key = str(run_dir.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield run_dir
        finally:
            _HELD[key] -= 1
        return
    created = not run_dir.exists()
    fd = _lock(run_dir, command)
    _HELD[key] = 1
    try:
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)  # leftovers of a killed run
        yield run_dir
    except Exception as exc:
        cause = disk_full_cause(exc, run_dir)
        if cause is None or cause is exc:
            raise
        raise cause from exc
    finally:
        del _HELD[key]
        shutil.rmtree(run_dir / STAGING, ignore_errors=True)
        os.close(fd)  # releases the flock
        if created and [p.name for p in run_dir.iterdir()] == [LOCK]:  # refused before writing anything: leave no trace
            (run_dir / LOCK).unlink(missing_ok=True)
            run_dir.rmdir()


def holds_run_dir(command: str, where: Callable[[dict], str | os.PathLike] = lambda args: args["out_dir"]):
    """Decorate an API function so its run directory (``where(arguments)``) is held for the whole call."""
    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def held(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with run_directory(where(bound.arguments), command):
                return function(*args, **kwargs)
        return held
    return decorate


def staged(run_dir: str | os.PathLike, filename: str) -> Path:
    """Where ``filename`` is written and verified before it gets its final name."""
    folder = Path(run_dir) / STAGING
    folder.mkdir(parents=True, exist_ok=True)
    return folder / filename


def located(run_dir: str | os.PathLike, filename: str) -> Path:
    """Where ``filename`` is now: verified (final name), staged, or failed."""
    run_dir = Path(run_dir)
    for path in (run_dir / filename, run_dir / STAGING / filename, run_dir / FAILED / filename):
        if path.exists():
            return path
    return run_dir / filename


def publish(run_dir: str | os.PathLike, filename: str) -> Path:
    """Give the staged, verified ``filename`` its final name (an older failed copy is removed)."""
    (Path(run_dir) / FAILED / filename).unlink(missing_ok=True)
    return move_atomic(Path(run_dir) / STAGING / filename, Path(run_dir) / filename)


def fail(run_dir: str | os.PathLike, filename: str) -> Path:
    """Move the staged ``filename`` to ``failed/`` (a final file of an earlier run by that name is removed)."""
    (Path(run_dir) / filename).unlink(missing_ok=True)
    return move_atomic(Path(run_dir) / STAGING / filename, Path(run_dir) / FAILED / filename)


def _lock(run_dir: Path, command: str) -> int:
    """Create ``run_dir`` (compress.safety.io.make_run_dir), open and flock its ``.lock``; write who holds it."""
    make_run_dir(run_dir)
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        cause = disk_full_cause(exc, run_dir)
        if cause is not None:
            raise cause from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UsageError(f"{run_dir} is in use by another compress process ({holder}): wait for it to finish "
                         "or choose another --out") from None
    record = {"pid": os.getpid(), "command": command, "argv": sys.argv,
              "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    fsync_file(run_dir / LOCK)
    return fd


def _holder(fd: int) -> str:
    try:
        record = loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "holder unknown"
    return f"pid {record.get('pid')}, compress {record.get('command')}, started {record.get('started')}"
