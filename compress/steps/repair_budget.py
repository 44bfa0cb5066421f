"""The time a run may spend repairing files: one budget for every repair of the run, a progress line per step.

Every repair step (compress.steps.repair) draws on the run's :class:`RepairBudget`. A step starts only while budget is
left (the step running when it runs out finishes); the steps not tried are listed in the report with the budget.

Example:
    >>> budget = RepairBudget(600)
    >>> with budget.spending():
    ...     line = budget.line(2, 9, "percentile calibration")
    >>> line
    'repair 2/9: percentile calibration [0:00 of the 10:00 repair budget]'
    >>> budget.record(["entropy calibration"])["ran_out"]
    True
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

DEFAULT_REPAIR_BUDGET = 600.0  # seconds; `compress quantize --repair-budget`


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


@dataclass
class RepairBudget:
    """``seconds`` of repair for one run; ``clock`` gives the time (time.monotonic)."""

    seconds: float = DEFAULT_REPAIR_BUDGET
    clock: Callable[[], float] = time.monotonic
    used: float = 0.0  # by repairs that have ended
    since: float | None = field(default=None, repr=False)  # the start of the repair under way

    @contextlib.contextmanager
    def spending(self) -> Iterator["RepairBudget"]:
        """One repair: its time counts against the budget."""
        self.since = self.clock()
        try:
            yield self
        finally:
            self.used += self.clock() - self.since
            self.since = None

    def spent(self) -> float:
        return self.used + (self.clock() - self.since if self.since is not None else 0.0)

    def exhausted(self) -> bool:
        return self.spent() >= self.seconds

    def line(self, index: int, total: int, label: str) -> str:
        """The progress line of step ``index`` of ``total``."""
        return f"repair {index}/{total}: {label} [{_clock(self.spent())} of the {_clock(self.seconds)} repair budget]"

    def record(self, not_tried: list[str]) -> dict:
        """report.json ``repair.budget``: the budget, what this run's repairs spent so far, and the steps left out."""
        return {"seconds": self.seconds, "spent_s": round(self.spent(), 3), "ran_out": bool(not_tried),
                "not_tried": list(not_tried)}
