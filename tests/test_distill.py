"""Knowledge distillation on real digits data: the student, its no-KD twin, and the teacher, measured side by side."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from compress.data.dataset import Head
from compress.loading.model import load_model
from compress.passes.distill import DistillConfig, apply, build_student, kd_loss, parse_student
from compress.report import validate_report

from tests.cli_checks import json_output, one_line

TEACHER_EPOCHS = 3


@pytest.fixture(scope="module")
def teacher(zoo_checkpoint):
    return zoo_checkpoint("mnist_cnn", epochs=TEACHER_EPOCHS)


@pytest.fixture(scope="module")
def distill_run(teacher, cli, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("student")
    return run_dir, json_output(cli("distill", "--teacher", teacher, "--student", "mnist_cnn:width=0.45", "--epochs", "3",
                                    "--format", "onnx", "--no-int8", "--no-bench", "--json", "--out", run_dir,
                                    "--no-gate"))  # a 3-epoch student loses more than the default 1 pt; this checks the report


def test_report_shows_teacher_student_and_the_same_student_without_kd(distill_run):
    run_dir, report = distill_run
    validate_report(report)
    summary = report["distill"]
    assert summary["student"]["params"] == summary["baseline"]["params"] <= summary["teacher"]["params"] / 4
    assert summary["param_ratio"] <= 0.25
    student, baseline = summary["student"]["test"]["value"], summary["baseline"]["test"]["value"]
    assert student > 0.5 and baseline > 0.5  # both really learned the digits
    assert summary["kd_gain"] == pytest.approx(student - baseline, abs=1e-6)
    assert summary["verdict"].startswith("KD helped" if student > baseline else "KD did not help")
    names = {a["name"]: a for a in report["artifacts"]}
    assert set(names) == {"teacher-fp32-onnx", "fp32-onnx", "no-kd-fp32-onnx"}
    for artifact in names.values():
        assert artifact["verified_in"] == ["onnxruntime"] and (run_dir / artifact["path"]).is_file()
    # the exported student and twin give the eager numbers in onnxruntime
    assert names["fp32-onnx"]["metrics"]["task"]["value"] == pytest.approx(student, abs=0.003)
    assert names["no-kd-fp32-onnx"]["metrics"]["task"]["value"] == pytest.approx(baseline, abs=0.003)
    assert report["reference"]["metrics"]["task"]["value"] == summary["teacher"]["test"]["value"]
    assert names["fp32-onnx"]["techniques"][0]["label"] == "distill:kd:T=4:alpha=0.7:student=mnist_cnn:width=0.45"


def test_report_md_and_html_show_teacher_student_and_no_kd_student(distill_run):
    run_dir, report = distill_run
    summary = report["distill"]
    markdown, page = (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()
    for name, part in (("teacher", summary["teacher"]), ("student with KD", summary["student"]), ("same student, no KD", summary["baseline"])):
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {part['params']:,} |" in row and row.endswith(f"| accuracy {part['test']['value']:.4f} |")
        assert f"<td>{part['params']:,}</td>" in page and f"accuracy {part['test']['value']:.4f}" in page
    assert f"- {summary['verdict']}" in markdown and f"Student parameters: {summary['param_ratio']:.3f}x the teacher." in markdown
    assert "<h2>Distillation</h2>" in page and summary["verdict"] in page


def test_student_checkpoint_chains(distill_run):
    run_dir, report = distill_run
    handle = load_model(run_dir / "student.pt")
    assert handle.source_format == "zoo" and handle.arch == {"name": "mnist_cnn", "config": {"width": 0.45}}
    assert sum(p.numel() for p in handle.module.parameters()) == report["distill"]["student"]["params"]
    assert handle.dataset["name"] == "digits28"


def test_kd_loss_is_soft_kl_times_t_squared_plus_hard_ce():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    head = Head("digit", "classification", 10)
    p = F.softmax(teacher / 4, dim=1)
    kl = (p * (p.log() - F.log_softmax(student / 4, dim=1))).sum(1).mean() * 16
    expected = 0.7 * kl + 0.3 * F.cross_entropy(student, labels)
    assert kd_loss(student, teacher, labels, head, 4.0, 0.7).item() == pytest.approx(expected.item(), rel=1e-5)


def test_feature_distillation_with_a_learned_projection(teacher, splits):
    handle = load_model(teacher)
    config = DistillConfig(student="mnist_cnn:width=0.25", epochs=1, features={"features.6": "features.6"}, baseline=False)
    student = apply(handle, config, splits)
    assert "projections" not in dict(student.module.named_modules())  # the projection trained, then stayed behind
    assert not any(m._forward_hooks for m in student.module.modules())
    assert student.metrics["distill"]["features"] == {"features.6": "features.6"}
    assert student.metrics["distill"]["verdict"].startswith("no baseline")


def test_onnx_teacher_gives_soft_targets_through_onnxruntime(teacher, splits, tmp_path):
    from compress.backends.onnx.export import export_onnx

    export_onnx(load_model(teacher), tmp_path / "teacher.onnx")
    handle = load_model(tmp_path / "teacher.onnx")
    assert handle.module is None
    student = apply(handle, DistillConfig(student="mnist_cnn:width=0.25", epochs=1, baseline=False), splits)
    assert student.metrics["distill"]["teacher"]["test"]["value"] > 0.5
    assert student.module(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_student_parsing():
    assert parse_student("mnist_cnn:width=0.25") == ("mnist_cnn", {"width": 0.25})
    assert parse_student("compress.zoo.architectures:MnistCNN:classes=5") == ("compress.zoo.architectures:MnistCNN", {"classes": 5})
    first, _ = build_student("mnist_cnn:width=0.25", seed=3)
    second, _ = build_student("mnist_cnn:width=0.25", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.mark.parametrize("args, message", [
    (["--student", "resnet9000:width=0.5"], "unknown student architecture 'resnet9000:width=0.5'"),
    (["--student", "mnist_cnn:width"], "write options as key=value"),
    (["--student", "compress.zoo.architectures:MnistCNN:classes=5"], "outputs [(5,)] but the teacher outputs [(10,)]"),
    (["--student", "cnn64:width=0.25"], "cannot take the teacher's inputs"),
    (["--student", "mnist_cnn:width=0.25", "--alpha", "1.5"], "--alpha"),
    (["--student", "mnist_cnn:width=0.25", "--temperature", "0"], "--temperature"),
    (["--student", "mnist_cnn:width=0.25", "--features", "features.6=features.99"], "unknown teacher layer 'features.99'"),
])
def test_bad_input_is_one_line_and_exit_2(teacher, cli, tmp_path, args, message):
    result = cli("distill", "--teacher", teacher, *args, "--epochs", "1", "--format", "onnx", "--no-bench", "--out", tmp_path)
    assert result.exit_code == 2
    assert message in one_line(result)
