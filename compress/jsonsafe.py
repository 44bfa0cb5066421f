"""Standard JSON only: no NaN or Infinity written, none accepted when read.

``json.dumps`` writes ``NaN``/``Infinity`` literals by default, which JSON parsers outside Python reject; every
JSON compress writes (report.json, manifest.json, ``--json`` output) goes through :func:`dumps`.

Example:
    >>> clean, paths = finite({"metrics": {"sqnr_db": float("nan")}})
    >>> clean, paths
    ({'metrics': {'sqnr_db': None}}, ['metrics.sqnr_db'])
    >>> dumps({"a": float("inf")}, indent=None)
    '{"a": null}'
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from compress.errors import UsageError


def finite(value, path: str = "") -> tuple[object, list[str]]:
    """``value`` with every non-finite float replaced by None, and the dotted paths of the replaced figures."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path or "(value)"]
    if isinstance(value, dict):
        pairs = [(key, finite(item, f"{path}.{key}" if path else str(key))) for key, item in value.items()]
        return {key: clean for key, (clean, _) in pairs}, [p for _, (_, found) in pairs for p in found]
    if isinstance(value, (list, tuple)):
        items = [finite(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return [clean for clean, _ in items], [p for _, found in items for p in found]
    return value, []


def dumps(value, indent: int | None = 2) -> str:
    """Standard JSON text: non-finite floats become null (:func:`finite`), other objects their ``str``."""
    return json.dumps(finite(value)[0], indent=indent, default=str, allow_nan=False)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


def read_json(path: str | Path):
    """Parse a JSON file; UsageError (exit 2) for an unreadable, non-UTF-8 or non-standard (NaN, Infinity) file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start}); JSON files are UTF-8") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or exc})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON ({exc})") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not standard JSON ({exc}); a non-finite number must be written as null") from None
