"""README.md is a user's guide; the figures measured on one machine live in docs/benchmarks.md, generated from
bench/results/*.json by `python -m bench.pages`, never by hand.

Example:
    $ pytest tests/test_readme_figures.py -q
"""
from __future__ import annotations

import re
from pathlib import Path

from bench.pages import BLOCKS, PAGE, rendered, stale_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_benchmarks_page_agrees_with_the_benchmark_json():
    assert stale_blocks(PAGE.read_text()) == [], "run python -m bench.pages"


def test_a_figure_edited_by_hand_is_caught_and_rewritten():
    text = PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fp32-ort |"))
    cells = row.split(" | ")
    cells[4] = "101,110"  # its bytes
    edited = text.replace(row, " | ".join(cells), 1)
    assert edited != text and stale_blocks(edited) == ["latest"]
    assert rendered(edited) == text


def test_readme_is_a_guide_without_measurements_of_one_machine():
    """At most 400 lines, no date stamps, no generated tables: those are docs/benchmarks.md's."""
    text = README.read_text()
    assert len(text.splitlines()) <= 400
    assert re.findall(r"\b20\d\d-\d\d-\d\d\b", text) == [], "a dated figure belongs in docs/benchmarks.md"
    assert not any(f"<!-- bench:{name} -->" in text for name in BLOCKS)


def test_links_between_the_guides_reach_a_file_and_heading():
    for page in GUIDES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor:
                assert anchor in _anchors(linked), f"{page.name} links to {target}: no such heading in {linked.name}"


def test_a_baseline_beats_compress_only_where_the_table_shows_it():
    from bench.__main__ import where_not_beaten

    def row(variant, degradation, size):
        return {"variant": variant, "runtime": "litert", "degradation": degradation, "size_bytes": size,
                **{key: 1.0 for key in ("p50_ms_b1", "p50_ms_b32")}}

    ours = row("compress-int8-tflite*", -0.0028, 1000)
    assert where_not_beaten([ours, row("litert-pt2e-default", -0.00279, 990)]) == []  # equal as shown, size within 5 %
    lines = where_not_beaten([ours, row("litert-pt2e-default", -0.0056, 900)])
    assert lines == ["litert-pt2e-default beats compress-int8-tflite on metric loss (-0.0056 vs -0.0028), bytes (900 vs 1,000)"]
