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
