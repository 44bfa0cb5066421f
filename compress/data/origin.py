"""Where a run's data came from, so later verbs (verify, bench, report compare) reuse it and notice when it changed.

A report's ``dataset`` records ``source`` (a built-in name, the absolute path of a .npz or image folder, or
``package.module:function``) and, for files, ``sha256`` of their bytes, beside the ``split_seed``.

Example:
    >>> data_origin("digits32.npz")
    {'source': '/home/me/digits32.npz', 'sha256': '3f1c...'}
    >>> recorded_data({"name": "digits32", "source": "/home/me/digits32.npz", "sha256": "3f1c..."})
    ('/home/me/digits32.npz', None)        # or a warning as the second item when the file changed
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def _sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def data_origin(spec: str) -> dict:
    """``{"source", "sha256"}`` of a ``--data`` value: a file or folder by absolute path and content hash, else as given."""
    path = Path(spec).expanduser()
    if path.exists():
        return {"source": str(path.resolve()), "sha256": _sha256(path)}
    return {"source": spec, "sha256": None}


def recorded_data(dataset: dict | None) -> tuple[str | None, str | None]:
    """The ``--data`` value to reuse from a report's ``dataset``, and a warning when its file changed or is gone."""
    if not dataset:
        return None, None
    source, digest = dataset.get("source"), dataset.get("sha256")
    if not source or not digest:
        return source or dataset.get("name"), None
    path = Path(source)
    if not path.exists():
        return source, f"data {source} (recorded by the run) is gone; pass --data"
    if not (path.is_file() or path.is_dir()):  # a device or a pipe: reading it to hash it would never end
        return source, f"data {source} (recorded by the run) is no longer a file or folder; pass --data"
    if _sha256(path) != digest:
        return source, (f"data {source} changed since the run (sha256 {digest[:12]}… then, {_sha256(path)[:12]}… now): "
                        "figures are not comparable with the report's")
    return source, None
