"""English text that ships with Python itself, for calibrating and evaluating language models offline.

The corpus is the Python language reference's prose (``pydoc_data.topics``, in every CPython install): code samples
and grammar are dropped, paragraphs are reflowed. Its topics are split deterministically into a calibration part and
a disjoint evaluation part (every fourth topic by name; a paragraph repeated across topics belongs to its first), so
that no evaluated paragraph was seen by a calibration.

Example:
    >>> windows = token_windows(lm.tokenizer, evaluation_text(), length=128, count=16)
    >>> len(windows), len(windows[0])
    (16, 128)
"""
from __future__ import annotations

import functools
import re

from compress.errors import UsageError

EVALUATION_EVERY = 4  # topic i (sorted by name) is evaluation text when i % 4 == 1, else calibration text


@functools.cache
def _split() -> tuple[str, str]:
    """(calibration, evaluation): each distinct paragraph belongs to the first topic (by name) that holds it, since
    topics repeat sections (``compound`` holds every statement's)."""
    from pydoc_data.topics import topics

    seen, parts = set(), ([], [])
    for index, name in enumerate(sorted(topics)):
        for paragraph in prose(topics[name]).split("\n\n"):
            if paragraph and paragraph not in seen:
                seen.add(paragraph)
                parts[index % EVALUATION_EVERY == 1].append(paragraph)
    return "\n\n".join(parts[0]), "\n\n".join(parts[1])


def prose(text: str) -> str:
    """The paragraphs of ``text`` that are sentences: no indented code or grammar, no ``****`` underlines, each
    paragraph on one line.

    Example:
        >>> prose("Title\\n*****\\n\\nSome words\\nand more.\\n\\n   x = 1\\n")
        'Some words and more.'
    """
    keep = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if not lines or any(line[:1].isspace() for line in lines) or re.fullmatch(r"[*=\-^~]+", lines[-1].strip()):
            continue
        joined = " ".join(line.strip() for line in lines)
        if len(joined) >= 40 and joined.rstrip()[-1:] in ".:;!?)\"":
            keep.append(joined)
    return "\n\n".join(keep)


def calibration_text() -> str:
    """The calibration part of the corpus (about 117k characters of English prose)."""
    return _split()[0]


def evaluation_text() -> str:
    """The held-out part: topics never in calibration_text()."""
    return _split()[1]


def token_windows(tokenizer, text: str, length: int, count: int) -> list[list[int]]:
    """``count`` non-overlapping windows of ``length`` token ids, spread evenly over ``text`` (deterministic).

    Example:
        >>> [len(w) for w in token_windows(tokenizer, evaluation_text(), 64, 3)]
        [64, 64, 64]
    """
    if length < 2 or count < 1:
        raise UsageError(f"token windows need length >= 2 and count >= 1 (got {length}, {count})")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    available = len(ids) // length
    if available < count:
        raise UsageError(f"the text holds {available} windows of {length} tokens, {count} asked: use fewer or shorter windows")
    stride = available // count
    return [ids[i * stride * length:(i * stride + 1) * length] for i in range(count)]
