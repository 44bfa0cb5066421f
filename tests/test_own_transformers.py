"""Users' own transformers models: a plain ``torch.export.save`` loads without flags and quantizes (issue 26).

Six architectures built from ``transformers`` configs (2 layers, hidden 32, random weights, no hub), exported and saved
as a user would (``torch.export.export(model, example)`` then ``torch.export.save``), outputs left as transformers'
``ModelOutput`` classes. Their graphs call ``torch.ops.aten.__and__.Tensor`` (the attention mask's ``&``), which the
safety check now looks up in torch's operator registry instead of refusing by spelling. Each is quantized through the
CLI to ONNX; TFLite and .pte (heavier, marked slow) where they work, and a clear one-line refusal where they do not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_checks import json_output, one_line

transformers = pytest.importorskip("transformers")

VOCAB, TOKENS = 100, 16


def _text(model_class, config, mask: bool = False):
    example = (torch.randint(0, VOCAB, (2, TOKENS)),) + ((torch.ones(2, TOKENS, dtype=torch.int64),) if mask else ())
    return model_class(config), example


def _whisper_encoder():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = transformers.WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                                        encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                                        max_source_positions=50, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                                        eos_token_id=2, decoder_start_token_id=1)
    return WhisperEncoder(config), (torch.randn(2, 16, 100),)


BUILDERS = {
    "bert": lambda: _text(transformers.BertForSequenceClassification, transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=3), mask=True),
    "distilbert": lambda: _text(transformers.DistilBertForSequenceClassification, transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64, num_labels=3)),
    "gpt2": lambda: _text(transformers.GPT2LMHeadModel, transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0)),
    "llama": lambda: _text(transformers.LlamaForCausalLM, transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, use_cache=False)),
    "vit": lambda: (transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=5)), (torch.randn(2, 3, 32, 32),)),
    "whisper-encoder": _whisper_encoder,
}

# Which formats quantize each to (measured with torch 2.13, litert-torch 0.10, executorch 1.5); the others are refused
# with one line that names the reason and the formats that work.
# .pte: XNNPACK's PT2E quantizer turns the token ids of BERT (with a mask input), GPT-2 and Llama into floats before
# their embedding lookup ("tensors used as indices must be long"), so the .pte path refuses them.
WORKS = {"bert": {"tflite"}, "distilbert": {"tflite", "pte"}, "gpt2": {"tflite"}, "llama": {"tflite"},
         "vit": {"tflite", "pte"}, "whisper-encoder": {"tflite", "pte"}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(name)`` → (.pt2 saved as a user would, .npz of 64 inputs in the model's layout), built once."""
    folder = tmp_path_factory.mktemp("own-transformers")
    made: dict[str, tuple[Path, Path]] = {}

    def make(name: str) -> tuple[Path, Path]:
        if name not in made:
            torch.manual_seed(0)
            model, example = BUILDERS[name]()
            with torch.no_grad():
                program = torch.export.export(model.eval(), example)
            path = folder / f"{name}.pt2"
            torch.export.save(program, path)
            rng = np.random.default_rng(0)
            first = example[0]
            x = (rng.integers(0, VOCAB, (64, *first.shape[1:])) if first.dtype == torch.int64
                 else rng.standard_normal((64, *first.shape[1:])).astype(np.float32))
            arrays = {"x": x, **({"x1": np.ones_like(x)} if len(example) > 1 else {})}
            np.savez(folder / f"{name}.npz", **arrays)
            made[name] = path, folder / f"{name}.npz"
        return made[name]

    return make


def quantize(cli, saved, name: str, formats: str, out: Path):
    model, data = saved(name)
    return cli("quantize", model, "--data", data, "--format", formats, "--no-bench", "--out", out, "--json")


def test_the_mask_operator_is_in_the_graph_and_loads_without_flags(saved):
    from compress.loading.model import load_model

    model, _ = saved("bert")
    program = torch.export.load(model)
    assert "aten.__and__.Tensor" in {str(node.target) for node in program.graph.nodes}
    handle = load_model(model)
    assert handle.source_format == "exported_program" and isinstance(handle.module(*handle.input_spec.example_inputs(batch=2)), torch.Tensor)


def test_bert_quantizes_to_onnx_in_a_fresh_process_as_a_user_runs_it(saved, tmp_path):
    """No transformers imported beforehand: compress imports its output classes only because torch asks for them."""
    model, data = saved("bert")
    done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(model), "--data", str(data), "--format", "onnx",
                           "--no-bench", "--json", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["passed"] and (tmp_path / "out" / "model.int8.onnx").is_file()


@pytest.mark.parametrize("name", [n for n in BUILDERS if n != "bert"])
def test_each_architecture_quantizes_to_onnx(name, saved, tmp_path, cli):
    report = json_output(quantize(cli, saved, name, "onnx", tmp_path / "out"))
    assert report["passed"] and (tmp_path / "out" / "model.int8.onnx").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "pte"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_tflite_and_pte_work_or_say_why_in_one_line(name, fmt, saved, tmp_path, cli):
    result = quantize(cli, saved, name, fmt, tmp_path / "out")
    if fmt in WORKS[name]:
        report = json_output(result)
        assert report["passed"] and list((tmp_path / "out").glob(f"model.int8.{fmt}")), report
    else:
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # after the progress lines
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert fmt in errors[0] and "--format onnx" in errors[0]
        assert json.loads(result.stdout)["exit_code"] == 2
        assert not list((tmp_path / "out").glob(f"model*.{fmt}"))


def test_a_registered_operator_passes_and_a_dunder_that_is_not_one_is_refused(saved, tmp_path, cli):
    """The registry decides: the same graph with its `&` target renamed to an attribute walk is refused."""
    import zipfile

    model, data = saved("bert")
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(evil, "w") as target:
        for name in source.namelist():
            payload = source.read(name)
            if name.endswith("models/model.json"):
                payload = payload.replace(b"torch.ops.aten.__and__.Tensor", b"torch.ops.aten.__class__.__init__")
            target.writestr(name, payload)
    result = cli("quantize", evil, "--data", data, "--format", "onnx", "--no-bench", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "torch.ops.aten.__class__.__init__" in one_line(result)
