"""Quantized token embeddings through `compress quantize --embeddings`, as a user runs it: a tiny tied Gemma and an
untied Llama directory to ONNX with an int8 or int4 table (onnxruntime's GatherBlockQuantized) and the tied Gemma to
a .pte with an int4 table (ExecuTorch's quantized embedding op), each verified on held-out text in its runtime,
reported per layer, the tied head said; formats and values that cannot take it exit 2."""
from __future__ import annotations

import json

import onnx
import pytest

from tests.cli_checks import json_output, one_line
from tests.lm_models import hf_dir


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return hf_dir(tmp_path_factory.mktemp("lm") / "gemma", "gemma")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return hf_dir(tmp_path_factory.mktemp("lm") / "llama", "llama")


def _table_nodes(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n for n in graph.node if n.name == "embed_tokens"], {i.name for i in graph.initializer}


@pytest.mark.parametrize("family, embeddings, symmetric", [("gemma", "int8-weight", True),
                                                          ("llama", "int4-weight", False)])
def test_quantized_table_verified_in_onnxruntime(family, embeddings, symmetric, gemma_dir, llama_dir, tmp_path, cli):
    source = {"gemma": gemma_dir, "llama": llama_dir}[family]
    plain = json_output(cli("quantize", source, "--format", "onnx", "--precision", "int8-weight", "--no-bench",
                            "--json", "--out", tmp_path / "plain"))["artifacts"][0]
    report = json_output(cli("quantize", source, "--format", "onnx", "--precision", "int8-weight", "--embeddings",
                             embeddings, "--no-bench", "--json", "--out", tmp_path / "run"))
    artifact = report["artifacts"][0]
    assert artifact["verified_in"] == ["onnxruntime"] and artifact["metrics"]["perplexity"]["generation_ran"]
    assert report["passed"], artifact["metrics"]["perplexity"]
    table = next(c for c in artifact["layers"] if c["kind"] == "embedding")
    assert (table["precision"], table["block_size"], table["symmetric"]) == (embeddings, 32, symmetric)
    assert "GatherBlockQuantized" in table["reason"]
    assert {"precision": embeddings, "block_size": 32, "layer": "model.embed_tokens", "op_types": ["GatherBlockQuantized"]}.items() \
        <= next(t for t in artifact["techniques"] if t.get("layer") == "model.embed_tokens").items()
    nodes, initializers = _table_nodes(tmp_path / "run" / artifact["path"])
    assert [n.op_type for n in nodes] == ["GatherBlockQuantized"] and "model.embed_tokens.weight" not in initializers
    assert artifact["size_bytes"] < plain["size_bytes"]  # the float table was the largest tensor of the file
    if family == "gemma":  # Gemma ties its head to the table: the head gets its own weight, and the note says so
        assert any(n.startswith("tied embedding untied") and "GatherBlockQuantized" in n for n in artifact["notes"])
        head = next(c for c in artifact["layers"] if c["kind"] == "head")
        assert head["precision"] == "int8-weight"
    generated = json_output(cli("generate", tmp_path / "run" / artifact["path"], "--prompt", "The Python language",
                                "--max-new-tokens", "4", "--json"))
    assert generated["tokens"]


def test_int4_table_verified_in_executorch(gemma_dir, tmp_path, cli):
    # rounded to nearest: the head stays tied to the table in the model (GPTQ, 8da4w's default, unties it first)
    report = json_output(cli("quantize", gemma_dir, "--format", "pte", "--precision", "8da4w", "--embeddings",
                             "int4-weight", "--algorithm", "rtn", "--no-bench", "--json", "--out", tmp_path / "run"))
    artifact = report["artifacts"][0]
    assert artifact["verified_in"] == ["executorch"] and artifact["metrics"]["perplexity"]["generation_ran"]
    assert report["passed"], artifact["metrics"]["perplexity"]
    table = next(c for c in artifact["layers"] if c["kind"] == "embedding")
    assert (table["precision"], table["block_size"], table["symmetric"]) == ("int4-weight", 32, True)
    assert any(t.get("op_types") == ["quantized_decomposed.embedding_4bit"] and t["layer"] == "model.embed_tokens"
               for t in artifact["techniques"])
    assert any("embedding_4bit" in n for n in artifact["notes"])  # the runtime's portable kernel runs the lookup
    assert any(n.startswith("tied embeddings") and "int4-weight table, 8da4w head" in n for n in artifact["notes"])


@pytest.mark.parametrize("args, says", [
    (["--format", "tflite", "--precision", "fp32", "--embeddings", "int8-weight"], "--format onnx,pte"),
    (["--format", "onnx", "--precision", "int4-weight", "--embeddings", "int2"], "--embeddings"),
])
def test_embeddings_refused_with_the_way_out(args, says, llama_dir, tmp_path, cli):
    done = cli("quantize", llama_dir, *args, "--no-bench", "--out", tmp_path / "run")
    assert done.exit_code == 2
    assert says in one_line(done)
    assert not any((tmp_path / "run").glob("*.pte")) and not any((tmp_path / "run").glob("*.onnx"))


def test_embeddings_only_for_language_models(tmp_path, cli):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not used")
    done = cli("quantize", model, "--embeddings", "int8-weight")
    assert done.exit_code == 2 and "--embeddings" in one_line(done)
    assert json.dumps(done.stdout) == '""'
