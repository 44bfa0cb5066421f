"""Assertions shared by the CLI tests.

Example:
    >>> one_line(cli("prune", "missing.pt"))
    'error: missing.pt: no such file ...'
    >>> json_output(cli("zoo", "list", "--json"))["models"][0]["name"]
    'cnn64'
"""
from __future__ import annotations

import json


def one_line(result) -> str:
    """The command's stderr, asserted to be exactly one line and no traceback."""
    text = result.stderr.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def json_output(result) -> dict:
    """The one JSON document a successful ``--json`` command printed on stdout."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
