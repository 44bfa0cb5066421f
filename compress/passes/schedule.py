"""Sparsity schedules for gradual pruning, and how fine-tuning epochs are split between ramping and recovery.

The polynomial schedule of Zhu & Gupta (2017), ``s_k = s_f + (s_i - s_f) * (1 - k / n) ** power``: large steps
while the network still has many redundant weights, small ones near the target. ``power=3`` is the usual
cubic schedule, ``power=1`` a linear ramp.

Example:
    >>> [round(s, 3) for s in polynomial_schedule(0.5, steps=4)]
    [0.289, 0.438, 0.492, 0.5]
    >>> ramp_epochs(5)
    4
"""
from __future__ import annotations

from typing import Callable

POWERS = {"cubic": 3, "linear": 1}


def polynomial_sparsity(step: int, steps: int, final: float, initial: float = 0.0, power: int = 3) -> float:
    """The sparsity after ``step`` of ``steps`` pruning steps (step 0 is ``initial``, step ``steps`` is ``final``)."""
    if steps <= 0:
        return final
    progress = min(max(step, 0), steps) / steps
    return final + (initial - final) * (1.0 - progress) ** power


def polynomial_schedule(final: float, steps: int, initial: float = 0.0, power: int = 3) -> list[float]:
    """Targets after each of the ``steps`` pruning steps; the last one is ``final``."""
    return [polynomial_sparsity(k, steps, final, initial, power) for k in range(1, steps + 1)]


def torch_pruning_scheduler(power: int) -> Callable[[float, int], list[float]]:
    """The same schedule in torch-pruning's form: ``f(ratio, steps) -> [0, r_1, ..., r_steps]``."""

    def scheduler(ratio: float, steps: int) -> list[float]:
        return [0.0, *polynomial_schedule(ratio, steps, 0.0, power)]

    return scheduler


def ramp_epochs(epochs: int) -> int:
    """Fine-tuning epochs over which sparsity ramps up; the last ``epochs // 3`` train at the final sparsity.

    One pruning step happens at the start of each ramp epoch, so the final sparsity is reached at the start of
    epoch ``ramp_epochs(epochs) - 1`` and at least one full epoch always trains at the target.
    """
    return max(1, epochs - epochs // 3)
