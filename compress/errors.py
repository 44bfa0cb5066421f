"""Errors that map to the CLI's exit codes (see ARCHITECTURE: 1 gate, 2 usage, 3 environment).

Example:
    >>> raise UsageError("no such file: model.pt (check the path)")
"""


class CompressError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 3


class UsageError(CompressError):
    """Bad input or usage: a clear one-line message that says what to do. Exit 2."""

    exit_code = 2


class EnvironmentFailure(CompressError):
    """A missing runtime, a failed export, an unreachable target. Exit 3."""

    exit_code = 3


class GateFailed(CompressError):
    """A quality gate failed; the artifacts are still written. Exit 1."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), cut at ``limit`` characters: what one-line
    errors quote from an upstream failure.

    Example:
        >>> first_line(ValueError("bad shape\\n  at layer 3"))
        'bad shape'
    """
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def whole_message(exc: BaseException, limit: int = 400) -> str:
    """Every line of an exception's message on one line (a runtime's shape error names the indices on its later lines),
    cut at ``limit`` characters.

    Example:
        >>> whole_message(RuntimeError("Got invalid dimensions for input: state for the following indices\n index: 0 Got: 300 Expected: 2"))
        'Got invalid dimensions for input: state for the following indices index: 0 Got: 300 Expected: 2'
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
