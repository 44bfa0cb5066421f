"""Stage cache: a stage whose inputs are unchanged is reused; a stage is 'done' only once its marker exists.

Key = sha256 of (previous stage key, stage kind, config, data fingerprint, library versions). The marker records the
sha256 of every file the stage wrote (``files``); a reused stage's files are checked against it before anything is
loaded from them, so a run directory edited since (a downloaded CI artifact) cannot slip in a different model.

Example:
    >>> cache = StageCache(run_dir / ".stages")
    >>> key = cache.key(previous, "quantize", config, fingerprint)
    >>> cache.verified(folder, cache.done(folder)) or run_and(cache.finish(folder, info))
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from compress.errors import UsageError
from compress.safety.io import sha256_file, write_json_atomic
from compress.safety.jsonsafe import read_json

MARKER = "stage.json"


class StageCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def key(self, previous: str, kind: str, config: dict, data_fingerprint: str, versions: dict) -> str:
        blob = json.dumps({"previous": previous, "kind": kind, "config": config, "data": data_fingerprint, "versions": versions}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def folder(self, index: int, kind: str, key: str) -> Path:
        return self.root / f"{index:02d}-{kind}-{key}"

    def done(self, folder: Path) -> dict | None:
        """The recorded result of a finished stage, or None (never started, or interrupted)."""
        marker = folder / MARKER
        return read_json(marker) if marker.is_file() else None

    def start(self, folder: Path) -> Path:
        """A clean folder for a stage about to run (leftovers of an interrupted attempt are removed)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def finish(self, folder: Path, record: dict, files: list[str]) -> dict:
        """Mark the stage done; ``files`` (relative to ``folder``) are recorded with their sha256."""
        record = {**record, "files": {name: sha256_file(folder / name) for name in files}}
        write_json_atomic(folder / MARKER, record)
        return record

    def verified(self, folder: Path, record: dict) -> dict:
        """``record``, once every file it lists still has its recorded sha256; UsageError (exit 2) otherwise."""
        for name, digest in record.get("files", {}).items():
            path = folder / name
            if not path.is_file() or sha256_file(path) != digest:
                raise UsageError(f"{path} is not the file this stage wrote (its sha256 differs from {folder / MARKER}): "
                                 "the run directory was changed since; rerun with --force to recompute every stage")
        return record

    def clear(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
