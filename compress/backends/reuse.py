"""One run converts a model with the same inputs once: the pre-flight's dry run is the real export's conversion.

Inside ``conversions()`` (one `compress quantize` run), ``reused(key, make, notes)`` keeps what ``make()`` returned
and the notes it appended, and hands both back for the same key. Keys hold the objects themselves (a model by
identity plus a digest of its tensors, a dataset by identity, example tensors by value), so a model changed in place
or another calibration set is a new conversion. Outside ``conversions()`` nothing is kept: every call converts.
A conversion another process is making is ``expect``-ed: the first ``reused`` of its key waits for it there (and
converts here if it failed); what the block started is stopped when it ends (``on_close``).

Example:
    >>> with conversions():
    ...     key = ("tflite", "int8", model_key(module), tensors_key(example), Same(calib_data))
    ...     content, techniques = reused(key, lambda: convert(...), notes)
    ...     again = reused(key, lambda: convert(...), notes)  # the same bytes, not converted again
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
from typing import Any, Callable, Iterator

import torch

_RUN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("compress_conversions", default=None)
_CLOSERS: contextvars.ContextVar[list | None] = contextvars.ContextVar("compress_conversion_closers", default=None)


class _Pending:
    """A conversion another process is making; ``arrive()`` waits for it and ``keep``s it (or nothing, on failure)."""

    __slots__ = ("arrive",)

    def __init__(self, arrive: Callable[[], None]) -> None:
        self.arrive = arrive


@contextlib.contextmanager
def conversions() -> Iterator[None]:
    """Keep conversions for the block (nested blocks share the outer one's)."""
    if _RUN.get() is not None:
        yield
        return
    token, closers = _RUN.set({}), _CLOSERS.set([])
    try:
        yield
    finally:
        for close in _CLOSERS.get():
            close()
        _CLOSERS.reset(closers)
        _RUN.reset(token)


def expect(key: tuple, arrive: Callable[[], None]) -> None:
    """``key``'s conversion is being made elsewhere: the first ``reused(key, ...)`` calls ``arrive()``, which waits for
    it and ``keep``s it; if nothing was kept then, ``reused`` converts as usual. Outside ``conversions()``: nothing."""
    kept = _RUN.get()
    if kept is not None:
        kept[key] = _Pending(arrive)


def on_close(close: Callable[[], None]) -> None:
    """Call ``close()`` when the running ``conversions()`` block ends (at once outside one)."""
    closers = _CLOSERS.get()
    if closers is None:
        close()
    else:
        closers.append(close)


def reused(key: tuple, make: Callable[[], tuple], notes: list[str]) -> tuple:
    """``make()``'s result for ``key`` (made once per ``conversions()`` block); the notes ``make`` appended to
    ``notes`` are appended again on reuse. Failures are not kept."""
    kept = _RUN.get()
    if kept is not None and isinstance(kept.get(key), _Pending):
        kept[key].arrive()
        if isinstance(kept.get(key), _Pending):  # the other process failed: converted here
            del kept[key]
    if kept is not None and key in kept:
        result, added = kept[key]
        notes.extend(added)
        return _copied(result)
    start = len(notes)
    result = make()
    keep(key, result, notes[start:])
    return result


def keep(key: tuple, result: tuple, notes: list[str]) -> None:
    """Hold ``result`` and the notes its conversion wrote for ``key`` within the running ``conversions()`` block, as
    ``reused`` does for what it makes (compress.steps.ahead hands in conversions made by a second process)."""
    kept = _RUN.get()
    if kept is not None:
        kept[key] = (_copied(result), list(notes))


def _copied(result: tuple) -> tuple:
    """Lists copied, so a caller appending to one does not change what is kept."""
    return tuple(list(part) if isinstance(part, list) else part for part in result)


class Same:
    """``obj`` in a key by identity (and kept alive by it), for objects that compare by value or not at all."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj


def model_key(module: Any) -> tuple:
    """A torch module by identity and a digest of its parameters and buffers (their values, not their in-place
    version counters: torch.export and PT2E bump those without changing a value)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return Same(module), digest.hexdigest()


def tensors_key(tensors: tuple) -> tuple:
    """Example inputs by value: dtype, shape and bytes of each."""
    return tuple((str(t.dtype), tuple(t.shape), t.detach().cpu().numpy().tobytes()) for t in tensors)
