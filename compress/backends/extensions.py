"""The registrations made after import (a plugin's format, precision or calibration method), carried into every
process compress starts, which imports only the built-in records: tune's local workers and Ray tasks
(compress.tune.executors) and the second process of `compress quantize` (compress.steps.ahead). The records travel
pickled by reference: installing them imports the modules that define them, which the parent has run already.

Example:
    >>> state = extensions()   # in the parent, after its register(...) calls
    >>> install(state)         # in the worker
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
