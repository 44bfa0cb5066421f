"""The registrations made after import (a plugin's format, precision or calibration method), carried into a spawned
worker process, which imports only the built-in records.

Example:
    >>> state = extensions()   # in the parent, after its register(...) calls
    >>> install(state)         # in the worker (compress.tune.executors passes it to each one it starts)
"""
from __future__ import annotations

from compress.backends.calibration import CALIBRATIONS
from compress.catalog import PRECISIONS
from compress.backends.registry import FORMATS

REGISTRIES = {"formats": FORMATS, "precisions": PRECISIONS, "calibrations": CALIBRATIONS}
_BUILT_IN: dict[str, dict] = {}


def remember_built_ins() -> None:
    """Note the records registered at import (compress.backends calls it once, after registering its own)."""
    _BUILT_IN.update({kind: dict(records) for kind, records in REGISTRIES.items()})


def extensions() -> dict[str, dict]:
    """``{registry: {name: record}}``: each record added or replaced since import (picklable by reference)."""
    return {kind: {name: record for name, record in records.items() if _BUILT_IN[kind].get(name) is not record}
            for kind, records in REGISTRIES.items()}


def install(state: dict[str, dict]) -> None:
    """Register ``state`` (``extensions()`` of another process) here."""
    for kind, records in state.items():
        REGISTRIES[kind].update(records)
