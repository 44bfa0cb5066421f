"""Pruning on real digits data: structured channels (smaller files), permanent magnitude zeros, verified 2:4 masks."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from compress.data import load_dataset
from compress.loading.model import ModelHandle, load_model
from compress.passes.prune import PruneConfig, apply, check_n_m, compressed_size, n_m_mask
from compress.passes.schedule import polynomial_schedule, ramp_epochs
from compress.report import validate_report
from compress.loading.spec import InputSpec, TensorSpec

from tests.cli_checks import json_output, one_line

EPOCHS = 3  # the zoo model's training epochs: enough for a real (~90 %) digits classifier, fast on 2 cores


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint):
    return zoo_checkpoint("mnist_cnn", epochs=EPOCHS)


@pytest.fixture(scope="module")
def structured_run(mnist, cli, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pruned")
    # a gate the sample can resolve: pruning this briefly trained model changes ~30 of the 359 test predictions, whose
    # paired interval (about +-3.5 pt) leaves the default 1 pt gate undecided
    return run_dir, json_output(cli("prune", mnist, "--method", "l1-structured", "--sparsity", "0.5", "--finetune-epochs", "2",
                                    "--format", "onnx", "--no-bench", "--json", "--out", run_dir, "--max-degradation", "0.05"))


def _artifact(report, name):
    return next(a for a in report["artifacts"] if a["name"] == name)


def test_structured_pruning_removes_channels_and_shrinks_the_onnx_file(structured_run):
    run_dir, report = structured_run
    validate_report(report)
    assert report == json.loads((run_dir / "report.json").read_text())
    summary = report["prune"]
    assert summary["params_after"] <= 0.55 * summary["params_before"]
    convs = {r["layer"]: r for r in summary["layers"] if r["type"] == "Conv2d"}
    assert all(r["params_after"] < r["params_before"] for r in convs.values())  # physically removed, not zeroed
    dense, pruned, int8 = (_artifact(report, n) for n in ("dense-fp32-onnx", "fp32-onnx", "int8-onnx"))
    assert pruned["size_bytes"] <= 0.55 * dense["size_bytes"]
    assert dense["size_bytes"] >= 6 * int8["size_bytes"]          # pruned + int8 vs the dense fp32 file
    for artifact in (pruned, int8):
        assert artifact["verified_in"] == ["onnxruntime"] and (run_dir / artifact["path"]).is_file()
        assert artifact["techniques"][0]["label"] == "prune:l1-structured:0.5:layer:finetune=2"
        assert artifact["metrics"]["degradation"] <= 0.02, artifact["metrics"]  # 2 fine-tune epochs on a 3-epoch model
    assert len(summary["finetune"]) == 2 and summary["finetune"][-1]["sparsity"] == 0.5
    assert summary["finetune"][0]["sparsity"] < 0.5  # the cubic ramp


def test_degradation_is_against_the_original_model_not_the_pruned_one(structured_run, mnist):
    from compress.data.plan import plan_data
    from compress.data.evaluate import task_metrics
    from compress.passes.training import predict

    run_dir, report = structured_run
    original = load_model(mnist)
    test = plan_data(original, None).test
    accuracy = {name: task_metrics(test.heads, predict(handle.module, test), test.y)["value"]
                for name, handle in (("original", original), ("pruned", load_model(run_dir / "model.pt2")))}
    assert report["reference"]["metrics"]["task"]["value"] == pytest.approx(accuracy["original"], abs=1e-6)
    assert abs(accuracy["original"] - accuracy["pruned"]) > 0.001  # otherwise the check below could not tell them apart
    for name in ("fp32-onnx", "int8-onnx"):
        metrics = _artifact(report, name)["metrics"]
        assert metrics["degradation"] == pytest.approx(accuracy["original"] - metrics["task"]["value"], abs=1e-6)
    assert _artifact(report, "fp32-onnx")["metrics"]["degradation"] == pytest.approx(accuracy["original"] - accuracy["pruned"], abs=0.003)
    assert f"against the original (unpruned) model: accuracy {accuracy['original']:.4f}" in (run_dir / "report.md").read_text()


def test_report_md_and_html_show_per_layer_sparsity_and_files_vs_dense(structured_run):
    run_dir, report = structured_run
    summary = report["prune"]
    markdown, page = (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()
    assert "## Pruning" in markdown and "<h2>Pruning</h2>" in page
    for row in summary["layers"]:
        assert (f"| {row['layer']} | {row['type']} | {'yes' if row['pruned'] else 'kept'} | {row['params_before']:,} | "
                f"{row['params_after']:,} | {row['nonzero_after']:,} | {row['sparsity']:.3f} |") in markdown
        assert f"<td>{row['layer']}</td><td>{row['type']}</td>" in page and f"<td>{row['sparsity']:.3f}</td>" in page
    total = f"{summary['params_before']:,} | {summary['params_after']:,} | {summary['nonzero_after']:,}"
    assert f"| total |  |  | {total} |" in markdown
    for artifact in report["artifacts"]:
        size = artifact["size_bytes"] / _artifact(report, "dense-fp32-onnx")["size_bytes"]
        assert (f"| {artifact['name']} | {artifact['size_bytes']:,} | {artifact['compressed_size_bytes']:,} | {size:.3f}x | "
                f"accuracy {artifact['metrics']['task']['value']:.4f} | {artifact['metrics']['degradation']:.4f} |") in markdown
    for epoch in summary["finetune"]:
        assert f"| {epoch['epoch']} | {epoch['sparsity']:.3f} | {epoch['loss']:.4f} |" in markdown


def test_pruned_model_pt2_chains_without_data(structured_run):
    run_dir, report = structured_run
    handle = load_model(run_dir / "model.pt2")
    assert handle.dataset["name"] == "digits28" and handle.input_spec.names == ["image"]
    assert [(t["label"], t["sparsity"]) for t in handle.techniques] == [("prune:l1-structured:0.5:layer:finetune=2", 0.5)]
    params = sum(p.numel() for p in handle.module.parameters())
    assert params == report["prune"]["params_after"]


class ResidualBN(nn.Module):
    """conv-BN-ReLU, a residual block with batch norm, a linear head: the couplings torch-pruning must keep."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


def _handle(module, shape=(-1, 1, 28, 28)) -> ModelHandle:
    return ModelHandle(module.eval(), InputSpec((TensorSpec("image", shape),)), "test", "state_dict", "0" * 64,
                       heads=load_dataset("digits28").heads)


def test_structured_keeps_norms_and_residual_adds_consistent(splits):
    torch.manual_seed(0)
    handle = _handle(ResidualBN())
    pruned = apply(handle, PruneConfig(method="l2-structured", sparsity=0.5, skip=["head.2"]), splits)
    module = pruned.module
    assert module.stem[0].out_channels == module.stem[1].num_features == module.block[3].out_channels == module.block[4].num_features
    assert module.stem[0].out_channels == 8 and module.head[2].in_features == 8
    assert module.head[2].out_features == 32 and module.head[4].out_features == 10  # skipped layer and output layer kept
    assert module(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert sum(p.numel() for p in handle.module.parameters()) == pruned.metrics["prune"]["params_before"]  # input untouched


def test_cnn_same_structured_on_real_data(zoo_checkpoint, splits):
    handle = load_model(zoo_checkpoint("cnn_same", epochs=2))
    pruned = apply(handle, PruneConfig(method="l1-structured", sparsity=0.5, finetune_epochs=1), splits)
    module = pruned.module
    assert [module.features[i].out_channels for i in (0, 3)] == [16, 32]
    assert module.classifier[1].in_features == 32 * 7 * 7 and module.classifier[3].out_features == 10
    outputs = module(torch.from_numpy(splits.test.x[0]))
    assert float((outputs.argmax(1).numpy() == splits.test.y[0]).mean()) > 0.7


def test_magnitude_pruning_is_permanent_and_compresses(mnist, splits, tmp_path):
    from compress.backends.onnx.export import export_onnx

    handle = load_model(mnist)
    pruned = apply(handle, PruneConfig(method="magnitude", sparsity=0.8, scope="global", finetune_epochs=1), splits)
    module = pruned.module
    names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
    assert not [n for n in names if "mask" in n or "orig" in n]
    assert not any(m._forward_pre_hooks or hasattr(m, "parametrizations") for m in module.modules())
    weights = [p for p in module.parameters() if p.dim() >= 2]
    zeros = sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)
    assert zeros == pytest.approx(0.8, abs=0.01)
    export_onnx(handle, tmp_path / "dense.onnx")
    export_onnx(pruned, tmp_path / "sparse.onnx")
    dense_size, sparse_size = (tmp_path / "dense.onnx").stat().st_size, (tmp_path / "sparse.onnx").stat().st_size
    assert sparse_size > 0.95 * dense_size  # the dense file does not shrink...
    assert compressed_size(tmp_path / "sparse.onnx") < 0.5 * compressed_size(tmp_path / "dense.onnx")  # ...its download does
    model = onnx.load(str(tmp_path / "sparse.onnx"))
    stored = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if len(i.dims) >= 2]
    assert sum(int((w == 0).sum()) for w in stored) / sum(w.size for w in stored) == pytest.approx(0.8, abs=0.01)


def test_two_four_masks_verified_on_every_pruned_layer(zoo_checkpoint, cli, tmp_path):
    result = cli("prune", zoo_checkpoint("cnn_same", epochs=2), "--method", "2:4", "--finetune-epochs", "1",
                 "--format", "tflite", "--no-int8", "--no-bench", "--json", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    summary = report["prune"]
    assert summary["n_m_check"] and all(summary["n_m_check"].values())
    assert set(summary["n_m_check"]) == set(summary["pruned_layers"]) == {"features.3", "classifier.1", "classifier.3"}
    assert "features.0" in summary["notes"][0]  # 1 input channel x 3x3 = 9 weights per filter: not a multiple of 4
    assert _artifact(report, "fp32-tflite")["verified_in"] == ["litert"]
    assert "2:4 pattern verified on 3 of 3 pruned layers." in (tmp_path / "report.md").read_text()
    reloaded = load_model(tmp_path / "model.pt2").module  # the exported model still holds the pattern
    assert all(check_n_m(reloaded, 2, 4, summary["pruned_layers"]).values())


def test_n_m_mask_groups_run_along_input_channels():
    weight = torch.randn(8, 16, 3, 3)
    mask = n_m_mask(weight, 2, 4)
    nhwc = mask.permute(0, 2, 3, 1).reshape(-1, 4)
    assert (nhwc.sum(dim=1) == 2).all()
    linear = n_m_mask(torch.randn(5, 12), 1, 4)
    assert (linear.reshape(-1, 4).sum(dim=1) == 1).all()


def test_cubic_schedule():
    assert [round(s, 3) for s in polynomial_schedule(0.5, 4)] == [0.289, 0.438, 0.492, 0.5]
    assert [ramp_epochs(e) for e in (1, 2, 3, 6)] == [1, 2, 2, 4]


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.0"], "--sparsity"),
    (["--sparsity", "-0.1"], "--sparsity"),
    (["--method", "4:4"], "0 < N < M"),
    (["--method", "5:4"], "0 < N < M"),
    (["--method", "2:4", "--sparsity", "0.3"], "always removes 0.5"),
    (["--method", "random"], "unknown pruning method"),
    (["--skip", "features.9"], "unknown layer 'features.9'; layers with weights: features.0, features.3"),
    (["--layer-sparsity", "nope=0.3"], "unknown layer 'nope'"),
    (["--layer-sparsity", "features.0=1.5"], "must be in [0, 1)"),
])
def test_bad_input_is_one_line_and_exit_2(mnist, cli, tmp_path, args, message):
    result = cli("prune", mnist, *args, "--format", "onnx", "--no-bench", "--out", tmp_path)
    assert result.exit_code == 2
    assert message in one_line(result)


def test_structured_pruning_of_a_graph_is_refused(cli, tmp_path, structured_run):
    run_dir, _ = structured_run
    result = cli("prune", run_dir / "model.pt2", "--method", "l1-structured", "--out", tmp_path)
    assert result.exit_code == 2
    assert "needs the model's Python class" in one_line(result)


def test_finetuning_needs_labels(mnist, splits):
    unlabeled = splits.train.subset(np.arange(splits.train.size), "train")
    unlabeled.y = None
    from compress.data import Splits
    from compress.errors import UsageError

    with pytest.raises(UsageError, match="labeled data"):
        apply(load_model(mnist), PruneConfig(finetune_epochs=1), Splits(unlabeled, splits.val, splits.test))
