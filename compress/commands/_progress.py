"""Progress on stderr for every phase: live rich bars in a terminal; in a pipe or a CI log (where a live display
prints nothing until the end) one timestamped line per epoch and per step that runs over two seconds.

Example:
    >>> with training_progress("QAT", epochs=3) as (on_epoch, step):
    ...     on_epoch({"loss": 0.31, "val": 0.97})   # terminal: the bar advances; CI log: "[0:04] QAT: epoch 1/3 loss ..."
    ...     step("int8 onnx: export and verify")
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

from compress.commands._common import console
from compress.passes.epochs import epoch_info


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


ANNOUNCE_AFTER = 2.0  # seconds a step runs before its line is printed: quick steps (and a refusal) stay silent


class _Lines:
    """Progress as lines: ``[elapsed] text``. An epoch prints the moment it ends; a step (``lines("exporting")``)
    prints once it has run ANNOUNCE_AFTER seconds, stamped with its start, so an error line stays the only line."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.pending: threading.Timer | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str, at: float | None = None) -> None:
        stamp = _clock(self.elapsed() if at is None else at)
        console.print(f"[{stamp}] {text}", highlight=False, soft_wrap=True, markup=False)

    def __call__(self, text: str) -> None:
        self.close()
        self.pending = threading.Timer(ANNOUNCE_AFTER, self.say, (text, self.elapsed()))
        self.pending.daemon = True
        self.pending.start()

    def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()


@contextlib.contextmanager
def step_progress(transient: bool = False) -> Iterator[Callable[[str], None]]:
    """Yield ``step(message)``; each call closes the previous step and shows the new one with its time.

    A step that fails is taken off the display: the error line that follows says what went wrong.
    """
    if not console.is_terminal:
        lines = _Lines()
        try:
            yield lines
        finally:
            lines.close()
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=transient,
                  redirect_stdout=False, redirect_stderr=False) as progress:  # libraries' lines stay aside (compress.safety.quiet)
        current = {"task": None}

        def step(message: str) -> None:
            if current["task"] is not None:
                progress.update(current["task"], completed=1, total=1)
            current["task"] = progress.add_task(message, total=None)

        try:
            yield step
        except BaseException:
            if current["task"] is not None:
                progress.remove_task(current["task"])
            raise
        if current["task"] is not None:
            progress.update(current["task"], completed=1, total=1)


@contextlib.contextmanager
def training_progress(title: str, epochs: int, transient: bool = False) -> Iterator[tuple[Callable[[dict], None], Callable[[str], None]]]:
    """One display for a training verb: a bar over epochs (loss, val, sparsity, ETA) and one line per later step.

    Yields ``(on_epoch, step)``: ``on_epoch`` takes a pass's epoch row, ``step(message)`` closes the previous step.
    The bar appears with the first epoch, so work that is skipped (a cached checkpoint, no fine-tuning) draws none.
    """
    lines, done = _Lines(), [0]

    def eta() -> str:
        return f"  ETA {_clock(lines.elapsed() / done[0] * (epochs - done[0]))}" if 0 < done[0] < epochs else ""

    if not console.is_terminal:
        def on_epoch_line(row: dict) -> None:
            done[0] += 1
            lines.say(f"{title}: epoch {done[0]}/{epochs}  {epoch_info(row)}{eta()}")

        try:
            yield on_epoch_line, lines
        finally:
            lines.close()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=transient) as progress:
        current = {"bar": None, "step": None}

        def on_epoch(row: dict) -> None:
            done[0] += 1
            if current["bar"] is None:
                current["bar"] = progress.add_task(title, total=epochs, info="")
            progress.update(current["bar"], completed=done[0], info=epoch_info(row) + eta())

        def close(task, total: int = 1) -> None:
            if task is not None:
                progress.update(task, completed=total, total=total)

        def step(message: str) -> None:
            close(current["bar"], epochs)
            close(current["step"])
            current["step"] = progress.add_task(message, total=None, info="")

        try:
            yield on_epoch, step
        except BaseException:
            progress.live.transient = True  # an error is one line: the bars vanish instead of staying above it
            raise
        close(current["step"])
