"""Stage cache: a stage whose inputs are unchanged is reused; a stage is 'done' only once its marker exists.

Key = sha256 of (previous stage key, stage kind, config, data fingerprint, library versions).

Example:
    >>> cache = StageCache(run_dir / ".stages")
    >>> key = cache.key(previous, "quantize", config, fingerprint)
    >>> cache.done(key) or run_and(cache.finish(key, info))
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from compress.io import write_json_atomic

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
        return json.loads(marker.read_text()) if marker.is_file() else None

    def start(self, folder: Path) -> Path:
        """A clean folder for a stage about to run (leftovers of an interrupted attempt are removed)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def finish(self, folder: Path, record: dict) -> None:
        write_json_atomic(folder / MARKER, record)

    def clear(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
