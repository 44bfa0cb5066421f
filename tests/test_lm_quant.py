"""Decoder-LM quantization schemes and accuracy algorithms on tiny random models (issue 27): the per-layer plan says
what it did with widths a group does not divide, snapped weights lie on their grid (and stay put when a GGUF source's
grid can hold them), GPTQ and AWQ beat round-to-nearest int4 on the layer outputs, SmoothQuant beats plain W8A8, and
sensitivity finds the layer that was damaged.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import transformers

from compress.errors import UsageError
from compress.lm.awq import awq_
from compress.lm.calibrate import decoder_layers, first_layer_inputs
from compress.lm.gptq import gptq_
from compress.lm.schemes import plan_layers, quantize_weight, quantized_activations, snap_weights_, weight_matrix
from compress.lm.sensitivity import layer_sensitivity, mix_by_sensitivity, plan_bytes
from compress.lm.smoothquant import smoothquant_


def tiny_llama(hidden=128, intermediate=256, tie=False, outliers=True):
    """A 2-layer random Llama; ``outliers`` gives its norms a few large channels, as trained LLMs' activations have."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=intermediate,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=256, tie_word_embeddings=tie)
    model = transformers.LlamaForCausalLM(cfg).eval()
    if outliers:
        with torch.no_grad():
            for layer in model.model.layers:
                for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                    norm.weight[[3, 17, 40]] *= 25
    return model


def windows(count=8, length=64, seed=1):
    return torch.randint(0, 256, (count, length), generator=torch.Generator().manual_seed(seed))


def layer_output_error(reference, model, ids, activations=()):
    """Sum over decoder layers of the squared error of each layer's output, every layer fed the float inputs."""
    inputs = first_layer_inputs(reference, ids)
    total = 0.0
    for ref_layer, layer in zip(decoder_layers(reference), decoder_layers(model)):
        with quantized_activations(model, [n for n in activations if n.startswith(_prefix(model, layer))]):
            got = inputs.outputs(layer)
        want = inputs.outputs(ref_layer)
        total += sum(float(((g - w) ** 2).sum()) for g, w in zip(got, want))
        inputs = inputs.through(ref_layer)
    return total


def _prefix(model, layer):
    return next(n for n, m in model.named_modules() if m is layer) + "."


def test_plan_layers_says_how_each_width_meets_the_group():
    model = tiny_llama(hidden=96, intermediate=200, outliers=False)
    plan = {c.name: c for c in plan_layers(model, "int4-weight", block_size=64)}
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert set(linears) <= set(plan) and "model.embed_tokens" in plan  # nothing skipped
    q, down = plan["model.layers.0.self_attn.q_proj"], plan["model.layers.0.mlp.down_proj"]
    assert (q.block_size, q.reason) == (32, "width 96 is not a multiple of 64: block 32")
    assert (down.block_size, down.reason) == (None, "width 200 is not a multiple of 64: per output channel")
    assert plan["lm_head"].kind == "head" and plan["lm_head"].precision == "int8-weight"
    assert all(c.symmetric is False for c in plan.values() if c.precision == "int4-weight")
    kept = plan_layers(model, "8da4w", keep_float=["*.0.mlp.*"])
    assert {c.name for c in kept if c.precision == "fp32"} == {f"model.layers.0.mlp.{p}_proj"
                                                              for p in ("gate", "up", "down")}
    assert all(c.symmetric for c in kept if c.precision == "8da4w")
    with pytest.raises(UsageError, match="8da4w needs symmetric"):
        plan_layers(model, "8da4w", symmetric=False)
    with pytest.raises(UsageError, match="no layer matches 'attn.q'"):
        plan_layers(model, "int4-weight", keep_float=["attn.q"])
    with pytest.raises(UsageError, match="block size 48"):
        plan_layers(model, "int4-weight", block_size=48)


@pytest.mark.parametrize("precision,symmetric", [("int4-weight", False), ("int4-weight", True), ("8da4w", True),
                                                 ("int8-weight", None)])
def test_snap_weights_puts_every_weight_on_its_grid(precision, symmetric):
    model = tiny_llama(hidden=96, intermediate=200, outliers=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    applied = snap_weights_(model, plan_layers(model, precision, block_size=64, symmetric=symmetric))
    for choice in applied:
        w = weight_matrix(model.get_submodule(choice.name))
        assert not torch.equal(w, before[choice.name + ".weight"]), choice.name  # it was rounded
        again = quantize_weight(w, choice.precision, choice.block_size, choice.symmetric)
        assert torch.allclose(again.dequantize(), w, rtol=0, atol=1e-7), choice.name  # a fixed point of its grid
        levels = 255 if choice.precision == "int8-weight" else 16
        assert max(len(torch.unique(g)) for g in w.reshape(-1, again.block_size)) <= levels


def test_snap_weights_on_gpt2_conv1d_layers():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=1, n_head=4,
                                                                 n_positions=64)).eval()
    applied = {c.name: c for c in snap_weights_(model, plan_layers(model, "int4-weight", symmetric=True))}
    assert applied["transformer.wpe"].precision == "fp32" and "position" in applied["transformer.wpe"].reason
    w = weight_matrix(model.transformer.h[0].attn.c_attn)  # Conv1D stores [in, out]: grouped along in
    assert w.shape == (192, 64)
    assert torch.equal(quantize_weight(w, "int4-weight", 32, True).dequantize(), w)


def test_tied_head_is_untied_only_when_its_grid_differs():
    model = tiny_llama(tie=True, outliers=False)
    snap_weights_(model, plan_layers(model, "int4-weight", embeddings="int8-weight", head="int8-weight"))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    snap_weights_(model, plan_layers(model, "int4-weight", embeddings="int4-weight", head="int8-weight"))
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert len(torch.unique(model.model.embed_tokens.weight[0, :32])) <= 16
    assert len(torch.unique(model.lm_head.weight[0])) > 16


def q4_1_source(model, name, seed=0):
    """Give ``name`` weights dequantized from a synthetic Q4_1 grid, as gguf.quants does: (d * q) + m per 32-block."""
    g = torch.Generator().manual_seed(seed)
    w = weight_matrix(model.get_submodule(name))
    out, width = w.shape
    d = (torch.rand(out, width // 32, generator=g) * 0.01 + 0.001).half().float()
    m = (-torch.rand(out, width // 32, generator=g) * 0.05).half().float()
    q = torch.randint(0, 16, (out, width), generator=g).float().reshape(out, width // 32, 32)
    with torch.no_grad():
        w.copy_(((d.unsqueeze(-1) * q) + m.unsqueeze(-1)).reshape(out, width))
    return SimpleNamespace(quant_type="Q4_1", block_size=32, scales=d.numpy(), mins=m.numpy())


def test_grid_aware_snap_leaves_a_q4_1_source_bit_identical():
    model = tiny_llama(outliers=False)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    grids = {n + ".weight": q4_1_source(model, n, seed=i) for i, n in enumerate(names)}
    source = {n: weight_matrix(model.get_submodule(n)).clone() for n in names}
    blind = copy.deepcopy(model)

    applied = {c.name: c for c in snap_weights_(model, plan_layers(model, "int4-weight", block_size=32), grids)}
    for n in names:
        assert torch.equal(weight_matrix(model.get_submodule(n)), source[n]), n
        assert applied[n].reason.startswith("grid-aware: source Q4_1 g32 held exactly by int4 asymmetric g32")
    snap_weights_(blind, plan_layers(blind, "int4-weight", block_size=32))  # min/max rounding moves them
    assert not torch.equal(weight_matrix(blind.get_submodule(names[0])), source[names[0]])

    symmetric = {c.name: c for c in snap_weights_(copy.deepcopy(blind), plan_layers(blind, "8da4w"), grids)}
    assert "re-rounded from source Q4_1 g32 (a second rounding error" in symmetric[names[0]].reason


def test_grid_aware_snap_keeps_q8_0_at_int8_g32_for_a_tied_embedding_and_head():
    model = tiny_llama(tie=True, outliers=False)  # as SmolLM2's GGUF: token_embd is Q8_0, the head tied to it
    w = weight_matrix(model.model.embed_tokens)
    d = (torch.rand(w.shape[0], w.shape[1] // 32) * 0.001 + 1e-4).half().float()
    q = torch.randint(-128, 128, w.shape).float()
    with torch.no_grad():
        w.copy_(q * d.repeat_interleave(32, dim=1))
    source = w.clone()
    grids = {"model.embed_tokens.weight": SimpleNamespace(quant_type="Q8_0", block_size=32, scales=d.numpy(),
                                                          mins=None)}
    applied = {c.name: c for c in snap_weights_(model, plan_layers(model, "int4-weight"), grids)}
    assert torch.equal(model.lm_head.weight, source) and model.lm_head.weight is model.model.embed_tokens.weight
    for name in ("model.embed_tokens", "lm_head"):
        assert applied[name].block_size == 32 and applied[name].reason.startswith("grid-aware: source Q8_0 g32")


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_beats_round_to_nearest_at_int4(symmetric):
    reference, ids = tiny_llama(), windows()
    plan = plan_layers(reference, "int4-weight", symmetric=symmetric)
    rtn, gptq = copy.deepcopy(reference), copy.deepcopy(reference)
    snap_weights_(rtn, plan)
    messages = []
    done = gptq_(gptq, plan, ids, progress=messages.append)
    errors = layer_output_error(reference, rtn, ids), layer_output_error(reference, gptq, ids)
    assert errors[1] < 0.8 * errors[0], errors
    assert messages == ["GPTQ: decoder layer 1/2 (7 linears)", "GPTQ: decoder layer 2/2 (7 linears)"]
    assert all("GPTQ on 8 windows" in c.reason for c in done if c.kind == "linear")
    for choice in done:  # the result is on the layer's grid: any backend rounding it again writes the same values
        w = weight_matrix(gptq.get_submodule(choice.name))
        grid = quantize_weight(w, choice.precision, choice.block_size, choice.symmetric).dequantize()
        assert torch.allclose(grid, w, rtol=0, atol=1e-6), choice.name


def test_awq_beats_round_to_nearest_at_int4_and_keeps_the_float_function():
    reference, ids = tiny_llama(), windows()
    plan = plan_layers(reference, "int4-weight", symmetric=True)
    rtn, awq = copy.deepcopy(reference), copy.deepcopy(reference)
    snap_weights_(rtn, plan)
    scaled_only = copy.deepcopy(reference)
    awq_(scaled_only, plan, ids, clip=False)
    with torch.no_grad():  # folding the scales leaves the float model's function unchanged
        assert torch.allclose(reference(ids[:2]).logits, scaled_only(ids[:2]).logits, atol=1e-4)
    done = awq_(awq, plan, ids)
    snap_weights_(awq, done)
    errors = layer_output_error(reference, rtn, ids), layer_output_error(reference, awq, ids)
    assert errors[1] < 0.8 * errors[0], errors
    assert any("AWQ alpha 0." in c.reason and "AWQ alpha 0.00" not in c.reason for c in done)
    assert all(", clip " in c.reason for c in done if c.name.endswith(("v_proj", "up_proj", "down_proj")))


def test_smoothquant_lowers_w8a8_error():
    reference, ids = tiny_llama(), windows()
    plan = plan_layers(reference, "int8-weight")
    linears = [c.name for c in plan if c.kind == "linear"]
    plain, smooth = copy.deepcopy(reference), copy.deepcopy(reference)
    snap_weights_(plain, plan)
    done = smoothquant_(smooth, plan, ids)
    snap_weights_(smooth, done)
    errors = (layer_output_error(reference, plain, ids, activations=linears),
              layer_output_error(reference, smooth, ids, activations=linears))
    assert errors[1] < 0.5 * errors[0], errors
    assert "SmoothQuant alpha 0.50" in next(c.reason for c in done if c.name.endswith("0.mlp.up_proj"))


def test_sensitivity_ranks_a_damaged_layer_first_and_mixed_precision_keeps_it_at_int8():
    model, ids = tiny_llama(outliers=False), windows(count=4, length=32)
    damaged = "model.layers.1.self_attn.o_proj"
    with torch.no_grad():  # one spike per group: int4 rounding flattens the rest of each group to zero
        model.get_submodule(damaged).weight[:, ::32] = 1.0
    plan = plan_layers(model, "int4-weight", symmetric=True)
    scores = layer_sensitivity(model, plan, ids)
    assert max(scores, key=scores.get) == damaged
    alone = copy.deepcopy(model)  # measured from its own layer on (cached inputs), the KL is the full model's
    snap_weights_(alone, [c for c in plan if c.name == damaged])
    with torch.no_grad():
        p, q = model(ids).logits.log_softmax(-1), alone(ids).logits.log_softmax(-1)
    assert scores[damaged] == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-3)
    mixed = {c.name: c for c in mix_by_sensitivity(model, plan, ids)}
    assert mixed[damaged].precision == "int8-weight"
    assert mixed[damaged].reason.startswith("int8 per output channel: sensitivity rank 1/")
    assert plan_bytes(model, list(mixed.values())) <= 1.1 * plan_bytes(model, plan)
    assert all("sensitivity rank" in c.reason for c in mixed.values())


@pytest.mark.slow
def test_smollm2_q4_1_converts_grid_aware_to_int4_without_moving_a_weight():
    from bench.lm_algorithms import load_smollm2

    model, _tokenizer, grids = load_smollm2()
    assert {g.quant_type for g in grids.values()} == {"Q4_1", "Q8_0"}  # linears Q4_1, the tied token_embd Q8_0
    source = {n: p.detach().clone() for n, p in model.named_parameters()}
    applied = snap_weights_(model, plan_layers(model, "int4-weight", block_size=32), grids)
    assert len(applied) == 30 * 7 + 2 and all(c.reason.startswith("grid-aware: source Q") for c in applied)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, source[n])]
    assert moved == []
    blind = snap_weights_(model, plan_layers(model, "int4-weight", symmetric=True), grids)
    assert all("a second rounding error" in c.reason for c in blind if c.kind == "linear")
