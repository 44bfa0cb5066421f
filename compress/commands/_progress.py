"""Progress on stderr for every phase: live rich bars in a terminal, one timestamped line per step or epoch in a pipe
or a CI log (where a live display would print nothing until the end).

Example:
    >>> with training_progress("QAT", epochs=3) as (on_epoch, step):
    ...     on_epoch({"loss": 0.31, "val": 0.97})   # terminal: the bar advances; CI log: "[0:04] QAT: epoch 1/3 loss ..."
    ...     step("int8 onnx: export and verify")
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from compress.commands._common import console


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


class _Lines:
    """Progress as lines: ``[elapsed] text``, printed the moment a step or an epoch happens."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, text: str) -> None:
        console.print(f"[{_clock(self.elapsed())}] {text}", highlight=False, soft_wrap=True, markup=False)


def epoch_info(row: dict) -> str:
    """``{"loss": 0.31, "val": 0.97, "sparsity": 0.5}`` → ``sparsity 0.500  loss 0.3100  val 0.9700``."""
    parts = [row.get("run", ""), f"sparsity {row['sparsity']:.3f}" if "sparsity" in row else "",
             f"loss {row['loss']:.4f}" if row.get("loss") is not None else "", f"val {row['val']:.4f}" if row.get("val") is not None else ""]
    return "  ".join(p for p in parts if p)


@contextlib.contextmanager
def step_progress(transient: bool = False) -> Iterator[Callable[[str], None]]:
    """Yield ``step(message)``; each call closes the previous step and shows the new one with its time.

    A step that fails is taken off the display: the error line that follows says what went wrong.
    """
    if not console.is_terminal:
        yield _Lines()
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=transient) as progress:
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
            lines(f"{title}: epoch {done[0]}/{epochs}  {epoch_info(row)}{eta()}")

        yield on_epoch_line, lines
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
