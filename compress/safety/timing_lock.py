"""One timing at a time per machine: a latency window never overlaps another compress timing on the same host.

Parallel trials or fleet recipes on one node would otherwise time their artifacts at once and each report the
other's load. The lock is a file lock in the host's lock directory (``$COMPRESS_TIMING_LOCK_DIR``, else ``/tmp``;
deliberately not ``$TMPDIR``: Ray nodes sharing one machine share its CPUs, so they must share the lock). Local worker
processes and Ray workers on the same host all take it; hosts time independently. The entry records where and when.

Example:
    >>> with exclusive_timing("local") as where:
    ...     run_the_timed_loop()
    >>> where                      # {"host": "box", "node": "box", "window": [1760000000.12, 1760000001.57], ...}
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator


def lock_dir() -> Path:
    explicit = os.environ.get("COMPRESS_TIMING_LOCK_DIR")
    if explicit:
        return Path(explicit)
    return Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())


def node_identity() -> dict:
    """``{"host": hostname, "node": Ray node id inside a Ray worker, else the hostname}``."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")  # never imports Ray: only a process Ray already runs in has a node id
    node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else host
    return {"host": host, "node": node}


@contextlib.contextmanager
def exclusive_timing(target: str) -> Iterator[dict]:
    """Hold this host's timing lock for ``target`` while the block runs; the yielded dict gets the window (unix seconds).

    ``wait_s`` says how long the timing queued behind another one.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", target)
    path = lock_dir() / f"compress-timing-{name}.lock"
    where = node_identity()
    asked = time.time()
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        start = time.time()
        try:
            yield where
        finally:
            where.update(window=[round(start, 4), round(time.time(), 4)], wait_s=round(start - asked, 3))
            fcntl.flock(handle, fcntl.LOCK_UN)
