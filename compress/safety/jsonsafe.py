"""Standard JSON only: no NaN or Infinity written, none accepted when read; nothing nested past MAX_DOCUMENT_DEPTH read.

``json.dumps`` writes ``NaN``/``Infinity`` literals by default, which JSON parsers outside Python reject; every
JSON compress writes (report.json, manifest.json, ``--json`` output) goes through :func:`dumps`. Every JSON compress
reads goes through :func:`read_json` / :func:`parse_json` (exit 2 naming the file) or :func:`loads` (json.loads that
raises JSONDecodeError past the depth bound, where a caller treats a garbled document as absent): a file nested
100,000 deep is refused in milliseconds instead of ending in RecursionError.

Example:
    >>> clean, paths = finite({"metrics": {"sqnr_db": float("nan")}})
    >>> clean, paths
    ({'metrics': {'sqnr_db': None}}, ['metrics.sqnr_db'])
    >>> dumps({"a": float("inf")}, indent=None)
    '{"a": null}'
    >>> parse_json("[" * 300 + "]" * 300, "deep.json")
    UsageError: deep.json is not JSON compress reads (nested deeper than 200 levels: line 1 column 201 (char 200); ...)
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from compress.errors import UsageError
from compress.limits import MAX_DOCUMENT_DEPTH

_STRINGS_AND_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


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


class TooDeep(json.JSONDecodeError):
    """A JSON document nested deeper than MAX_DOCUMENT_DEPTH (a JSONDecodeError: garbled, as far as callers go)."""


def _check_depth(text: str) -> None:
    depth = 0
    for match in _STRINGS_AND_BRACKETS.finditer(text):
        bracket = match.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_DOCUMENT_DEPTH:
                raise TooDeep(f"nested deeper than {MAX_DOCUMENT_DEPTH} levels", text, match.start())
        elif bracket in "]}":
            depth -= 1


def loads(text: str | bytes, **options):
    """``json.loads`` that refuses, as TooDeep (a JSONDecodeError), a document nested past MAX_DOCUMENT_DEPTH."""
    text = text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text
    _check_depth(text)
    return json.loads(text, **options)


def parse_json(text: str | bytes, source: str):
    """Standard JSON from ``text``; UsageError (exit 2) naming ``source`` for garbled, too deep or non-finite JSON."""
    try:
        return loads(text, parse_constant=_reject_constant)
    except TooDeep as exc:
        raise UsageError(f"{source} is not JSON compress reads ({exc}; no file compress writes nests that deep)") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not UTF-8 text (byte {exc.start}); JSON files are UTF-8") from None
    except ValueError as exc:
        raise UsageError(f"{source} is not standard JSON ({exc}); a non-finite number must be written as null") from None


def read_json(path: str | Path):
    """Parse a JSON file (:func:`parse_json`); UsageError (exit 2) for an unreadable file too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or exc})") from None
    return parse_json(data, str(path))
