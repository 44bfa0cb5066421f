"""Plots people can read: every point told apart without labels over each other, named axes, titles, any number of points."""
from __future__ import annotations

import itertools

import pytest

from compress.report.plots import Point, latency_figure, tradeoff_figure, tradeoff_plot

# Two formats of each precision land on the same spot: their labels used to overprint.
OVERLAPPING = [Point("fp32-onnx", 391.2, 0.9861, "onnx"), Point("fp32-tflite", 391.2, 0.9861, "tflite"),
               Point("int8-onnx", 101.1, 0.9833, "onnx"), Point("int8-tflite", 101.1, 0.9833, "tflite"),
               Point("#3", 32.6, 0.9889, "baseline: plain int8 PTQ")]


def _extents(figure, artists):
    renderer = figure.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def test_points_on_top_of_each_other_stay_readable():
    figure = tradeoff_figure(OVERLAPPING, "file size (KB)", "accuracy on the test split", "accuracy vs size")
    figure.canvas.draw()
    axes = figure.axes[0]
    legend = axes.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert all(any(text.startswith(p.label) for text in texts) for p in OVERLAPPING)  # each point has its own key entry
    boxes = _extents(figure, legend.get_texts())
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))  # no label prints over another
    assert not _extents(figure, [legend])[0].overlaps(axes.get_window_extent())  # the key hides no point
    assert len(axes.texts) == 0  # nothing written over the data
    assert axes.get_xlabel() == "file size (KB)" and axes.get_ylabel() == "accuracy on the test split"
    assert axes.get_title() == "accuracy vs size"
    rings = [c for c in axes.collections if c.get_facecolor().size == 0]
    assert len(rings) == 1  # the baseline is marked


@pytest.mark.parametrize("count", [0, 1, 2])
def test_any_number_of_points_is_drawn(count):
    png = tradeoff_plot(OVERLAPPING[:count], "file size (KB)", "-p50 latency (ms)", f"{count} valid trials")
    assert png.startswith(b"\x89PNG")


def test_the_latency_plot_has_a_title_and_a_unit():
    axes = latency_figure({"int8-onnx": {"p50_ms": 0.1, "p99_ms": 0.2}, "fp32-onnx": {"p50_ms": 0.2, "p99_ms": 0.3}}).axes[0]
    assert axes.get_title().startswith("latency per inference") and "(ms)" in axes.get_xlabel()
