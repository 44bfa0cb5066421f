"""Assertions shared by the CLI tests.

Example:
    >>> one_line(cli("prune", "missing.pt"))
    'error: missing.pt: no such file ...'
"""
from __future__ import annotations


def one_line(result) -> str:
    """The command's stderr, asserted to be exactly one line and no traceback."""
    text = result.stderr.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text
