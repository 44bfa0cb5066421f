"""report.html is a real, readable page: checked in headless Chromium, numbers from report.json in its text."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.browser import render


@pytest.fixture(scope="module")
def onnx_run(zoo_checkpoint, cli, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("html-run")
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "onnx", "--precision", "int8,fp16", "--analyze",
                 "--runs", "20", "--out", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def test_report_html_renders_in_chromium_with_the_reports_numbers(onnx_run, tmp_path):
    from PIL import Image

    report = json.loads((onnx_run / "report.json").read_text())
    page = onnx_run / "report.html"
    assert page.is_file() and "<img" in page.read_text()  # plots embedded, self-contained
    text = render(page, tmp_path / "shot.png", tmp_path / "profile")
    for artifact in report["artifacts"]:
        assert artifact["name"] in text
        assert f"{artifact['size_bytes']:,}" in text
        assert f"{artifact['metrics']['task']['value']:.4f}" in text
    assert report["recommended"]["local-cpu"]["artifact"] in text
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("L"))
    assert pixels.std() > 10, "the screenshot is blank"


def test_prune_report_html_shows_per_layer_sparsity_in_chromium(zoo_checkpoint, cli, tmp_path):
    run_dir = tmp_path / "pruned"
    result = cli("prune", zoo_checkpoint("mnist_cnn", epochs=2), "--method", "magnitude", "--sparsity", "0.6", "--format", "onnx",
                 "--no-bench", "--json", "--out", run_dir, "--no-gate")  # 0.6 without fine-tuning loses ~10 pt: the default gate fails it
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    text = render(run_dir / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    assert "Pruning" in text and "Per layer" in text and "per-layer parameters before and after pruning" in text
    for row in report["prune"]["layers"]:
        assert f"<td>{row['layer']}</td>" in text and f"<td>{row['nonzero_after']:,}</td>" in text and f"<td>{row['sparsity']:.3f}</td>" in text
    reference = report["reference"]["metrics"]["task"]["value"]
    assert f"against the original (unpruned) model: accuracy {reference:.4f}" in text
    for artifact in report["artifacts"]:  # the dense file does not shrink: the compressed size is what shows it
        assert f"<td>{artifact['compressed_size_bytes']:,}</td>" in text
        assert f"<td>{artifact['metrics']['degradation']:.4f}</td>" in text


def test_report_compare_two_runs(onnx_run, zoo_checkpoint, cli, tmp_path):
    other = tmp_path / "other"
    assert cli("quantize", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "onnx", "--precision", "int8-dynamic",
               "--no-bench", "--out", other).exit_code == 0
    result = cli("report", "compare", onnx_run, other, "--html", tmp_path / "compare.html", "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert set(runs) == {onnx_run.name, "other"}
    page = (tmp_path / "compare.html").read_text()
    assert "int8-dynamic-onnx" in page and "int8-onnx" in page and "<img" in page


def test_report_compare_rejects_non_run_dirs(cli, tmp_path):
    result = cli("report", "compare", tmp_path, tmp_path)
    assert result.exit_code == 2 and "not a run directory" in result.stderr
