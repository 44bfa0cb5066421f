"""PT2E quantization-aware training on real digits data, exported to int8 ONNX and TFLite and compared with PTQ."""
from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from compress.loading.model import ModelHandle, load_model
from compress.passes import qat
from compress.report import validate_report
from compress.runtimes import open_runner, run_dataset
from compress.loading.spec import InputSpec, TensorSpec
from compress.passes.training import fit

from tests.cli_checks import json_output, one_line

EPOCHS = 3


def _accuracy(path, data) -> float:
    return float((run_dataset(open_runner(path), data)[0].argmax(-1) == data.y[0]).mean())


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint):
    return zoo_checkpoint("mnist_cnn", epochs=EPOCHS)


@pytest.fixture(scope="module")
def qat_run(mnist, cli, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("qat")
    # a gate the sample can resolve: QAT moves many of the briefly trained model's 359 test predictions (the paired
    # interval spans several pt), which leaves the default 1 pt gate undecided
    return run_dir, json_output(cli("qat", mnist, "--epochs", "1", "--no-bench", "--json", "--out", run_dir, "--max-degradation", "0.05"))


def test_qat_int8_onnx_and_tflite_lose_no_more_than_ptq(qat_run):
    run_dir, report = qat_run
    validate_report(report)
    names = {a["name"]: a for a in report["artifacts"]}
    assert set(names) == {f"{kind}-{fmt}" for kind in ("fp32", "ptq-int8", "qat-int8") for fmt in ("onnx", "tflite")}
    for fmt, runtime in (("onnx", "onnxruntime"), ("tflite", "litert")):
        artifact = names[f"qat-int8-{fmt}"]
        assert artifact["verified_in"] == [runtime] and artifact["precision"] == "int8" and not artifact["float_ops"]
        assert artifact["size_bytes"] < names[f"fp32-{fmt}"]["size_bytes"] / 3
        assert [t["label"] for t in artifact["techniques"]] == ["qat:int8:per-channel:epochs=1", "export:int8-qdq" if fmt == "onnx" else "export:int8-static-qdq"]
    comparison = {c["format"]: c for c in report["comparison"]}
    for fmt in ("onnx", "tflite"):
        assert comparison[fmt]["qat_not_worse"], comparison[fmt]
        assert comparison[fmt]["qat_degradation"] == names[f"qat-int8-{fmt}"]["metrics"]["degradation"]


def test_report_md_and_html_compare_qat_with_ptq(qat_run):
    run_dir, report = qat_run
    markdown, page = (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()
    assert "## QAT vs PTQ" in markdown and "<h2>QAT vs PTQ</h2>" in page
    for c in report["comparison"]:
        assert (f"| {c['format']} | {c['ptq']} | {c['ptq_degradation']:+.4f} | {c['qat']} | {c['qat_degradation']:+.4f} | "
                f"{c['verdict']} |") in markdown
        assert f"<td>{c['ptq_degradation']:+.4f}</td><td>{c['qat']}</td><td>{c['qat_degradation']:+.4f}</td>" in page
    history = report["qat"]["history"][0]
    assert f"| 1 | {history['loss']:.4f} | {history['val']:.4f} | no | no |" in markdown
    assert f"- Scheme {report['qat']['scheme']}; epochs 1 at lr " in markdown


def test_qat_onnx_is_really_qdq_with_int8_weights(qat_run):
    run_dir, report = qat_run
    model = onnx.load(str(run_dir / "model.qat-int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 10
    int8 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert len(int8) == 5  # the three conv and two linear weights
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 2]
    assert not floats


class ConvBN(nn.Module):
    """conv -> batch norm -> ReLU, twice, and a linear head: BN must be folded into the int8 convs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_batch_norm_is_folded_and_frozen(splits, tmp_path):
    torch.manual_seed(0)
    module = ConvBN()
    fit(module, splits.train, splits.train.heads, epochs=2, lr=3e-3)
    handle = ModelHandle(module, InputSpec((TensorSpec("image", (-1, 1, 28, 28)),)), "convbn", "state_dict", "0" * 64,
                         heads=splits.train.heads)
    trained = qat.apply(handle, qat.QatConfig(epochs=2), splits)
    summary = trained.metrics["qat"]
    assert summary["batch_norm_folded_into_conv"] and [r["bn_frozen"] for r in summary["history"]] == [False, True]
    assert not [n for n in trained.module.graph.nodes if "batch_norm" in str(n.target)]
    path = qat.export_int8_onnx(trained, tmp_path / "convbn.qat.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and "QuantizeLinear" in ops
    assert _accuracy(path, splits.test) > 0.8
    assert isinstance(module.features[1], nn.BatchNorm2d)  # the input model is left as it was


def test_three_bit_weights_qat_beats_ptq_with_the_same_scheme(mnist, splits, tmp_path):
    """The hard case: 3-bit per-tensor weights. PTQ with the very same quantizer loses far more than QAT."""
    handle = load_model(mnist)
    config = qat.QatConfig(epochs=2, weight_bits=3, per_channel=False)
    ptq_path = qat.export_int8_onnx(qat.ptq(handle, config, splits.calibration(256)), tmp_path / "ptq.onnx")
    qat_path = qat.export_int8_onnx(qat.apply(handle, config, splits), tmp_path / "qat.onnx")
    ptq_acc, qat_acc = _accuracy(ptq_path, splits.test), _accuracy(qat_path, splits.test)
    assert qat_acc > ptq_acc + 0.02, (ptq_acc, qat_acc)
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(qat_path)).graph.initializer if len(i.dims) >= 2]
    assert all(w.min() >= -3 and w.max() <= 3 for w in weights)  # 3 bits: [-3, 3]


def test_pruned_pt2_chains_into_qat_from_the_cli(mnist, splits, cli, tmp_path):
    from compress.loading.model import save_program
    from compress.passes.prune import PruneConfig, apply

    pruned = apply(load_model(mnist), PruneConfig(method="l1-structured", sparsity=0.5), splits)
    save_program(pruned, tmp_path / "pruned.pt2")
    result = cli("qat", tmp_path / "pruned.pt2", "--epochs", "1", "--format", "onnx", "--no-bench", "--json", "--out", tmp_path / "run",
                 "--no-gate")  # chaining is checked here; the one-shot prune's loss is the default gate's business
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    artifact = next(a for a in report["artifacts"] if a["name"] == "qat-int8-onnx")
    assert [t["label"] for t in artifact["techniques"][:2]] == ["prune:l1-structured:0.5:layer", "qat:int8:per-channel:epochs=1"]
    assert report["dataset"]["name"] == "digits28"  # the .pt2 carried its dataset: no --data needed


def test_qat_of_a_pruned_file_measures_degradation_against_the_unpruned_model(mnist, cli, tmp_path):
    pruned = cli("prune", mnist, "--method", "l1-structured", "--sparsity", "0.7", "--format", "onnx", "--no-int8", "--no-bench",
                 "--json", "--out", tmp_path / "pruned", "--no-gate")  # 0.7 without fine-tuning: the loss measured below
    assert pruned.exit_code == 0, pruned.output
    original = json.loads(pruned.stdout)["reference"]["metrics"]["task"]["value"]
    result = cli("qat", tmp_path / "pruned" / "model.pt2", "--epochs", "1", "--format", "onnx", "--no-bench", "--json",
                 "--out", tmp_path / "run", "--no-gate")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference"]["metrics"]["task"]["value"] == original
    assert report["reference"]["original"]["source"] == str(mnist)
    for artifact in report["artifacts"]:
        assert artifact["metrics"]["degradation"] == pytest.approx(original - artifact["metrics"]["task"]["value"], abs=1e-6)
    assert "the original model" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--weight-bits", "9"], "--weight-bits"),
    (["--epochs", "2", "--freeze-bn-after", "5"], "past the last epoch"),
    (["--epochs", "0"], "--epochs"),
    (["--format", "coreml"], "unknown --format 'coreml'"),
])
def test_bad_input_is_one_line_and_exit_2(mnist, cli, tmp_path, args, message):
    result = cli("qat", mnist, *args, "--no-bench", "--out", tmp_path)
    assert result.exit_code == 2
    assert message in one_line(result)


def test_onnx_model_is_refused(cli, tmp_path, qat_run):
    run_dir, _ = qat_run
    result = cli("qat", run_dir / "model.fp32.onnx", "--out", tmp_path)
    assert result.exit_code == 2
    assert "QAT needs the torch model" in one_line(result)
