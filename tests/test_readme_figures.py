"""Figures README.md quotes come from bench/results/*.json (written by `python -m bench.readme`), not by hand."""
from __future__ import annotations

from bench.readme import README, rendered, stale_blocks


def test_readme_agrees_with_the_benchmark_json():
    assert stale_blocks(README.read_text()) == [], "run python -m bench.readme"


def test_a_figure_edited_by_hand_is_caught_and_rewritten():
    text = README.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fp32-ort |"))
    cells = row.split(" | ")
    cells[4] = "101,110"  # its bytes
    edited = text.replace(row, " | ".join(cells), 1)
    assert edited != text and stale_blocks(edited) == ["latest"]
    assert rendered(edited) == text


def test_a_baseline_beats_compress_only_where_the_table_shows_it():
    from bench.__main__ import where_not_beaten

    def row(variant, degradation, size):
        return {"variant": variant, "runtime": "litert", "degradation": degradation, "size_bytes": size,
                **{key: 1.0 for key in ("p50_ms_b1", "p50_ms_b32")}}

    ours = row("compress-int8-tflite*", -0.0028, 1000)
    assert where_not_beaten([ours, row("litert-pt2e-default", -0.00279, 990)]) == []  # equal as shown, size within 5 %
    lines = where_not_beaten([ours, row("litert-pt2e-default", -0.0056, 900)])
    assert lines == ["litert-pt2e-default beats compress-int8-tflite on metric loss (-0.0056 vs -0.0028), bytes (900 vs 1,000)"]
