"""Report plots as PNG bytes (matplotlib, headless): trade-offs with the Pareto front, sensitivity, latency.

Example:
    >>> png = tradeoff_plot(points, "size (KB)", "accuracy (test split)", "accuracy vs size")     # bytes of a PNG image
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


@dataclass(frozen=True)
class Point:
    label: str
    x: float      # cost: size or latency (lower is better)
    y: float      # quality: the task metric (higher is better)
    group: str = ""


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point beats on both cost (lower) and quality (higher), sorted by cost."""
    front = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        if not front or p.y > front[-1].y:
            front.append(p)
    return front


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


MARKERS = "osD^vP*Xh<>p"
BASELINE = "baseline"  # a Point whose group starts with this is ringed (tune's plain int8 PTQ)


def tradeoff_figure(points: list[Point], x_label: str, y_label: str, title: str):
    """The trade-off scatter as a matplotlib Figure: one marker and legend entry per point (points on top of each other
    stay tellable apart; no label is drawn over the data), the Pareto front dashed, a baseline ringed. Any number of
    points, none included (the axes then say so)."""
    figure, axes = plt.subplots(figsize=(7.2, 4.0))
    for i, p in enumerate(points):
        label = f"{p.label} ({p.group})" if p.group else p.label
        size = 30 + min(90, 16 * (len(points) - 1 - i))  # earlier points larger: one on top of another shows under it
        axes.scatter([p.x], [p.y], s=size, marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", label=label, zorder=3, alpha=0.85)
        if p.group.startswith(BASELINE):
            axes.scatter([p.x], [p.y], s=220, facecolors="none", edgecolors="red", linewidths=1.5, zorder=2)
    front = pareto_front(points)
    if len(front) >= 2:
        axes.plot([p.x for p in front], [p.y for p in front], "k--", linewidth=1, label="Pareto front")
    if not points:
        axes.text(0.5, 0.5, "no valid point yet", transform=axes.transAxes, ha="center", va="center", color="gray")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if points:  # the key sits beside the axes: it never hides a point
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return figure


def tradeoff_plot(points: list[Point], x_label: str, y_label: str, title: str) -> bytes:
    """PNG bytes of :func:`tradeoff_figure`."""
    return _png(tradeoff_figure(points, x_label, y_label, title))


def sensitivity_plot(rows: list[dict]) -> bytes:
    """Horizontal bars: SQNR (dB) when only that layer is quantized; the shortest bars hurt most."""
    rows = rows[:20]
    figure, axes = plt.subplots(figsize=(6.4, 0.3 * len(rows) + 1.2))
    axes.barh([r["layer"] for r in rows][::-1], [r.get("sqnr_db") or 0.0 for r in rows][::-1], color="tab:orange")
    axes.set_xlabel("SQNR of the model output with only this layer quantized (dB, lower = more sensitive)")
    axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def layer_sparsity_plot(rows: list[dict]) -> bytes:
    """Per layer (a prune summary's ``layers``): parameters before pruning and non-zero parameters after."""
    names = [r["layer"] for r in rows][::-1]
    figure, axes = plt.subplots(figsize=(6.4, 0.3 * len(rows) + 1.2))
    axes.barh(names, [r["params_before"] for r in rows][::-1], color="tab:gray", alpha=0.4, label="before")
    axes.barh(names, [r["nonzero_after"] for r in rows][::-1], color="tab:green", label="non-zero after")
    axes.set_xlabel("parameters")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=7)
    return _png(figure)


def latency_plot(series: dict[str, dict]) -> bytes:
    """Per artifact: the distribution of timed runs when samples exist, else p50 with a whisker up to p99."""
    return _png(latency_figure(series))


def latency_figure(series: dict[str, dict]):
    names = list(series)
    figure, axes = plt.subplots(figsize=(6.4, 0.35 * len(names) + 1.4))
    samples = [series[n].get("samples_ms") for n in names]
    if all(samples):
        try:  # matplotlib >= 3.10; older ones know only vert= and labels= (deprecated in 3.11 and 3.9)
            axes.boxplot(samples, orientation="horizontal", tick_labels=names, showfliers=False)
        except TypeError:
            axes.boxplot(samples, vert=False, labels=names, showfliers=False)
    else:
        p50 = [series[n]["p50_ms"] for n in names]
        spread = [[0.0] * len(names), [series[n]["p99_ms"] - series[n]["p50_ms"] for n in names]]  # whisker up to p99
        axes.barh(names, p50, xerr=spread, color="tab:blue", alpha=0.7, capsize=3)
    axes.set_title("latency per inference at batch 1 on this CPU: " + ("timed runs (box: quartiles)" if all(samples) else "p50, whisker to p99"))
    axes.set_xlabel("latency per inference (ms), batch 1")
    axes.grid(axis="x", alpha=0.3)
    return figure
