"""Decoder LMs as ExecuTorch ``.pte`` with a static KV cache (compress.lm.pte_kv), run in executorch.runtime and
compared with the torch model: prefill in one call, then decode steps, under teacher forcing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.errors import UsageError
from compress.lm.pte_kv import PteDecoder, export_pte_lm

MAX_CONTEXT = 64
PROMPT, STEPS = 24, 8


def tiny(family: str):
    """A 2-layer random model of ``family`` with GQA (4 query heads, 2 KV heads)."""
    import transformers

    torch.manual_seed(0)
    shape = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256)
    if family == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape)).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).eval()


def token_ids(count: int = PROMPT + STEPS, seed: int = 1) -> list[int]:
    return torch.randint(0, 256, (count,), generator=torch.Generator().manual_seed(seed)).tolist()


def torch_logits(module, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return module(torch.tensor([ids])).logits[0].numpy()


def teacher_forced(decoder, ids: list[int]) -> np.ndarray:
    """Logits at every position: the first ``PROMPT`` ids in one prefill call, then one decode call per id."""
    decoder.reset()
    prefill = decoder.prefill(ids[:PROMPT])
    assert prefill.shape == (PROMPT, decoder.vocab_size) and prefill.dtype == np.float32
    return np.concatenate([prefill, np.stack([decoder.decode(token) for token in ids[PROMPT:]])])


def delegates(path) -> list[str]:
    """The backend ids of the delegates in the ``.pte`` file itself."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    return [d.id for plan in program.execution_plan for d in plan.delegates]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def fp32_export(request, tmp_path_factory):
    module = tiny(request.param)
    out = tmp_path_factory.mktemp(request.param) / "model.fp32.pte"
    return module, export_pte_lm(module, out, "fp32", max_context=MAX_CONTEXT)


@pytest.fixture(scope="module")
def llama_8da4w(tmp_path_factory):
    module = tiny("llama")
    folder = tmp_path_factory.mktemp("8da4w")
    return module, export_pte_lm(module, folder / "model.8da4w.pte", "8da4w", max_context=MAX_CONTEXT), folder


def test_fp32_pte_equals_torch_on_prefill_and_decode(fp32_export):
    module, result = fp32_export
    ids = token_ids()
    decoder = PteDecoder(result.path, threads=1)
    assert (decoder.max_context, decoder.vocab_size) == (MAX_CONTEXT, 256)
    logits = teacher_forced(decoder, ids)
    np.testing.assert_allclose(logits, torch_logits(module, ids), atol=1e-4, rtol=1e-4)
    # reset starts a new sequence: the same logits again, nothing carried over from the cache
    np.testing.assert_allclose(teacher_forced(decoder, ids), logits, atol=1e-6)
    assert result.precision == "fp32" and [t.label for t in result.techniques] == ["export:executorch:xnnpack:static-kv-cache"]
    assert delegates(result.path) and set(delegates(result.path)) == {"XnnpackBackend"}
    # the caller's model is left as it was: no cache buffers, its own attention
    assert module.config._attn_implementation != "compress_static_kv"
    assert not [name for name, _ in module.named_buffers() if "kv_" in name]


def test_8da4w_pte_is_xnnpack_int4_and_agrees_with_torch(llama_8da4w):
    module, result, folder = llama_8da4w
    assert result.precision == "8da4w"
    assert result.techniques[-1].as_dict() == {"kind": "ptq", "precision": "8da4w", "scheme": "dynamic", "block_size": 32,
                                               "symmetric": True, "args": ["xnnpack"], "label": "ptq:8da4w:block32:symmetric:xnnpack"}
    assert {c.precision for c in result.layers} == {"8da4w"} and all(c.symmetric and c.block_size == 32 for c in result.layers)
    assert "lm_head" in {c.name for c in result.layers}
    assert set(delegates(result.path)) == {"XnnpackBackend"}
    fp32_bytes = sum(p.numel() * 4 for p in module.parameters())
    assert result.path.stat().st_size < 0.45 * fp32_bytes   # int4 weights (and the fp32 embedding table): measured 0.38

    ids = token_ids(seed=2)
    logits = teacher_forced(PteDecoder(result.path, threads=2), ids)
    reference = torch_logits(module, ids)
    top1 = float((logits.argmax(-1) == reference.argmax(-1)).mean())
    # measured 0.78 on this random model (its logits are nearly flat, so int4 flips close calls); fp32 agrees 1.0
    assert top1 >= 0.6, top1
    assert np.abs(logits - reference).max() < 0.5


def test_block_that_does_not_divide_a_width_is_halved_and_said(tmp_path):
    from compress.lm.pte_kv import plan_linears

    choices = plan_linears(tiny("llama"), "8da4w", block_size=128)   # widths 64 (q/k/v/o, gate/up, head) and 128 (down)
    by_name = {c.name: c for c in choices}
    assert by_name["model.layers.0.mlp.down_proj"].block_size == 128
    assert by_name["model.layers.0.self_attn.q_proj"].block_size == 64
    assert by_name["model.layers.0.self_attn.q_proj"].reason == "width 64 is not a multiple of 128: block 64"


@pytest.mark.parametrize("precision", ["int8-weight", "int4-weight"])
def test_weight_only_precisions_are_refused_with_the_reason(precision, tmp_path):
    with pytest.raises(UsageError, match=f"^{precision} is not available for a language-model .pte: XNNPACK .* wrong logits"):
        export_pte_lm(tiny("llama"), tmp_path / "m.pte", precision)
    assert not list(tmp_path.iterdir())


def test_asymmetric_8da4w_is_refused_before_it_lowers_to_garbage(tmp_path):
    from compress.lm.pte_kv import LayerChoice

    layers = [LayerChoice("model.layers.0.mlp.up_proj", "linear", "8da4w", 32, False, "asked")]
    with pytest.raises(UsageError, match="asymmetric int4 weights lowers to XNNPACK but computes garbage"):
        export_pte_lm(tiny("llama"), tmp_path / "m.pte", "8da4w", layers=layers)
    assert not list(tmp_path.iterdir())


def test_decoder_refuses_what_the_cache_cannot_hold_and_files_that_are_not_lm_programs(llama_8da4w, tmp_path):
    _, result, _ = llama_8da4w
    decoder = PteDecoder(result.path)
    with pytest.raises(UsageError, match=f"65 tokens do not fit the KV cache of model.8da4w.pte \\({MAX_CONTEXT} positions\\)"):
        decoder.prefill([1] * (MAX_CONTEXT + 1))
    decoder.prefill([1] * 60)
    with pytest.raises(UsageError, match="do not fit the KV cache"):
        decoder.prefill([1] * 5)
    with pytest.raises(UsageError, match="token ids must lie in 0..255"):
        decoder.reset() or decoder.prefill([256])
    bogus = tmp_path / "bogus.pte"
    bogus.write_bytes(b"not a program")
    with pytest.raises(UsageError, match="is not a compress language-model .pte"):
        PteDecoder(bogus)
    with pytest.raises(UsageError, match="not found"):
        PteDecoder(tmp_path / "missing.pte")


# --- TFLite (compress.lm.tflite_kv) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_tflite(tmp_path_factory):
    from compress.lm.tflite_kv import export_tflite_lm

    module = tiny("llama")
    return module, export_tflite_lm(module, tmp_path_factory.mktemp("tflite") / "model.fp32.tflite", "fp32", max_context=MAX_CONTEXT)


def test_fp32_tflite_equals_torch_on_prefill_and_decode(llama_tflite):
    from compress.lm.tflite_kv import TfliteDecoder

    module, result = llama_tflite
    assert [t.label for t in result.techniques] == ["export:tflite:litert:external-kv-cache"]
    decoder = TfliteDecoder(result.path, threads=1)
    assert (decoder.max_context, decoder.vocab_size) == (MAX_CONTEXT, 256)
    assert sorted(decoder.runners) == ["decode", "prefill_32"]
    ids = token_ids()
    logits = teacher_forced(decoder, ids)   # 24 ids through prefill_32 (padded), then 8 decode calls
    np.testing.assert_allclose(logits, torch_logits(module, ids), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(teacher_forced(decoder, ids), logits, atol=1e-6)
    decoder.reset()
    with pytest.raises(UsageError, match="40 tokens at position 0 fit no prefill signature of model.fp32.tflite \\(lengths \\[32\\]"):
        decoder.prefill(token_ids(40))


# precision → (technique, file size / fp32 file's, top-1 floor, max |logit difference|); measured on this random
# model: 8da4w 0.42 of the size, top-1 0.72 (as the 8da4w .pte's 0.78), max diff 0.15; int8-weight 0.56, 0.94, 0.007
TFLITE_QUANTIZED = {"8da4w": ("ptq:8da4w:block32:litert-recipe", 0.5, 0.6, 0.5),
                    "int8-weight": ("ptq:int8-weight:per-channel:litert-recipe", 0.65, 0.85, 0.05)}


@pytest.mark.parametrize("precision", sorted(TFLITE_QUANTIZED))
def test_quantized_tflite_is_smaller_and_agrees_with_torch(precision, llama_tflite, tmp_path):
    from compress.lm.tflite_kv import TfliteDecoder, export_tflite_lm

    technique, size_ratio, top1_floor, max_diff = TFLITE_QUANTIZED[precision]
    module, fp32 = llama_tflite
    result = export_tflite_lm(module, tmp_path / f"model.{precision}.tflite", precision, max_context=MAX_CONTEXT)
    assert result.techniques[-1].label == technique
    assert result.path.stat().st_size < size_ratio * fp32.path.stat().st_size
    ids = token_ids(seed=2)
    logits = teacher_forced(TfliteDecoder(result.path, threads=2), ids)
    reference = torch_logits(module, ids)
    top1 = float((logits.argmax(-1) == reference.argmax(-1)).mean())
    assert top1 >= top1_floor, top1
    assert np.abs(logits - reference).max() < max_diff


def test_tflite_refuses_what_it_cannot_build_with_the_reason(tmp_path):
    import transformers

    from compress.lm.tflite_kv import export_tflite_lm

    with pytest.raises(UsageError, match="^int4-weight is not available for a language-model .tflite: litert-torch's generative recipes"):
        export_tflite_lm(tiny("llama"), tmp_path / "m.tflite", "int4-weight")
    gemma2 = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16)).eval()
    with pytest.raises(UsageError, match="^gemma2: attention logit soft-capping is not in compress.s KV-cache attention \\(.pte and .tflite\\)"):
        export_tflite_lm(gemma2, tmp_path / "m.tflite", "fp32")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_smollm2_8da4w_pte_perplexity_close_to_float(tmp_path):
    """The real SmolLM2-135M (its Q4_1 GGUF dequantized), cut to its first 4 layers to keep the lowering short: the
    8da4w .pte on held-out text in ExecuTorch vs the same float layers in torch. A 4-layer cut is no language model
    (its perplexity is in the millions: measured 2.8e7 float, 1.5e7 8da4w), so top-1 agreement carries the check;
    the full model's perplexities are bench/lm_pte.py's."""
    import time

    from bench.lm_pte import _load_smollm2, held_out_windows, scores, torch_logits

    model, tokenizer = _load_smollm2()
    model.model.layers = model.model.layers[:4]
    model.config.num_hidden_layers = 4
    windows = held_out_windows(tokenizer, 2, length=64)
    reference = torch_logits(model, windows)
    result = export_pte_lm(model, tmp_path / "smollm2.8da4w.pte", "8da4w", max_context=128)
    decoder = PteDecoder(result.path, threads=2)
    logits = []
    for ids in windows:
        decoder.reset()
        logits.append(decoder.prefill(ids))
    float_ppl, _ = scores(reference, windows, reference)
    ppl, top1 = scores(logits, windows, reference)
    start = time.perf_counter()
    token = int(logits[-1][-1].argmax())
    for _ in range(16):
        token = int(decoder.decode(token).argmax())
    print(f"4-layer SmolLM2: float ppl {float_ppl:.1f}, 8da4w .pte ppl {ppl:.1f}, top-1 {top1:.2f}, "
          f"decode {16 / (time.perf_counter() - start):.1f} tok/s at 2 threads")
    assert ppl < 1.25 * float_ppl and top1 > 0.6, (float_ppl, ppl, top1)   # top-1 measured 0.73
