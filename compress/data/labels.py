"""What a run does with ``y``: labels that fit an output judge it by the task metric; the others are set aside, in words.

Integer labels name classes 0..max, so a small sample (only classes 0-3 of a 10-class model) gives a head with fewer
classes than the output has values. Such labels are used when the evidence says they label that output: the reference
model's argmax matches them on at least half the samples, far above the 1-in-W of chance (one-sided binomial test).
A 16-d embedding beside 10-class digit labels matches them by chance only and gets no accuracy.

Example:
    >>> heads, notes = fit_labels((Head("y", "classification", 4),), [logits_10], (y_0_to_3,), ["output_0"])
    >>> heads[0].classes, notes[0]
    (10, "y used for output_0: 4 of its 10 classes present (the reference model's argmax matches y on 100.0 % ...)")
"""
from __future__ import annotations

from dataclasses import replace
from math import exp, lgamma, log

import numpy as np

from compress.data.dataset import Head
from compress.data.evaluate import head_fits

MIN_ACCURACY = 0.5       # labels of fewer classes than the output judge it only when the reference gets most right
MAX_P_VALUE = 1e-3       # and the agreement is this unlikely by chance (1 in W) under a one-sided binomial test


def binomial_tail(hits: int, trials: int, chance: float) -> float:
    """P(at least ``hits`` successes in ``trials`` at probability ``chance``).

    Example:
        >>> round(binomial_tail(9, 10, 0.5), 4)
        0.0107
    """
    if hits <= 0:
        return 1.0
    terms = [lgamma(trials + 1) - lgamma(k + 1) - lgamma(trials - k + 1) + k * log(chance) + (trials - k) * _log1m(chance)
             for k in range(hits, trials + 1)]
    top = max(terms)
    return min(1.0, exp(top) * sum(exp(t - top) for t in terms))


def _log1m(p: float) -> float:
    return log(1.0 - p) if p < 1.0 else float("-inf")


def fit_labels(heads: tuple[Head, ...], outputs: list[np.ndarray], labels, names: list[str]) -> tuple[tuple[Head, ...], list[str]]:
    """The heads that judge the outputs (a fitting head widened to its output's classes) and one note per label array
    saying whether and how it was used. No labels: ``(heads, [])``."""
    if labels is None:
        return heads, []
    fitted, notes = [], []
    for index, (head, y) in enumerate(zip(heads, labels)):
        head, note = _fit(head, outputs[index] if index < len(outputs) else None, np.asarray(y),
                          names[index] if index < len(names) else f"output_{index}")
        fitted.append(head)
        notes.append(note)
    return tuple(fitted) + tuple(heads[len(fitted):]), notes


def _fit(head: Head, output: np.ndarray | None, y: np.ndarray, name: str) -> tuple[Head, str]:
    if output is None:
        return head, f"y {head.name!r} not used: the model has no output to match it; judged by fidelity alone"
    width = int(np.prod(np.shape(output)[1:], dtype=np.int64))
    if head.kind != "classification":
        if head_fits(head, output):
            return head, f"y used for {name}: regression targets, judged by {head.metric_name}"
        return head, (f"y not used: its float values are regression targets and {name} has {width} values per sample "
                      "(at most 4 are judged against targets); judged by fidelity alone")
    present = len(np.unique(y))
    if head.classes == width:
        return head, f"y used for {name}: {present} of its {width} classes present"
    if head.classes > width or np.ndim(output) != 2:
        return head, (f"y not used: its labels go up to class {head.classes - 1}, {name} has shape "
                      f"{tuple(np.shape(output)[1:])} per sample; judged by fidelity alone (fix the labels or the --data)")
    hits = int(np.sum(np.asarray(output).argmax(1) == y.reshape(-1)))
    accuracy, chance = hits / len(y), 1.0 / width
    p_value = binomial_tail(hits, len(y), chance)
    evidence = (f"the reference model's argmax matches y on {100 * accuracy:.1f} % of {len(y)} samples, chance "
                f"{100 * chance:.1f} %, p = {p_value:.2g}")
    if accuracy >= MIN_ACCURACY and p_value < MAX_P_VALUE:
        return replace(head, classes=width), f"y used for {name}: {present} of its {width} classes present ({evidence})"
    return head, (f"y not used: its {present} classes (0 to {head.classes - 1}) do not label {name}'s {width} values "
                  f"({evidence}); judged by fidelity alone")
