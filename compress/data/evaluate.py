"""Metrics: the task metric per output head, and fidelity of a compressed model against its reference.

Example:
    >>> fidelity(np.array([[1.0, 0.0]]), np.array([[0.9, 0.1]]))["top1_agreement"]
    1.0
"""
from __future__ import annotations

import numpy as np

from compress.data import Head


def task_metric(head: Head, outputs: np.ndarray, labels: np.ndarray) -> dict:
    """``{"name", "value", "higher_is_better"}``: accuracy for classification, R² for regression."""
    if head.kind == "classification":
        value = float(np.mean(outputs.argmax(axis=-1) == labels.reshape(-1)))
    else:
        labels = labels.reshape(outputs.shape).astype(np.float64)
        residual = float(np.sum((labels - outputs) ** 2))
        total = float(np.sum((labels - labels.mean()) ** 2)) or 1.0
        value = 1.0 - residual / total
    return {"name": head.metric_name, "value": round(value, 6), "higher_is_better": True}


def metric_text(task: dict | None, digits: int = 3) -> str:
    """``task_metrics`` output as text: ``"accuracy 0.986"``, or every head: ``"digit accuracy 0.986, digit_pair ..."``."""
    if not task:
        return "-"
    heads = task.get("heads") or {"": task}
    return ", ".join(f"{head + ' ' if head else ''}{m['name']} {m['value']:.{digits}f}" for head, m in heads.items())


REGRESSION_MAX_WIDTH = 4     # up to 4 values per sample (a score, a point, a box) is read as regression


def head_fits(head: Head, output: np.ndarray) -> bool:
    """Whether ``head``'s labels can judge ``output``: as many classes as the output's width, or a narrow regression.

    A head that does not fit (a 16-d embedding beside 10-class labels) is no evidence: no accuracy is computed on it.
    """
    width = int(np.prod(np.shape(output)[1:], dtype=np.int64))
    return (head.kind == "classification" and head.classes == width) or (head.kind != "classification" and width <= REGRESSION_MAX_WIDTH)


def task_metrics(heads, outputs: list[np.ndarray], labels) -> dict | None:
    """The first head's metric as ``task``; every head's under ``heads`` when there are several.

    Only heads that fit their output (``head_fits``) are measured; None when none does.
    """
    if labels is None or not heads:
        return None
    per_head = {h.name: task_metric(h, out, y) for h, out, y in zip(heads, outputs, labels) if head_fits(h, out)}
    if not per_head:
        return None
    first = next(iter(per_head.values()))
    return {**first, "heads": per_head} if len(per_head) > 1 else first


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is closer); 200 dB stands for identical."""
    reference = reference.astype(np.float64)
    noise = float(np.sum((reference - candidate.astype(np.float64)) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0.0:
        return 200.0
    return round(10.0 * np.log10(max(signal, 1e-30) / noise), 3)


def significant(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant figures: a small error stays visible (``round(4.2e-07, 6)`` would be 0).

    Example:
        >>> significant(4.2134567e-07)
        4.21346e-07
    """
    return float(f"{float(value):.{digits}g}")


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Top-1 agreement (for outputs with a class axis), SQNR, max abs error and cosine similarity."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(reference.shape)
    flat_r, flat_c = reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)
    norms = np.linalg.norm(flat_r, axis=1) * np.linalg.norm(flat_c, axis=1)
    cosine = np.sum(flat_r * flat_c, axis=1) / np.where(norms == 0, 1.0, norms)
    result = {
        "top1_agreement": None,
        "sqnr_db": sqnr_db(reference, candidate),
        "max_abs_error": significant(np.max(np.abs(reference - candidate))) if reference.size else 0.0,
        "cosine": round(float(np.mean(cosine)), 6),
    }
    if reference.ndim == 2 and reference.shape[1] > 1:
        result["top1_agreement"] = round(float(np.mean(reference.argmax(1) == candidate.argmax(1))), 6)
    return result


def degradation(reference: dict | None, candidate: dict | None) -> float | None:
    """Reference minus candidate in the metric's units; positive means worse."""
    if not reference or not candidate:
        return None
    sign = 1.0 if reference.get("higher_is_better", True) else -1.0
    return round(sign * (reference["value"] - candidate["value"]), 6)
