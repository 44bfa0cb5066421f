"""The TFLite path: real litert-torch conversions, run in the real LiteRT interpreter on the real digits splits."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from compress.catalog import QuantizeJob
from compress.data import Dataset, load_dataset
from compress.errors import UsageError
from compress.backends.tflite.export import export_tflite
from compress.backends.tflite.preflight import tflite_preflight
from compress.loading.model import ModelHandle, load_model
from compress.runtimes.base import open_runner, run_dataset
from compress.backends.tflite.session import LiteRTRunner
from compress.loading.spec import InputSpec, TensorSpec
from compress.passes.training import predict


def _splits(handle):
    return load_dataset(handle.dataset["name"]).split(int(handle.dataset.get("split_seed", 0)))


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(-1) == labels).mean())


def _tensors(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_tensor_details()


def _int8_weight_for(details, weight: torch.Tensor) -> bool:
    """The layer's weight is in the file as int8 (TFLite layout: OHWI convs, 1HWO depthwise) with a scale per channel."""
    shape = tuple(weight.shape)
    layouts = {shape, (shape[0], *shape[2:], shape[1]), (shape[1], *shape[2:], shape[0])} if len(shape) == 4 else {shape}
    return any(d["dtype"] == np.int8 and tuple(d["shape"]) in layouts
               and len(d["quantization_parameters"]["scales"]) == shape[0] for d in details)


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint, tmp_path_factory):
    handle = load_model(zoo_checkpoint("mnist_cnn"))
    splits = _splits(handle)
    out = tmp_path_factory.mktemp("mnist-tflite")
    fp32 = export_tflite(QuantizeJob(handle, "fp32", out / "model.fp32.tflite"))
    int8 = export_tflite(QuantizeJob(handle, "int8", out / "model.int8.tflite", calib_data=splits.calibration(256)))
    reference = predict(handle.module, splits.test)[0]
    return handle, splits, fp32, int8, reference


def test_fp32_matches_torch_at_any_batch(mnist):
    handle, splits, fp32, _, reference = mnist
    assert fp32.precision == "fp32" and [t.label for t in fp32.techniques] == ["export:fp32"] and fp32.float_ops == []
    runner = open_runner(fp32.path, threads=1)
    assert isinstance(runner, LiteRTRunner) and runner.name == "litert" and runner.input_names == ["args_0"]
    outputs = run_dataset(runner, splits.test, batch_size=64)[0]
    assert np.abs(outputs - reference).max() < 1e-4
    images = splits.test.x[0]
    one, batch = runner.run((images[:1],))[0], runner.run((images[:32],))[0]
    assert one.shape == (1, 10) and batch.shape == (32, 10)
    np.testing.assert_array_equal(batch[:1], one)
    np.testing.assert_array_equal(runner.run((images[:32],))[0], batch)  # deterministic


def test_int8_is_full_integer_small_accurate_and_reproducible(mnist, tmp_path):
    handle, splits, fp32, int8, reference = mnist
    assert int8.precision == "int8" and [t.label for t in int8.techniques] == ["ptq:int8-static:minmax:per-channel"] and int8.float_ops == []
    outputs = run_dataset(LiteRTRunner(int8.path), splits.test)[0]
    loss = _accuracy(reference, splits.test.y[0]) - _accuracy(outputs, splits.test.y[0])
    assert loss <= 0.005
    assert int8.path.stat().st_size * 3.3 < fp32.path.stat().st_size  # measured 3.55x smaller
    details = _tensors(int8.path)
    for name, layer in handle.module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            assert _int8_weight_for(details, layer.weight), name
    assert not any(d["dtype"] == np.float32 and int(np.prod(d["shape"])) > 1000 for d in details)
    again = export_tflite(QuantizeJob(handle, "int8", tmp_path / "again.tflite", calib_data=splits.calibration(256)))
    assert hashlib.sha256(again.path.read_bytes()).digest() == hashlib.sha256(int8.path.read_bytes()).digest()


def test_fp16_halves_the_file(mnist, tmp_path):
    handle, splits, fp32, _, reference = mnist
    fp16 = export_tflite(QuantizeJob(handle, "fp16", tmp_path / "model.fp16.tflite"))
    assert fp16.precision == "fp16" and "cast:fp16-weights" in [t.label for t in fp16.techniques]
    assert fp16.path.stat().st_size < 0.55 * fp32.path.stat().st_size
    assert any(d["dtype"] == np.float16 for d in _tensors(fp16.path))
    outputs = run_dataset(LiteRTRunner(fp16.path), splits.test)[0]
    assert np.abs(outputs - reference).max() < 0.05


@pytest.mark.parametrize("precision, per_channel, smaller_than", [
    ("int8-dynamic", False, 0.30),  # per-tensor: the depthwise conv keeps per-channel weights (LiteRT kernel bug)
    ("int8-weight", True, 0.30),
    ("int4-weight", True, 0.17),    # the depthwise conv stays float (no int4 kernel), listed in float_ops
])
def test_weight_quantized_precisions(mnist, tmp_path, precision, per_channel, smaller_than):
    handle, splits, fp32, _, reference = mnist
    result = export_tflite(QuantizeJob(handle, precision, tmp_path / f"model.{precision}.tflite",
                                       per_channel=per_channel))
    assert result.precision == precision and result.techniques[0].label == "export:fp32"
    assert result.path.stat().st_size < smaller_than * fp32.path.stat().st_size
    outputs = run_dataset(LiteRTRunner(result.path), splits.test)[0]
    assert _accuracy(reference, splits.test.y[0]) - _accuracy(outputs, splits.test.y[0]) <= 0.01
    expected_float = [("DEPTHWISE_CONV_2D", "features.0")] if precision == "int4-weight" else []
    assert [(op["op"], op["layer"]) for op in result.float_ops] == expected_float


def test_exclude_keeps_that_layer_float(mnist, tmp_path):
    handle, splits, _, int8, _ = mnist
    result = export_tflite(QuantizeJob(handle, "int8", tmp_path / "mixed.tflite", calib_data=splits.calibration(256),
                                       exclude=["classifier.1"]))
    assert result.precision == "mixed"
    assert [(op["op"], op["layer"], op["reason"]) for op in result.float_ops] == [
        ("FULLY_CONNECTED", "classifier.1", "kept in float by --exclude")]
    weight = handle.module.classifier[1].weight
    details = _tensors(result.path)
    assert any(d["dtype"] == np.float32 and tuple(d["shape"]) == tuple(weight.shape) for d in details)
    assert not _int8_weight_for(details, weight)
    assert _int8_weight_for(details, handle.module.classifier[3].weight)
    assert result.path.stat().st_size > int8.path.stat().st_size + 2.5 * weight.numel()  # 4-byte weights, not 1
    with pytest.raises(UsageError, match="not a layer"):
        export_tflite(QuantizeJob(handle, "int8", tmp_path / "bad.tflite", calib_data=splits.calibration(8),
                                  exclude=["classifier.9"]))


def test_lstm_int8_is_smaller_and_accurate(zoo_checkpoint, tmp_path):
    handle = load_model(zoo_checkpoint("lstm"))
    splits = _splits(handle)
    fp32 = export_tflite(QuantizeJob(handle, "fp32", tmp_path / "lstm.fp32.tflite"))
    int8 = export_tflite(QuantizeJob(handle, "int8", tmp_path / "lstm.int8.tflite", calib_data=splits.calibration(256)))
    assert int8.precision == "mixed"
    assert [t.label for t in int8.techniques] == ["ptq:int8-static:minmax:per-channel", "ptq:int8-dynamic:per-channel"]
    assert int8.path.stat().st_size < 0.65 * fp32.path.stat().st_size  # measured 0.61: the unrolled graph itself stays
    assert _int8_weight_for(_tensors(int8.path), handle.module.lstm.weight_hh_l0)
    assert any("dynamic-range" in note and "lstm" in note for note in int8.notes)
    gate_math = {op["op"] for op in int8.float_ops if op["layer"] == "lstm"}
    assert {"LOGISTIC", "TANH", "MUL"} <= gate_math and "FULLY_CONNECTED" not in gate_math
    reference = predict(handle.module, splits.test)[0]
    outputs = run_dataset(LiteRTRunner(int8.path), splits.test)[0]
    assert _accuracy(reference, splits.test.y[0]) - _accuracy(outputs, splits.test.y[0]) <= 0.005


def test_multitask_outputs_come_in_torch_order(zoo_checkpoint, tmp_path):
    handle = load_model(zoo_checkpoint("multitask"))
    splits = _splits(handle)
    reference = predict(handle.module, splits.test)
    for precision in ("fp32", "int8"):
        result = export_tflite(QuantizeJob(handle, precision, tmp_path / f"mt.{precision}.tflite",
                                           calib_data=splits.calibration(256)))
        runner = LiteRTRunner(result.path)
        assert runner.output_names == ["output_0", "output_1"]
        outputs = run_dataset(runner, splits.test)
        assert [o.shape[1] for o in outputs] == [10, 5]
        for got, want, labels in zip(outputs, reference, splits.test.y):
            assert _accuracy(got, labels) >= _accuracy(want, labels) - 0.005
        if precision == "fp32":
            assert max(float(np.abs(g - w).max()) for g, w in zip(outputs, reference)) < 1e-4


def test_transformer_takes_int64_tokens(zoo_checkpoint, tmp_path):
    handle = load_model(zoo_checkpoint("transformer", epochs=1, width=0.125))
    splits = _splits(handle)
    result = export_tflite(QuantizeJob(handle, "int8", tmp_path / "tokens.int8.tflite",
                                       calib_data=splits.calibration(64)))
    assert result.precision == "mixed"  # the embedding table gets dynamic-range int8 weights
    assert any("int32" in note for note in result.notes)
    tokens = splits.test.x[0][:5]
    assert tokens.dtype == np.int64
    got = LiteRTRunner(result.path).run((tokens,))[0]
    want = predict(handle.module, splits.test.subset(np.arange(5), "first5"))[0]
    assert got.shape == (5, 10) and np.abs(got - want).max() < 0.5 * np.abs(want).max() + 0.1


def test_preflight_flags_the_lstm_and_refuses_what_cannot_convert(zoo_checkpoint, tmp_path):
    handle = load_model(zoo_checkpoint("lstm"))
    out = tmp_path / "model.int8.tflite"  # what the run would write; a pre-flight writes nothing
    findings = tflite_preflight(QuantizeJob(handle, "int8", out))
    lstm = [f for f in findings if f.layer == "lstm"]
    assert lstm and "LSTM" in lstm[0].message and "dynamic-range" in lstm[0].message and lstm[0].severity == "info"
    assert not [f for f in findings if f.severity == "error"]
    # `compress quantize` dry-runs on its own calibration set and method (the real export then reuses the file):
    # the findings are the same as on random inputs
    calibrated = tflite_preflight(QuantizeJob(handle, "int8", out, calib_data=_splits(handle).calibration(64),
                                              calibration="percentile", per_channel=False))
    assert [(f.layer, f.message) for f in calibrated] == [(f.layer, f.message) for f in findings]
    onnx_only = ModelHandle(None, handle.input_spec, "m.onnx", "onnx", "")
    assert tflite_preflight(QuantizeJob(onnx_only, "int8", out))[0].severity == "error"
    with pytest.raises(UsageError, match="unknown TFLite precision"):
        tflite_preflight(QuantizeJob(handle, "int3", out))


class _Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x):
        return self.linear(x)


def test_runner_quantizes_int8_inputs_and_dequantizes_int8_outputs(tmp_path):
    """Files from other tools may have int8 I/O (litert-torch's default QDQ mode makes them): the runner hides it."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    torch.manual_seed(0)
    model, example = _Affine().eval(), (torch.randn(1, 6),)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(model, example).module(), quantizer)
    data = torch.randn(64, 6)
    for row in data:
        prepared(row[None])
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    path = tmp_path / "int8io.tflite"
    path.write_bytes(litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content())
    runner = LiteRTRunner(path)
    assert runner.inputs[0]["dtype"] == np.int8 and runner.outputs[0]["dtype"] == np.int8
    got = runner.run((data[:10].numpy(),))[0]
    assert got.dtype == np.float32
    scale = runner.outputs[0]["quantization"][0]
    assert np.abs(got - model(data[:10]).detach().numpy()).max() < 4 * scale


def test_runner_resizes_files_with_a_dynamic_batch(tmp_path):
    """litert-torch exports batch 1; files from other converters may mark the batch dynamic (-1)."""
    from ai_edge_litert.tools import flatbuffer_utils

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    handle = ModelHandle(model, InputSpec((TensorSpec("x", (-1, 6)),)), "mem", "pickle", "")
    fixed = export_tflite(QuantizeJob(handle, "fp32", tmp_path / "fixed.tflite"))
    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(fixed.path.read_bytes()))
    graph = flat.subgraphs[0]
    for index in graph.inputs:
        graph.tensors[index].shapeSignature = np.array([-1, *graph.tensors[index].shape[1:]], np.int32)
    dynamic = tmp_path / "dynamic.tflite"
    dynamic.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(flat)))
    runner = LiteRTRunner(dynamic)
    assert runner.fixed_batch is None and LiteRTRunner(fixed.path).fixed_batch == 1
    x = np.random.default_rng(0).standard_normal((37, 6)).astype(np.float32)
    for batch in (37, 1, 5):
        got = runner.run((x[:batch],))[0]
        assert got.shape == (batch, 2)
        assert np.abs(got - model(torch.from_numpy(x[:batch])).detach().numpy()).max() < 1e-5


def test_runner_rejects_bad_input(mnist, tmp_path):
    _, _, fp32, _, _ = mnist
    runner = LiteRTRunner(fp32.path)
    with pytest.raises(UsageError, match="takes 1 input"):
        runner.run((np.zeros((1, 1, 28, 28), np.float32), np.zeros(1)))
    with pytest.raises(UsageError, match="expects shape"):
        runner.run((np.zeros((2, 1, 32, 32), np.float32),))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(UsageError, match="not a loadable TFLite model"):
        LiteRTRunner(junk)


def test_no_calibration_data_is_said_loudly(tmp_path):
    handle = ModelHandle(_Affine().eval(), InputSpec((TensorSpec("x", (-1, 6)),)), "mem", "pickle", "")
    result = export_tflite(QuantizeJob(handle, "int8", tmp_path / "affine.int8.tflite"))
    assert result.precision == "int8" and any(note.startswith("NO CALIBRATION DATA") for note in result.notes)
    assert LiteRTRunner(result.path).run((np.ones((3, 6), np.float32),))[0].shape == (3, 1 * 3)
    with pytest.raises(UsageError, match="unknown calibration method"):
        export_tflite(QuantizeJob(handle, "int8", tmp_path / "x.tflite",
                                  calib_data=Dataset("d", (np.ones((4, 6), np.float32),)), calibration="magic"))
