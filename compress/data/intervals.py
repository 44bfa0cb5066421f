"""Confidence intervals of quality figures, from per-sample outcomes (95 %, two-sided), and how many samples would
resolve a gate the interval straddles.

- an agreement ``k`` of ``n`` (top-1 agreement, streamed decisions): Wilson score interval;
- an accuracy delta between two models on the same samples: paired, from the discordant samples only (the samples
  one model gets right and the other wrong; Wilson on their split, as McNemar's test reads them);
- a mean over samples (cosine, per-sample step agreement, neighbour agreement) or a ratio of sums (SQNR, R²):
  bootstrap over samples with a fixed seed (the same inputs give the same interval).

Every interval is a dict ``{"low", "high", "level", "samples", "method"}`` (report.json ``Interval``).

Example:
    >>> wilson(79, 80)["low"]
    0.932...
    >>> paired_delta(np.array([1, 1, 0, 1]), np.array([1, 0, 0, 1]))["high"] > 0
    True
    >>> samples_needed(0.9875, wilson(79, 80), 0.98, 80)   # one miss in 80 against a 0.98 floor
    1400
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

LEVEL = 0.95
Z = 1.959964              # two-sided 95 % normal quantile
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_CELLS = 4_000_000  # resampled indices held at once (resamples x samples), bounding memory


def _interval(low: float, high: float, samples: int, method: str) -> dict:
    return {"low": round(float(low), 6), "high": round(float(high), 6), "level": LEVEL, "samples": int(samples), "method": method}


def _wilson_bounds(k: float, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson(k: int, n: int) -> dict:
    """The Wilson score interval of a proportion ``k / n`` (agreement of ``n`` independent decisions)."""
    return _interval(*_wilson_bounds(k, n), n, "wilson")


def paired_delta(reference_right: np.ndarray, candidate_right: np.ndarray) -> dict:
    """The interval of ``mean(reference_right) - mean(candidate_right)`` (accuracy lost) on the same samples.

    Only discordant samples carry the difference: with ``b`` lost and ``c`` gained of ``m = b + c``, the loss is
    ``(b - c) / n`` and its interval ``m * (2 * wilson(b, m) - 1) / n``; no discordant sample: exactly 0.
    """
    ref, cand = np.asarray(reference_right, bool).ravel(), np.asarray(candidate_right, bool).ravel()
    n = len(ref)
    lost, gained = int(np.sum(ref & ~cand)), int(np.sum(~ref & cand))
    discordant = lost + gained
    if n == 0 or discordant == 0:
        return _interval(0.0, 0.0, n, "paired-wilson")
    low, high = _wilson_bounds(lost, discordant)
    return _interval(discordant * (2 * low - 1) / n, discordant * (2 * high - 1) / n, n, "paired-wilson")


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], samples: int) -> dict:
    """The percentile bootstrap interval of ``statistic``, which maps a ``(resamples, samples)`` index array to one
    value per resample (e.g. ``lambda i: values[i].mean(1)``); seed fixed."""
    if samples == 0:
        return _interval(float("nan"), float("nan"), 0, "bootstrap")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    per_chunk = max(1, BOOTSTRAP_CELLS // samples)
    values = []
    for start in range(0, BOOTSTRAP_RESAMPLES, per_chunk):
        count = min(per_chunk, BOOTSTRAP_RESAMPLES - start)
        values.append(np.asarray(statistic(rng.integers(0, samples, (count, samples))), dtype=np.float64))
    values = np.concatenate(values)
    tail = (1 - LEVEL) / 2 * 100
    return _interval(np.percentile(values, tail), np.percentile(values, 100 - tail), samples, "bootstrap")


def mean_interval(per_sample: np.ndarray) -> dict:
    """Bootstrap interval of the mean of ``per_sample`` values (cosine, per-sample agreement)."""
    values = np.asarray(per_sample, dtype=np.float64).ravel()
    return bootstrap(lambda index: values[index].mean(1), len(values))


def sqnr_interval(reference: np.ndarray, candidate: np.ndarray, identical_db: float = 200.0) -> dict:
    """Bootstrap interval of the SQNR (dB) over samples (rows): each resample's signal and noise sums."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(ref.shape)
    signal, noise = np.sum(ref**2, 1), np.sum((ref - cand) ** 2, 1)

    def statistic(index):
        s, e = signal[index].sum(1), noise[index].sum(1)
        with np.errstate(divide="ignore"):
            return np.where(e == 0, identical_db, 10 * np.log10(np.maximum(s, 1e-30) / np.where(e == 0, 1, e)))

    return bootstrap(statistic, len(ref))


def r2_delta_interval(labels: np.ndarray, reference: np.ndarray | None, candidate: np.ndarray, reference_r2: float | None = None) -> dict:
    """Bootstrap interval of R²(reference) - R²(candidate) on the same samples (a regression head's metric loss);
    with ``reference_r2`` (a recorded number) only the candidate's R² is resampled."""
    y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(y.shape)
    cand_err = np.sum((y - cand) ** 2, 1)
    ref_err = None if reference is None else np.sum((y - np.asarray(reference, dtype=np.float64).reshape(y.shape)) ** 2, 1)

    def statistic(index):
        ys = y[index]
        total = np.maximum(np.sum((ys - ys.mean(1, keepdims=True)) ** 2, axis=(1, 2)), 1e-30)
        if ref_err is None:
            return reference_r2 - (1 - cand_err[index].sum(1) / total)
        return (cand_err[index].sum(1) - ref_err[index].sum(1)) / total

    return bootstrap(statistic, len(y))


def outcome(interval: dict | None, limit: float, higher_is_better: bool) -> str:
    """``passed`` when the whole interval is on the good side of ``limit``, ``failed`` when it is all on the bad side,
    else ``undecided`` (the sample cannot tell)."""
    low, high = interval["low"], interval["high"]
    good, bad = (low >= limit, high < limit) if higher_is_better else (high <= limit + 1e-12, low > limit + 1e-12)
    return "passed" if good else "failed" if bad else "undecided"


def samples_needed(value: float, interval: dict, limit: float, samples: int) -> int | None:
    """About how many samples would make the interval clear ``limit`` (its width shrinks as 1/sqrt(n)), assuming the
    figure stays ``value``; None when the figure sits on the limit (no sample size resolves it)."""
    gap = abs(value - limit)
    half = (interval["high"] - value) if value < limit else (value - interval["low"])
    if gap < 1e-9 or not math.isfinite(half):
        return None
    if interval["method"] == "wilson":  # the smallest n whose Wilson interval at this proportion clears the limit
        clears = lambda n: (_wilson_bounds(value * n, n)[0] >= limit) if value > limit else (_wilson_bounds(value * n, n)[1] < limit)
        low, high = samples, samples * 2
        while not clears(high) and high < 10**9:
            low, high = high, high * 2
        while high - low > 1:
            low, high = (low, (low + high) // 2) if clears((low + high) // 2) else ((low + high) // 2, high)
        needed = high
    else:
        needed = samples * (max(half, 1e-12) / gap) ** 2
    digits = max(0, len(str(int(needed))) - 2)
    return int(math.ceil(needed / 10**digits) * 10**digits)


def unpaired_delta(reference: float, candidate: float, samples: int) -> dict:
    """The interval of an accuracy loss ``reference - candidate`` measured on two sets of ``samples`` each, with no
    per-sample pairing (a saved original's recorded accuracy): Newcombe's hybrid of two Wilson intervals."""
    (l1, u1), (l2, u2) = _wilson_bounds(reference * samples, samples), _wilson_bounds(candidate * samples, samples)
    delta = reference - candidate
    return _interval(delta - math.hypot(reference - l1, u2 - candidate), delta + math.hypot(u1 - reference, candidate - l2),
                     samples, "newcombe-unpaired")


def degradation_interval(heads, reference: list[np.ndarray], candidate: list[np.ndarray], labels, original: dict | None = None) -> dict | None:
    """The interval of the metric loss ``compress.data.evaluate.degradation`` reports (the first head that fits its
    output, as ``task_metrics``): paired on the same test samples, or against ``original`` (a recorded metric of the
    model before earlier passes) unpaired. None without labels."""
    from compress.data.evaluate import head_fits

    if labels is None or not heads:
        return None
    for head, ref, cand, y in zip(heads, reference, candidate, labels):
        if not head_fits(head, cand):
            continue
        if head.kind == "classification":
            cand_right = cand.argmax(-1) == y.reshape(-1)
            if original is not None:
                return unpaired_delta(original["value"], float(cand_right.mean()), len(y))
            return paired_delta(ref.argmax(-1) == y.reshape(-1), cand_right)
        if original is not None:  # R² of the saved original is a recorded number: only the candidate's varies
            return r2_delta_interval(y, None, cand, original["value"])
        return r2_delta_interval(y, ref, cand)
    return None


def interval_text(artifact: dict) -> str | None:
    """One line of an artifact's figures with their 95 % intervals (terminal and report.md), None when it has none.

    Example:
        >>> interval_text(artifact)
        'int8-onnx: metric loss 0.28 pt [-0.2, 0.83]; output_0 top1_agreement 0.9875 [0.9325, 0.9978] (80 samples)'
    """
    metrics = artifact.get("metrics") or {}
    parts = []
    loss = metrics.get("degradation_interval")
    if loss and metrics.get("degradation") is not None:
        scale, unit = (100, " pt") if (metrics.get("task") or {}).get("name") == "accuracy" else (1, "")
        parts.append(f"metric loss {metrics['degradation'] * scale:.3g}{unit} [{loss['low'] * scale:.3g}, {loss['high'] * scale:.3g}]")
    for output in (metrics.get("fidelity") or {}).get("outputs", []):
        for measure, interval in (output.get("intervals") or {}).items():
            value = output["measures"].get(measure)
            if value is not None:
                parts.append(f"{output['name']} {measure} {value:.4g} [{interval['low']:.4g}, {interval['high']:.4g}]")
    stream = metrics.get("stream") or {}
    if stream.get("interval"):
        parts.append(f"streamed decisions {stream['decision_agreement']:.4g} [{stream['interval']['low']:.4g}, "
                     f"{stream['interval']['high']:.4g}] ({stream['decisions']:,} decisions)")
    samples = next((i["samples"] for o in (metrics.get("fidelity") or {}).get("outputs", []) for i in (o.get("intervals") or {}).values()), None)
    if not parts:
        return None
    return f"{artifact['name']}: " + "; ".join(parts) + (f" ({samples:,} test samples)" if samples else "")
