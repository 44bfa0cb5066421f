"""The ExecuTorch path: real `.pte` programs lowered to XNNPACK, run in the real ExecuTorch runtime on the real splits."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.catalog import QuantizeJob
from compress.data import load_dataset
from compress.errors import EnvironmentFailure, UsageError
from compress.loading.model import ModelHandle, load_model
from compress.runtimes.base import run_dataset
from compress.loading.spec import InputSpec, TensorSpec
from compress.passes.training import predict
from tests.models_for_tests import MultiHead, TokenClassifier

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="executorch is not installed: pip install 'compress[executorch]'")


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(-1) == labels).mean())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint, tmp_path_factory):
    from compress.backends.pte.export import export_pte

    handle = load_model(zoo_checkpoint("mnist_cnn", epochs=2))
    splits = load_dataset(handle.dataset["name"]).split(int(handle.dataset.get("split_seed", 0)))
    out = tmp_path_factory.mktemp("mnist-pte")
    fp32 = export_pte(QuantizeJob(handle, "fp32", out / "model.fp32.pte"))
    int8 = export_pte(QuantizeJob(handle, "int8", out / "model.int8.pte", calib_data=splits.calibration(256)))
    reference = predict(handle.module, splits.test)[0]
    return handle, splits, fp32, int8, reference


@needs_executorch
def test_fp32_pte_matches_torch_at_any_batch(mnist):
    from compress.backends.pte.session import ExecuTorchRunner

    handle, splits, fp32, _, reference = mnist
    assert fp32.precision == "fp32" and [t.label for t in fp32.techniques] == ["export:executorch:xnnpack"] and fp32.float_ops == []
    assert fp32.coverage["portable"] == {} and fp32.coverage["delegated"]["convolution"] == 3
    runner = ExecuTorchRunner(fp32.path, threads=1)
    assert runner.name == "executorch" and runner.input_names == ["input_0"] and runner.fixed_batch == 1
    outputs = run_dataset(runner, splits.test, batch_size=64)[0]
    assert np.abs(outputs - reference).max() < 1e-4
    images = splits.test.x[0]
    one, batch = runner.run((images[:1],))[0], runner.run((images[:32],))[0]
    assert one.shape == (1, 10) and batch.shape == (32, 10)
    np.testing.assert_array_equal(batch[:1], one)
    with pytest.raises(UsageError, match="expects shape"):
        runner.run((images[:2, :, :14],))


@needs_executorch
def test_int8_pte_is_accurate_small_fully_delegated_and_reproducible(mnist, tmp_path):
    from compress.backends.pte.export import export_pte
    from compress.backends.pte.session import ExecuTorchRunner

    handle, splits, fp32, int8, reference = mnist
    assert int8.precision == "int8"
    # per-tensor scales are as faithful on mnist_cnn, and 4.6 KB smaller: the choice and its evidence are noted
    assert [t.label for t in int8.techniques] == ["export:executorch:xnnpack", "ptq:int8-static:minmax:per-tensor"]
    assert any(note.startswith("weight scales per tensor: as faithful to fp32 as per channel (SQNR") for note in int8.notes)
    assert int8.float_ops == [] and int8.coverage["portable"] == {}
    assert {"convolution", "linear"} <= set(int8.coverage["delegated"])
    assert any(note.startswith("delegate coverage: XNNPACK runs 12 of 12 compute ops") for note in int8.notes)
    outputs = run_dataset(ExecuTorchRunner(int8.path), splits.test)[0]
    labels = splits.test.y[0]
    assert _accuracy(reference, labels) - _accuracy(outputs, labels) <= 0.005
    params = sum(p.numel() for p in handle.module.parameters())
    size = int8.path.stat().st_size
    assert size <= 1.10 * params   # the bound: 100,392 bytes for 93,322 parameters (1.076x)
    assert size * 3.5 < fp32.path.stat().st_size
    again = export_pte(QuantizeJob(handle, "int8", tmp_path / "again.int8.pte", calib_data=splits.calibration(256)))
    assert _sha(again.path) == _sha(int8.path)


class UnevenChannels(torch.nn.Module):
    """Output channels whose weights differ by 10^4 in scale, each mattering as much to the output: per-tensor
    weight scales round the small channels to zero."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.spread = torch.nn.Linear(16, 8)
        self.merge = torch.nn.Linear(8, 4)
        gains = torch.logspace(-2, 2, 8)
        with torch.no_grad():
            self.spread.weight.mul_(gains[:, None])
            self.spread.bias.mul_(gains)
            self.merge.weight.div_(gains[None, :])

    def forward(self, x):
        return self.merge(torch.relu(self.spread(x)))


@needs_executorch
def test_per_channel_scales_are_kept_when_per_tensor_loses_fidelity(tmp_path):
    from compress.backends.pte.export import export_pte

    spec = InputSpec((TensorSpec("x", (-1, 16)),))
    handle = ModelHandle(UnevenChannels().eval(), spec, "mem", "pickle", "")
    result = export_pte(QuantizeJob(handle, "int8", tmp_path / "uneven.pte", calib_data=spec.random_dataset(128, 0)))
    assert result.techniques[-1].label == "ptq:int8-static:minmax:per-channel" and result.techniques[-1].per_channel
    assert any(note.startswith("weight scales per channel: per tensor is less faithful to fp32") for note in result.notes)
    tensor = export_pte(QuantizeJob(handle, "int8", tmp_path / "uneven.tensor.pte",
                                    calib_data=spec.random_dataset(128, 0), per_channel=False))
    assert tensor.techniques[-1].label == "ptq:int8-static:minmax:per-tensor"   # asked per tensor: no comparison, no note
    assert not any(note.startswith("weight scales") for note in tensor.notes)


@needs_executorch
def test_int64_inputs_run_and_portable_ops_are_named(tmp_path):
    from compress.backends.pte.export import export_pte
    from compress.backends.pte.preflight import pte_preflight
    from compress.backends.pte.session import ExecuTorchRunner

    torch.manual_seed(0)
    model = TokenClassifier().eval()
    spec = InputSpec((TensorSpec("ids", (-1, 12), "int64", 0, 50), TensorSpec("mask", (-1, 12), "int64", 0, 2)))
    handle = ModelHandle(model, spec, "mem", "pickle", "")
    result = export_pte(QuantizeJob(handle, "fp32", tmp_path / "tokens.fp32.pte"))
    runner = ExecuTorchRunner(result.path)
    assert runner.input_dtypes == [np.int64, np.int64]
    inputs = spec.example_inputs(batch=5, seed=1)
    with torch.no_grad():
        expected = model(*inputs).numpy()
    assert np.abs(runner.run(tuple(t.numpy() for t in inputs))[0] - expected).max() < 1e-5
    embedding = next(row for row in result.float_ops if row["op"] == "embedding")
    assert embedding["layer"] == "embed" and "portable kernels" in embedding["reason"]
    assert any("int64 tensors" in row["reason"] for row in result.float_ops)
    assert "linear" in result.coverage["delegated"]
    findings = pte_preflight(QuantizeJob(handle, "fp32", tmp_path / "tokens.fp32.pte"))
    assert any(f.format == "pte" and f.op == "embedding" and f.layer == "embed" and f.severity == "info" for f in findings)


@needs_executorch
def test_several_outputs_in_model_order(tmp_path):
    from compress.backends.pte.export import export_pte
    from compress.backends.pte.session import ExecuTorchRunner

    torch.manual_seed(0)
    model = MultiHead().eval()
    handle = ModelHandle(model, InputSpec((TensorSpec("x", (-1, 8, 8)),)), "mem", "pickle", "")
    result = export_pte(QuantizeJob(handle, "fp32", tmp_path / "multi.fp32.pte"))
    x = torch.randn(7, 8, 8)
    outputs = ExecuTorchRunner(result.path).run((x.numpy(),))
    with torch.no_grad():
        expected = model(x)
    assert [o.shape for o in outputs] == [(7, 10), (7, 32), (7, 4), (7, 1)]
    assert max(float(np.abs(o - e.numpy()).max()) for o, e in zip(outputs, expected)) < 1e-5


@needs_executorch
def test_device_runner_times_a_pte(mnist):
    """The one timing loop every target uses runs .pte files too."""
    _, _, fp32, _, _ = mnist
    runner = Path(__file__).resolve().parent.parent / "compress" / "targets" / "device_runner.py"
    done = subprocess.run([sys.executable, str(runner), str(fp32.path), "--runs", "5", "--warmup", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout.split("COMPRESS_RUNNER_JSON ", 1)[1])
    assert done.returncode == 0 and result["ok"] and result["environment"]["runtime"] == "executorch"
    assert len(result["samples_ms"]) == 5 and result["fixed_batch"] == 1


def test_unavailable_precisions_say_why():
    from compress.backends.pte.export import check_precision

    for precision, why in (("int8-weight", "weight-only"), ("int4-weight", "int8-dynamic"), ("fp16", "half-precision")):
        with pytest.raises(UsageError, match=why):
            check_precision(precision)
    with pytest.raises(UsageError, match="choose one of fp32, int8, int8-dynamic"):
        check_precision("int3")


def test_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    from compress.backends.pte.export import export_pte
    from compress.backends.pte.session import ExecuTorchRunner

    monkeypatch.setitem(sys.modules, "executorch", None)   # import executorch... now raises ImportError
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    program = tmp_path / "model.pte"
    program.write_bytes(b"\0" * 64)
    handle = ModelHandle(MultiHead().eval(), InputSpec((TensorSpec("x", (-1, 8, 8)),)), "mem", "pickle", "")
    job = QuantizeJob(handle, "fp32", tmp_path / "m.pte")
    for attempt in (lambda: ExecuTorchRunner(program), lambda: export_pte(job)):
        with pytest.raises(EnvironmentFailure) as failure:
            attempt()
        assert str(failure.value) == "ExecuTorch is not installed (needed for .pte files): pip install 'compress[executorch]'"


@needs_executorch
def test_calibration_method_exclude_and_dynamic_int8_name_what_stays_float(mnist, tmp_path):
    from compress.backends.pte.export import export_pte
    from compress.backends.pte.session import ExecuTorchRunner

    handle, splits, _, _, reference = mnist
    kept = export_pte(QuantizeJob(handle, "int8", tmp_path / "kept.pte", calib_data=splits.calibration(256),
                                  calibration="percentile", exclude=["classifier.3"]))
    assert kept.precision == "mixed" and kept.techniques[-1].label == "ptq:int8-static:percentile:per-tensor"  # as faithful, smaller
    assert [(r["op"], r["layer"], r["reason"]) for r in kept.float_ops] == [
        ("linear", "classifier.3", "kept in float by --exclude: runs in XNNPACK in fp32")]
    labels = splits.test.y[0]
    outputs = run_dataset(ExecuTorchRunner(kept.path), splits.test)[0]
    assert _accuracy(reference, labels) - _accuracy(outputs, labels) <= 0.005
    dynamic = export_pte(QuantizeJob(handle, "int8-dynamic", tmp_path / "dynamic.pte"))
    assert dynamic.precision == "int8-dynamic" and dynamic.coverage["portable"] == {}
    assert sorted(r["layer"] for r in dynamic.float_ops) == ["features.0", "features.3", "features.6"]
    assert all(r["op"] == "convolution" and "linear layers only" in r["reason"] for r in dynamic.float_ops)
    outputs = run_dataset(ExecuTorchRunner(dynamic.path), splits.test)[0]
    assert _accuracy(reference, labels) - _accuracy(outputs, labels) <= 0.005


@needs_executorch
def test_quantize_format_pte_verifies_and_recommends_across_all_three_formats(zoo_checkpoint, cli, tmp_path, monkeypatch):
    """`compress quantize --format onnx,tflite,pte`: every file verified in its own runtime on the test split, the
    int8 .pte within 0.5 pt of the reference, and the recommendation chosen among all three formats. The pre-flight's
    int8 dry run is the int8 file's lowering (one lowering per file)."""
    import compress.backends.pte.export as pte
    from compress.build import AHEAD_PHASE
    from compress.report import validate_report

    lowered, real = [], pte.lower
    monkeypatch.setattr(pte, "lower", lambda module, example: lowered.append(1) or real(module, example))
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "onnx,tflite,pte", "--runs", "10",
                 "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    validate_report(report)
    artifacts = {a["name"]: a for a in report["artifacts"]}
    assert {"fp32-pte", "int8-pte", "int8-onnx", "int8-tflite"} <= set(artifacts)
    int8 = artifacts["int8-pte"]
    assert int8["verified_in"] == ["executorch"] and (tmp_path / "model.int8.pte").is_file()
    assert int8["metrics"]["degradation"] <= 0.005 and int8["latency"][0]["p50_ms"] > 0
    assert any("delegate coverage" in note for note in int8["notes"])
    assert set(report["recommended"]["by_format"]) >= {"onnx", "tflite", "pte"}
    # both programs were lowered once, in the second process beside the ONNX work; the pre-flight and the exports
    # here reused them (compress.steps.ahead, compress.backends.reuse)
    assert lowered == [] and AHEAD_PHASE in [p["phase"] for p in report["timings"]["phases"]]
    refused = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "pte", "--precision", "fp16", "--out", tmp_path / "fp16")
    assert refused.exit_code == 2 and "not available for .pte" in refused.stderr


@needs_executorch
def test_prune_and_qat_write_verified_pte_files(zoo_checkpoint, cli, tmp_path):
    model = zoo_checkpoint("mnist_cnn", epochs=2)
    result = cli("prune", model, "--sparsity", "0.2", "--format", "pte", "--no-bench", "--no-gate", "--out", tmp_path / "prune")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "prune" / "report.json").read_text())
    pte = [a for a in report["artifacts"] if a["format"] == "pte"]
    assert {a["precision"] for a in pte} == {"fp32", "int8"} and all(a["verified_in"] == ["executorch"] for a in pte)
    result = cli("qat", model, "--format", "pte", "--epochs", "1", "--no-bench", "--no-gate", "--out", tmp_path / "qat")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "qat" / "report.json").read_text())
    by_name = {a["name"]: a for a in report["artifacts"]}
    assert {"fp32-pte", "ptq-int8-pte", "qat-int8-pte"} <= set(by_name)
    qat = by_name["qat-int8-pte"]
    assert qat["verified_in"] == ["executorch"] and qat["precision"] == "int8" and qat["float_ops"] == []
    assert (tmp_path / "qat" / "model.qat-int8.pte").is_file() and by_name["ptq-int8-pte"]["verified_in"] == ["executorch"]
    # the 2-epoch checkpoint is undertrained: one QAT epoch gains accuracy, so QAT is not worse than PTQ here
    assert report["comparison"][0]["format"] == "pte" and report["comparison"][0]["qat_not_worse"] is True


@needs_executorch
def test_tune_searches_pte_files(zoo_checkpoint, cli, tmp_path):
    import yaml

    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"search": {"precisions": ["int8"], "calibrations": ["minmax"], "calib_samples": [256],
                                                 "per_channel": [True], "dynamic_op_types": [[]], "keep_float_max": 0,
                                                 "prune_methods": ["none"]}}))
    result = cli("tune", zoo_checkpoint("mnist_cnn", epochs=2), "--format", "pte", "--objective", "size", "--trials", "1",
                 "--search", search, "--out", tmp_path / "study", "--json")
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout)["best"]
    assert best["artifact"].endswith(".pte") and best["degradation"] <= 0.01


@needs_executorch
def test_an_lstm_says_before_calibrating_that_its_weights_stay_fp32_in_a_pte(tmp_path):
    from compress.backends.pte.preflight import pte_preflight

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
            self.head = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    handle = ModelHandle(Recurrent().eval(), InputSpec((TensorSpec("x", (-1, 6, 8)),)), "mem", "pickle", "")
    findings = pte_preflight(QuantizeJob(handle, "int8", tmp_path / "lstm.int8.pte"))
    findings = [f for f in findings if f.layer == "lstm" and f.op == "linear"]
    assert findings and "unrolls LSTM" in findings[0].message and "--format onnx" in findings[0].suggestion
