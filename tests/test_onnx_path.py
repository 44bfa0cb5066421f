"""The ONNX path: real exports, real onnxruntime quantization, real sessions on the real digits data.

Accuracy is measured on the test split; calibration samples come from train+val only.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from compress.data import Dataset, load_dataset
from compress.backends import get as get_format
from compress.backends.registry import QuantizeJob
from compress.errors import UsageError
from compress.data.evaluate import fidelity, task_metrics
from compress.backends.onnx.cpu_features import cpu_int8_features, int8_speed_explanation, needs_reduce_range
from compress.backends.onnx.export import export_notes, export_onnx
from compress.backends.faithful import output_fidelity
from compress.backends.onnx.choose import Candidate, pick
from compress.backends.onnx.fusions import fuse_transformer
from compress.backends.onnx.preflight import onnx_preflight
from compress.backends.onnx.quantize import analyze_sensitivity, quantize_onnx
from compress.loading.model import ModelHandle, load_model
from compress.runtimes import open_runner, run_dataset
from compress.backends.onnx.session import OrtRunner
from compress.loading.spec import InputSpec
from compress.zoo import ZOO
from tests.models_for_tests import StatefulGRU, TokenClassifier


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _accuracy(path: Path, data: Dataset) -> float:
    return task_metrics(data.heads, run_dataset(OrtRunner(path), data), data.y)["value"]


def _weight_fed_by_dequantize(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """True when the node's weight input comes from DequantizeLinear of an int8 initializer."""
    producers = {out: n for n in model.graph.node for out in n.output}
    int8 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    producer = producers.get(node.input[1])
    return producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in int8


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint, tmp_path_factory):
    """The default-trained zoo mnist_cnn, its fp32 ONNX file and its data splits."""
    handle = load_model(zoo_checkpoint("mnist_cnn"))
    folder = tmp_path_factory.mktemp("mnist")
    fp32 = export_onnx(handle, folder / "model.fp32.onnx")
    splits = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])
    return {"handle": handle, "fp32": fp32, "splits": splits, "folder": folder, "fp32_accuracy": _accuracy(fp32, splits.test)}


@pytest.fixture(scope="module")
def lstm(zoo_checkpoint, tmp_path_factory):
    handle = load_model(zoo_checkpoint("lstm"))
    fp32 = export_onnx(handle, tmp_path_factory.mktemp("lstm") / "model.fp32.onnx")
    return {"fp32": fp32, "splits": load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])}


@pytest.fixture(scope="module")
def transformer(zoo_checkpoint, tmp_path_factory):
    """A 1-epoch narrow zoo transformer, its fp32 ONNX export and its data splits."""
    handle = load_model(zoo_checkpoint("transformer", epochs=1, width=0.125))
    fp32 = export_onnx(handle, tmp_path_factory.mktemp("transformer") / "model.fp32.onnx")
    return {"handle": handle, "fp32": fp32, "splits": load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])}


# --- export ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_architecture_exports_with_a_dynamic_batch_and_matches_torch(name, tmp_path):
    entry = ZOO[name]
    torch.manual_seed(0)
    module = entry.build(width=0.25 if name in ("cnn64", "transformer") else 1.0).eval()
    heads = load_dataset(entry.dataset).heads
    handle = ModelHandle(module, entry.input_spec, "memory", "pickle", "", heads=heads)
    path = export_onnx(handle, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == entry.input_spec.names
    assert [o.name for o in model.graph.output] == [h.name for h in heads]  # head names: digit, digit_pair, ...
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in model.graph.input)
    inputs = entry.input_spec.example_inputs(batch=5, seed=1)
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = OrtRunner(path).run(tuple(x.numpy() for x in inputs))
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want.numpy(), rtol=1e-4, atol=1e-4)
    assert "torch.export (dynamo)" in export_notes(path)[0]


def test_export_is_byte_for_byte_deterministic(mnist):
    again = export_onnx(mnist["handle"], mnist["folder"] / "again.fp32.onnx")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(mnist["fp32"].read_bytes()).digest()


def test_op_without_onnx_translation_is_a_usage_error_naming_op_and_layer(tmp_path):
    class CumMax(nn.Module):
        def forward(self, x):
            return torch.cummax(x, dim=-1).values

    model = nn.Sequential(nn.Linear(8, 8), CumMax()).eval()
    handle = ModelHandle(model, InputSpec.parse(["1x8"]), "memory", "pickle", "")
    with pytest.raises(UsageError, match=r"aten\.cummax.*layer '1'"):
        export_onnx(handle, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


# --- int8 static on the real digits data ---------------------------------------------------------------------


def test_mnist_int8_keeps_accuracy_is_about_4x_smaller_and_really_int8(mnist):
    splits = mnist["splits"]
    result = quantize_onnx(QuantizeJob(None, "int8", mnist["folder"] / "model.int8.onnx", mnist["fp32"],
                                       splits.calibration(256)))
    accuracy = _accuracy(result.path, splits.test)
    assert mnist["fp32_accuracy"] > 0.9
    assert mnist["fp32_accuracy"] - accuracy <= 0.005
    assert mnist["fp32"].stat().st_size / result.path.stat().st_size >= 3.4
    model = onnx.load(str(result.path))
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == 5 and all(_weight_fed_by_dequantize(model, n) for n in weighted)
    assert result.precision == "int8" and result.float_ops == []
    assert [t.label for t in result.techniques] == ["ptq:int8-static:minmax:per-channel" + (":reduce-range" if needs_reduce_range(cpu_int8_features()) else "")]
    assert any(note.startswith("reduce_range") for note in result.notes)
    again = quantize_onnx(QuantizeJob(None, "int8", mnist["folder"] / "again.int8.onnx", mnist["fp32"],
                                      splits.calibration(256)))
    assert again.path.read_bytes() == result.path.read_bytes()


def test_int8_dynamic_quantizes_conv_and_linear_layers(mnist):
    result = quantize_onnx(QuantizeJob(None, "int8-dynamic", mnist["folder"] / "model.int8-dynamic.onnx",
                                       mnist["fp32"]))
    ops = _ops(result.path)
    assert ops.count("ConvInteger") == 3 and ops.count("MatMulInteger") == 2  # Linear layers rewritten Gemm -> MatMul
    assert mnist["fp32_accuracy"] - _accuracy(result.path, mnist["splits"].test) <= 0.005
    assert result.path.stat().st_size < 0.3 * mnist["fp32"].stat().st_size


def test_fp16_halves_the_file_and_keeps_float32_inputs(mnist):
    result = quantize_onnx(QuantizeJob(None, "fp16", mnist["folder"] / "model.fp16.onnx", mnist["fp32"]))
    assert result.path.stat().st_size <= 0.52 * mnist["fp32"].stat().st_size
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {i.data_type for i in model.graph.initializer if len(i.dims) > 1} == {onnx.TensorProto.FLOAT16}
    assert abs(mnist["fp32_accuracy"] - _accuracy(result.path, mnist["splits"].test)) <= 0.003


def test_exclude_keeps_the_named_torch_layer_in_float(mnist):
    result = quantize_onnx(QuantizeJob(None, "int8", mnist["folder"] / "model.mixed.onnx", mnist["fp32"],
                                       mnist["splits"].calibration(128), exclude=["classifier.1"]))
    model = onnx.load(str(result.path))
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    float_weight = [n for n in gemms if not _weight_fed_by_dequantize(model, n)]
    assert len(gemms) == 2 and len(float_weight) == 1
    weight = next(i for i in model.graph.initializer if i.name == float_weight[0].input[1])
    assert weight.data_type == onnx.TensorProto.FLOAT and list(weight.dims) == [64, 576]  # classifier.1 = Linear(576, 64)
    assert result.float_ops == [{"op": "Gemm", "node": float_weight[0].name, "layer": "classifier.1", "reason": "kept in float by --exclude"}]
    fp16 = quantize_onnx(QuantizeJob(None, "fp16", mnist["folder"] / "mixed.fp16.onnx", mnist["fp32"],
                                     exclude=["classifier.1"]))
    assert [(row["layer"], row["reason"]) for row in fp16.float_ops] == [("classifier.1", "kept in float by --exclude")]
    with pytest.raises(UsageError, match="layers: classifier.1, classifier.3, features.0, features.3, features.6$"):
        quantize_onnx(QuantizeJob(None, "int8", mnist["folder"] / "bad.onnx", mnist["fp32"],
                                  mnist["splits"].calibration(32), exclude=["no.such"]))


def test_sensitivity_ranks_layers_by_torch_name(mnist):
    rows = analyze_sensitivity(mnist["fp32"], mnist["splits"].calibration(128), mnist["splits"].test.take(128))
    assert sorted(r["layer"] for r in rows) == ["classifier.1", "classifier.3", "features.0", "features.3", "features.6"]
    assert [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)
    assert all(15 < r["sqnr_db"] < 200 and r["top1_agreement"] >= 0.95 for r in rows)


# --- transformer fusions and the measured int8 choice ---------------------------------------------------------


def _torch_outputs(handle: ModelHandle, data: Dataset) -> np.ndarray:
    with torch.no_grad():
        return handle.module(*(torch.from_numpy(a) for a in data.x)).numpy()


def test_transformer_fuses_attention_and_skip_layernorm_and_int8_of_the_fused_graph_matches_torch(transformer, tmp_path):
    fusion = fuse_transformer(onnx.load(str(transformer["fp32"])))
    assert fusion.counts == {"Attention": 1, "SkipLayerNormalization": 2}
    fused = tmp_path / "fused.onnx"
    onnx.save(fusion.model, str(fused))
    test = transformer["splits"].test
    expected = _torch_outputs(transformer["handle"], test)
    np.testing.assert_allclose(run_dataset(OrtRunner(fused), test)[0], expected, rtol=1e-4, atol=1e-4)
    result = quantize_onnx(QuantizeJob(None, "int8", tmp_path / "int8.onnx", fused,
                                       transformer["splits"].calibration(128)))
    ops = _ops(result.path)
    assert ops.count("QAttention") == 1 and ops.count("SkipLayerNormalization") == 2 and "Attention" not in ops
    assert result.techniques[0].label == "ptq:int8-dynamic:Attention" and result.float_ops == []
    assert fidelity(expected, run_dataset(OrtRunner(result.path), test)[0])["top1_agreement"] >= 0.97


def test_the_pick_never_trades_fidelity_for_speed_and_breaks_ties_by_size(tmp_path):
    def candidate(name, size, p50, sqnr, agreement):
        (tmp_path / name).write_bytes(b"x" * size)
        return Candidate(name, tmp_path / name, p50_ms=p50, fidelity={"sqnr_db": sqnr, "cosine": 0.999, "top1_agreement": agreement})

    default = candidate("static", 1000, 2.30, 30.0, 0.99)
    noisy = candidate("fast-but-noisy", 900, 1.00, 20.0, 0.99)
    disagrees = candidate("fast-but-disagrees", 900, 1.00, 35.0, 0.98)
    assert pick([default, noisy, disagrees]) is default
    tie_small = candidate("tie-smaller", 990, 2.25, 29.0, 0.99)
    assert pick([default, tie_small]) is tie_small                 # within 5 % of the fastest: the smaller file
    faster = candidate("faster", 1010, 2.00, 31.0, 1.0)
    assert pick([default, tie_small, faster]) is faster            # 2.25 is over 5 % slower than 2.00


def test_the_pick_compares_top1_agreement_only_where_an_output_is_class_scores():
    rng = np.random.default_rng(0)
    logits, embedding = rng.normal(size=(64, 10)), rng.normal(size=(64, 32))
    near_ties = embedding.copy()
    near_ties[np.arange(64), embedding.argmax(1)] -= 5.0  # every argmax of the embedding moves; its direction barely
    candidate = [logits + 1e-3, near_ties]
    assert output_fidelity([logits, embedding], candidate)["top1_agreement"] == 0.0     # kinds unknown: every class axis
    judged = output_fidelity([logits, embedding], candidate, ["classes", "embedding"])
    assert judged["top1_agreement"] == 1.0 and judged["cosine"] < 0.99                # the embedding is judged by cosine
    assert output_fidelity([embedding], [near_ties], ["embedding"])["top1_agreement"] is None


def test_int8_onnx_of_a_transformer_is_the_fastest_faithful_variant_timed_here(transformer, tmp_path):
    splits = transformer["splits"]
    job = QuantizeJob(transformer["handle"], "int8", tmp_path / "model.int8.onnx", transformer["fp32"], splits.calibration(128))
    result = get_format("onnx").quantize(job)
    note = next(n for n in result.notes if n.startswith("int8 variant picked by timing on this CPU"))
    assert "static " in note and "dynamic MatMul/Gemm " in note and "fused" not in note  # two quantizations, not four
    assert note.count("(kept)") == 1 and result.path == job.out and result.path.is_file()
    fused = result.techniques[0].kind == "graph-fusion"  # when the fp32 file is the fused graph
    assert ("SkipLayerNormalization" in _ops(result.path)) == fused
    expected = _torch_outputs(transformer["handle"], splits.test)
    assert fidelity(expected, run_dataset(OrtRunner(result.path), splits.test)[0])["top1_agreement"] >= 0.97


def test_dynamic_matmuls_leave_the_attention_products_float_and_quantize_every_weighted_matmul(transformer, tmp_path):
    splits = transformer["splits"]
    result = quantize_onnx(QuantizeJob(None, "int8", tmp_path / "int8.onnx", transformer["fp32"],
                                       splits.calibration(64), dynamic_op_types=["MatMul", "Gemm"]))
    model = onnx.load(str(result.path))
    weights = {i.name for i in model.graph.initializer}
    float_matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(float_matmuls) == 2 and not any(weights & set(n.input) for n in float_matmuls)  # QKᵀ and AV
    assert "QLinearMatMul" not in _ops(result.path) and _ops(result.path).count("MatMulInteger") == 7  # 6 Linear + head
    assert any("2 products of two activations" in note and "stay float" in note for note in result.notes)
    expected = _torch_outputs(transformer["handle"], splits.test)
    assert fidelity(expected, run_dataset(OrtRunner(result.path), splits.test)[0])["top1_agreement"] >= 0.97


# --- recurrent layers -----------------------------------------------------------------------------------------


def test_lstm_int8_really_quantizes_the_lstm_and_shrinks_the_file(lstm):
    splits = lstm["splits"]
    result = quantize_onnx(QuantizeJob(None, "int8", lstm["fp32"].with_name("model.int8.onnx"), lstm["fp32"],
                                       splits.calibration(256)))
    ops = _ops(result.path)
    assert "LSTM" not in ops and ops.count("DynamicQuantizeLSTM") == 1
    assert result.precision == "mixed" and result.techniques[0].label == "ptq:int8-dynamic:LSTM"
    assert result.techniques[1].label.startswith("ptq:int8-static:minmax") and result.float_ops == []
    model = onnx.load(str(result.path))
    head = next(n for n in model.graph.node if n.op_type == "MatMul")  # the Linear head, rewritten from Gemm
    assert _weight_fed_by_dequantize(model, head)
    assert result.path.stat().st_size < 0.5 * lstm["fp32"].stat().st_size
    fp32_accuracy = _accuracy(lstm["fp32"], splits.test)
    assert fp32_accuracy > 0.9 and fp32_accuracy - _accuracy(result.path, splits.test) <= 0.01


def test_int8_onnx_of_an_lstm_keeps_the_fused_lstm_op_and_the_smaller_of_equally_fast_variants(lstm, tmp_path):
    assert _ops(lstm["fp32"]).count("LSTM") == 1  # the dynamo exporter emits ONNX's LSTM op, not an unrolled loop
    splits = lstm["splits"]
    job = QuantizeJob(None, "int8", tmp_path / "model.int8.onnx", lstm["fp32"], splits.calibration(256))
    result = get_format("onnx").quantize(job)
    assert _ops(result.path).count("DynamicQuantizeLSTM") == 1
    assert any(n.startswith("int8 variant picked by timing on this CPU") for n in result.notes)
    static = quantize_onnx(QuantizeJob(None, "int8", tmp_path / "static.onnx", lstm["fp32"], splits.calibration(256)))
    assert result.path.stat().st_size <= static.path.stat().st_size
    assert _accuracy(lstm["fp32"], splits.test) - _accuracy(result.path, splits.test) <= 0.005


def test_int8_with_dynamic_linear_layers_keeps_convs_static(zoo_checkpoint, cli, tmp_path):
    model = zoo_checkpoint("mnist_cnn", epochs=2, width=0.5)
    result = cli("quantize", model, "--format", "onnx", "--dynamic-ops", "MatMul,Gemm", "--no-bench", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    artifact = json.loads((tmp_path / "report.json").read_text())["artifacts"][-1]
    assert artifact["precision"] == "mixed" and artifact["verified_in"] == ["onnxruntime"]
    dynamic, static = artifact["techniques"]
    assert dynamic["label"] == "ptq:int8-dynamic:Gemm" and (dynamic["scheme"], dynamic["op_types"]) == ("dynamic", ["Gemm"])
    assert (static["scheme"], static["calibration"], static["per_channel"]) == ("static", "minmax", True)
    assert artifact["metrics"]["degradation"] <= 0.01 and artifact["float_ops"] == []
    quantized = onnx.load(str(tmp_path / artifact["path"]))
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("MatMulInteger") == 2 and "DynamicQuantizeLinear" in ops and not {"MatMul", "Gemm"} & set(ops)
    convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3 and all(_weight_fed_by_dequantize(quantized, n) for n in convs)
    bad = cli("quantize", model, "--format", "onnx", "--dynamic-ops", "Relu", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and bad.stderr.strip() == \
        "error: --dynamic-ops: op type 'Relu' cannot be quantized dynamically; choose from Conv, Gemm, MatMul"
    with pytest.raises(UsageError, match="'LSTM' cannot be quantized dynamically"):
        quantize_onnx(QuantizeJob(None, "int8", tmp_path / "x.onnx", tmp_path / "model.fp32.onnx", dynamic_op_types=["LSTM"]))


def test_preflight_flags_the_lstm_under_static_int8(lstm):
    findings = onnx_preflight(lstm["fp32"], "int8")
    assert [(f.op, f.layer, f.severity) for f in findings] == [("LSTM", "lstm", "info")]
    assert "quantized dynamically" in findings[0].message
    weight_only = onnx_preflight(lstm["fp32"], "int4-weight")
    assert [(f.op, f.severity) for f in weight_only] == [("LSTM", "warning")]


def test_rnn_int8_is_smaller_and_accurate(zoo_checkpoint, tmp_path):
    handle = load_model(zoo_checkpoint("rnn", epochs=10))
    splits = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])
    fp32 = export_onnx(handle, tmp_path / "model.fp32.onnx")
    result = quantize_onnx(QuantizeJob(None, "int8", tmp_path / "model.int8.onnx", fp32, splits.calibration(256)))
    model = onnx.load(str(result.path))
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert matmuls and all(_weight_fed_by_dequantize(model, n) for n in matmuls)  # nn.RNN is unrolled into MatMuls
    assert result.path.stat().st_size < 0.7 * fp32.stat().st_size
    fp32_accuracy = _accuracy(fp32, splits.test)
    assert fp32_accuracy > 0.85 and fp32_accuracy - _accuracy(result.path, splits.test) <= 0.01


# --- weight-only ----------------------------------------------------------------------------------------------


def test_weight_only_quantizes_linear_layers_to_matmulnbits(zoo_checkpoint, tmp_path):
    handle = load_model(zoo_checkpoint("multitask", epochs=2))  # Linear layers only
    test = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"]).test
    fp32 = export_onnx(handle, tmp_path / "model.fp32.onnx")
    reference = run_dataset(OrtRunner(fp32), test)
    for precision, bits, max_ratio in (("int4-weight", 4, 0.25), ("int8-weight", 8, 0.4)):
        result = quantize_onnx(QuantizeJob(None, precision, tmp_path / f"model.{precision}.onnx", fp32))
        nodes = [n for n in onnx.load(str(result.path)).graph.node if n.op_type == "MatMulNBits"]
        assert len(nodes) == 3 and all(onnx.helper.get_node_attr_value(n, "bits") == bits for n in nodes)
        assert result.path.stat().st_size < max_ratio * fp32.stat().st_size
        outputs = run_dataset(OrtRunner(result.path), test)
        assert all(fidelity(r, o)["top1_agreement"] >= 0.97 for r, o in zip(reference, outputs))
    findings = onnx_preflight(fp32, "int4-weight")
    assert not [f for f in findings if f.severity == "error"]


def test_weight_only_on_a_conv_only_model_is_refused_by_preflight(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval()
    fp32 = export_onnx(ModelHandle(model, InputSpec.parse(["1x1x8x8"]), "memory", "pickle", ""), tmp_path / "conv.onnx")
    findings = onnx_preflight(fp32, "int4-weight")
    assert [f.severity for f in findings] == ["warning", "error"]
    assert "MatMul/Gemm" in findings[-1].message and "--precision int8" in findings[-1].suggestion


# --- other model shapes: two int64 inputs, recurrent state, TorchScript, torch.export -------------------------


def _random_inputs(spec: InputSpec, n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("random", tuple(t.random(n, rng) for t in spec.tensors))


def test_two_int64_inputs_from_torchscript_export_quantize_and_run(tmp_path):
    torch.manual_seed(0)
    model = TokenClassifier().eval()
    ids, mask = torch.randint(0, 50, (2, 12)), torch.ones(2, 12, dtype=torch.int64)
    torch.jit.save(torch.jit.trace(model, (ids, mask)), str(tmp_path / "tokens.pt"))
    handle = load_model(tmp_path / "tokens.pt", input_shapes=["ids=1x12:int64:0-50", "mask=1x12:int64:0-2"])
    fp32 = export_onnx(handle, tmp_path / "tokens.fp32.onnx")
    assert "TorchScript" in export_notes(fp32)[0]
    result = quantize_onnx(QuantizeJob(None, "int8", tmp_path / "tokens.int8.onnx", fp32,
                                       _random_inputs(handle.input_spec, 128, 0)))
    data = _random_inputs(handle.input_spec, 64, 1)
    runner = open_runner(result.path)
    assert runner.name == "onnxruntime" and runner.input_names == ["ids", "mask"]
    with torch.no_grad():
        expected = model(*(torch.from_numpy(a) for a in data.x)).numpy()
    quality = fidelity(expected, run_dataset(runner, data)[0])
    assert quality["sqnr_db"] > 20 and quality["top1_agreement"] >= 0.9


def test_recurrent_state_program_exports_quantizes_and_runs(tmp_path):
    torch.manual_seed(0)
    model = StatefulGRU().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 8), torch.randn(2, 32)), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(tmp_path / "gru.pt2"))
    handle = load_model(tmp_path / "gru.pt2")
    fp32 = export_onnx(handle, tmp_path / "gru.fp32.onnx")
    graph = onnx.load(str(fp32)).graph
    assert [o.name for o in graph.output] == ["output_0", "output_1"]
    assert all(v.type.tensor_type.shape.dim[0].dim_param == "batch" for v in (*graph.input, *graph.output))
    result = quantize_onnx(QuantizeJob(None, "int8", tmp_path / "gru.int8.onnx", fp32,
                                       _random_inputs(handle.input_spec, 128, 0)))
    data = _random_inputs(handle.input_spec, 50, 1)
    with torch.no_grad():
        expected = [t.numpy() for t in model(*(torch.from_numpy(a) for a in data.x))]
    got = OrtRunner(result.path).run(data.x)
    assert [g.shape for g in got] == [(50, 5), (50, 32)]
    assert all(fidelity(e, g)["sqnr_db"] > 20 for e, g in zip(expected, got))


def test_fixed_batch_program_runs_in_chunks(tmp_path):
    torch.manual_seed(0)
    model = TokenClassifier().eval()
    example = (torch.randint(0, 50, (2, 12)), torch.ones(2, 12, dtype=torch.int64))
    torch.export.save(torch.export.export(model, example), str(tmp_path / "static.pt2"))
    fp32 = export_onnx(load_model(tmp_path / "static.pt2"), tmp_path / "static.onnx")
    assert any("fixed at 2" in note for note in export_notes(fp32))
    runner = OrtRunner(fp32)
    data = _random_inputs(InputSpec.parse(["1x12:int64:0-50", "1x12:int64:1-2"]), 5, 0)
    with torch.no_grad():
        expected = model(*(torch.from_numpy(a) for a in data.x)).numpy()
    assert runner.fixed_batch == 2
    np.testing.assert_allclose(runner.run(data.x)[0], expected, rtol=1e-4, atol=1e-5)


# --- the CPU ----------------------------------------------------------------------------------------------------


def test_cpu_features_and_the_int8_speed_explanation_agree():
    features = cpu_int8_features()
    assert {"arch", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm", "source"} <= set(features)
    text = int8_speed_explanation(features)
    if features["arch"] == "x86_64" and features["avx2"]:
        vnni = features["avx512_vnni"] or features["avx_vnni"] or features["amx_int8"]
        assert needs_reduce_range(features) is (not vnni)
        assert ("VNNI" in text) and (("no VNNI" in text) is (not vnni))
    no_vnni = {**features, "arch": "x86_64", "avx2": True, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
    assert needs_reduce_range(no_vnni) and "AVX2 but no VNNI" in int8_speed_explanation(no_vnni)
    arm = {**no_vnni, "arch": "aarch64", "dotprod": True}
    assert not needs_reduce_range(arm) and "dotprod" in int8_speed_explanation(arm)


def test_the_int8_pick_on_a_fused_fp32_graph_records_the_fusion(transformer, tmp_path):
    fused = tmp_path / "model.fp32.onnx"
    onnx.save(fuse_transformer(onnx.load(str(transformer["fp32"]))).model, str(fused))  # as when the fusions paid in fp32
    job = QuantizeJob(transformer["handle"], "int8", tmp_path / "model.int8.onnx", fused, transformer["splits"].calibration(64))
    result = get_format("onnx").quantize(job)
    assert result.techniques[0].label == "graph-fusion:Attention=1:SkipLayerNormalization=2"
    assert "SkipLayerNormalization" in _ops(result.path)
