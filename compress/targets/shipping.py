"""Work on a machine that shares no filesystem with the driver: inputs go as bytes, outputs come back as bytes.

A worker runs in a fresh temporary directory of its own (also its cwd while the task runs), never at a driver path.
It returns every output file with the sha256 it computed; the driver writes them atomically into its run directory
and checks each sha256 again, so a file damaged on the way is never taken as the worker's.

Example:
    >>> inputs = pack({"model": "runs/m.pt"})                        # {"model": ("m.pt", b"...")}
    >>> with workdir("compress-trial-") as work:                     # on the worker
    ...     paths = unpack(inputs, work)                             # {"model": work/"inputs"/"m.pt"}
    ...     bundle = collect(work / "out")                           # {"files": {...}, "sha256": {...}}
    >>> land(bundle, Path("runs/study/trials/trial-0001"))           # on the driver: written, sha256 verified
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from compress.errors import EnvironmentFailure
from compress.safety.io import atomic_path, sha256_file
from compress.safety.timing_lock import node_identity


def pack(paths: dict[str, str | Path]) -> dict[str, tuple[str, bytes]]:
    """Read each input file on the driver: ``{key: (file name, bytes)}``."""
    return {key: (Path(path).name, Path(path).read_bytes()) for key, path in paths.items()}


def unpack(inputs: dict[str, tuple[str, bytes]], work: Path) -> dict[str, Path]:
    """Write shipped inputs under ``work/inputs/<key>/``; return their worker-local paths."""
    paths = {}
    for key, (name, data) in inputs.items():
        path = work / "inputs" / key / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[key] = path
    return paths


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory on this worker, the cwd while the block runs; removed afterwards."""
    previous = os.getcwd()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(previous)
        shutil.rmtree(work, ignore_errors=True)


def worker_identity(work: Path) -> dict:
    """Where a task ran: host, Ray node, process, its work directory and temp dir (the tests check they are not the driver's)."""
    return {**node_identity(), "pid": os.getpid(), "workdir": str(work), "tempdir": tempfile.gettempdir()}


def collect(folder: Path, skip: tuple[str, ...] = ()) -> dict:
    """Every file under ``folder`` (top-level names in ``skip`` left out) as bytes, with the sha256 computed here."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if relative.parts[0] not in skip:
            files[relative.as_posix()] = path.read_bytes()
    return {"files": files, "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}


def land(bundle: dict, folder: Path) -> list[Path]:
    """Write a bundle's files under ``folder`` (each atomically) and verify every sha256 against the worker's."""
    written = []
    for name, data in bundle["files"].items():
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise EnvironmentFailure(f"a worker returned the path {name!r}, outside its run directory; refused")
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
            if sha256_file(tmp) != bundle["sha256"][name]:
                raise EnvironmentFailure(f"{path}: sha256 differs from the one the worker computed; the transfer was damaged")
        written.append(path)
    return written
