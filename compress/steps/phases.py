"""Wall and CPU seconds per phase of a run: report.json ``timings``, report.md's table and ``--verbose``'s.

A verb's phases are its ``step(message)`` calls: wrap the step with a clock and every message opens a phase that
lasts until the next one. CPU seconds are the whole process's (every thread) plus its finished child processes'
(onnxruntime's load check), so ``cpu_s`` above ``wall_s`` means several cores worked. A message seen again adds to its phase;
live figures at the end of a message in square brackets (``"repair 2/7: per-channel weights [0:20 of 2:00]"``) are
progress, not part of the phase's name.

Example:
    >>> clock = PhaseClock()
    >>> step = clock.wrap(print)
    >>> step("pre-flight")                     # prints "pre-flight", opens the phase
    >>> record = clock.record()                # closes it; {"phases": [{"phase": "pre-flight", ...}], "total": {...}}
    >>> record["phases"][0]["phase"], record["total"]["wall_s"] >= record["phases"][0]["wall_s"]
    ('pre-flight', True)
"""
from __future__ import annotations

import math
import os
import re
import time
from typing import Callable

Step = Callable[[str], None]


def _now() -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this process and of the child processes it has waited for."""
    spent = os.times()
    return time.perf_counter(), spent.user + spent.system + spent.children_user + spent.children_system


class PhaseClock:
    """Times consecutive phases from its creation on; ``record()`` is the report's ``timings``."""

    def __init__(self) -> None:
        self.start = _now()
        self.phases: dict[str, list[float]] = {}
        self.current: tuple[str, tuple[float, float]] | None = None

    @property
    def running(self) -> str | None:
        """The phase open now, if any."""
        return self.current[0] if self.current else None

    def begin(self, phase: str) -> None:
        """Close the running phase and open ``phase``."""
        self.stop()
        self.current = (phase, _now())

    def stop(self) -> None:
        """Close the running phase, if any."""
        if self.current is None:
            return
        phase, (wall, cpu) = self.current
        now_wall, now_cpu = _now()
        spent = self.phases.setdefault(phase, [0.0, 0.0])
        spent[0] += now_wall - wall
        spent[1] += now_cpu - cpu
        self.current = None

    def wrap(self, step: Step | None) -> Step:
        """``step`` (or nothing) preceded by ``begin(message)``."""
        def timed(message: str) -> None:
            self.begin(phase_name(message))
            if step is not None:
                step(message)

        return timed

    def record(self) -> dict:
        """``{"phases": [{"phase", "wall_s", "cpu_s"}], "total": {"wall_s", "cpu_s"}}``; the running phase is closed.

        ``total`` runs from the clock's creation, so it also holds the time before the first phase. Milliseconds:
        phases rounded down, the total up, so the phases never add up to more than it."""
        self.stop()
        now_wall, now_cpu = _now()
        return {"phases": [{"phase": name, "wall_s": _ms(wall, math.floor), "cpu_s": _ms(cpu, math.floor)}
                           for name, (wall, cpu) in self.phases.items()],
                "total": {"wall_s": _ms(now_wall - self.start[0], math.ceil), "cpu_s": _ms(now_cpu - self.start[1], math.ceil)}}


def phase_name(message: str) -> str:
    """``message`` without its trailing ``[live figures]``.

    Example:
        >>> phase_name("repair 2/7: per-channel weights [0:20 of the 2:00 repair budget]")
        'repair 2/7: per-channel weights'
    """
    return re.sub(r"\s*\[[^\[\]]*\]$", "", message)


def _ms(seconds: float, rounding) -> float:
    return max(rounding(seconds * 1000), 0) / 1000


def timing_rows(timings: dict) -> list[tuple[str, str, str]]:
    """``(phase, wall, cpu)`` text rows of a ``timings`` record, the total last: for report.md and ``--verbose``."""
    rows = [*timings["phases"], {"phase": "total", **timings["total"]}]
    return [(row["phase"], f"{row['wall_s']:.1f} s", f"{row['cpu_s']:.1f} s") for row in rows]
