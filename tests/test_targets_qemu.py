"""qemu-arm64: parity of int8 ONNX and int8 TFLite zoo artifacts on an emulated ARM64 userspace, and its latency marking.

The userspace (Debian bookworm arm64 python3 + aarch64 wheels) is built once into a persistent cache
(``COMPRESS_QEMU_CACHE``, default ~/.cache/compress-tests/qemu-arm64; about 30 s and 330 MB the first time) so later
test runs reuse it. The fixture installs qemu-user-static and debootstrap when they are missing (CI runs as root).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def ensure_tools() -> None:
    if (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")) and shutil.which("debootstrap"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-user-static", "debootstrap"], check=True, env=env, capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def arm64(monkeypatch_module):
    ensure_tools()
    cache = os.environ.get("COMPRESS_QEMU_CACHE") or str(Path.home() / ".cache" / "compress-tests" / "qemu-arm64")
    monkeypatch_module.setenv("COMPRESS_QEMU_CACHE", cache)
    from compress.targets.qemu import ensure_rootfs

    rootfs = ensure_rootfs()
    return json.loads((rootfs / "compress-rootfs.json").read_text())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def int8_run(zoo_checkpoint, tmp_path_factory):
    """A real `quantize` run directory: int8 ONNX (static QDQ) and int8 TFLite (PT2E) of a trained mnist_cnn."""
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize

    run_dir = tmp_path_factory.mktemp("int8")
    config = QuantizeConfig(formats=["onnx", "tflite"], include_fp32=False, bench=False, calib_samples=128)
    quantize(load_model(zoo_checkpoint("mnist_cnn", epochs=2, width=0.5)), config, out_dir=run_dir)
    return run_dir


def test_userspace_has_the_pinned_aarch64_runtimes(arm64):
    from compress.targets.qemu import PINS

    assert arm64["machine"] == "aarch64" and arm64["onnxruntime"] == PINS["onnxruntime"] and arm64["numpy"] == PINS["numpy"]


@pytest.mark.parametrize("artifact", ["model.int8.onnx", "model.int8.tflite"])
def test_int8_artifact_agrees_on_arm64_and_x86(arm64, int8_run, cli, artifact):
    result = cli("verify", int8_run / artifact, "--targets", "local,qemu-arm64", "--samples", "200", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["data"]["samples"] == 200 and document["data"]["split"].startswith("test")  # real test inputs
    local, arm = document["targets"]
    assert (local["target"], local["emulated"], arm["target"], arm["emulated"]) == ("local-cpu", False, "qemu-arm64", True)
    assert arm["runtime_version"] in ("1.27.0", "ai-edge-litert 2.1.6")
    for row in (local, arm):
        assert row["passed"] and row["fidelity"]["top1_agreement"] >= 0.95 and row["fidelity"]["sqnr_db"] >= 10
    assert arm["agreement_with_first"]["target"] == "local-cpu"
    assert arm["agreement_with_first"]["top1_agreement"] >= 0.99 and arm["agreement_with_first"]["max_abs_diff"] < 0.05
    report = json.loads((int8_run / "report.json").read_text())
    parity = next(a for a in report["artifacts"] if a["path"] == artifact)["parity"]
    assert {p["target"] for p in parity} == {"local-cpu", "qemu-arm64"}


def test_emulated_latency_is_marked_and_recorded(arm64, int8_run, cli):
    from compress.report import validate_report

    result = cli("bench", int8_run / "model.int8.tflite", "--target", "qemu-arm64", "--runs", "10", "--warmup", "2", "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)["results"][0]
    assert entry["emulated"] is True and "not a device latency" in entry["device"]
    assert any("emulated" in w for w in entry["warnings"])
    table = cli("bench", int8_run / "model.int8.tflite", "--target", "qemu-arm64", "--runs", "5", "--warmup", "1")
    assert "(EMULATED: not a device latency)" in table.output and "NOT device latencies" in table.output
    report = json.loads((int8_run / "report.json").read_text())
    validate_report(report)
    latency = next(a for a in report["artifacts"] if a["path"] == "model.int8.tflite")["latency"]
    assert [e["emulated"] for e in latency] == [True]
    row = next(line for line in (int8_run / "report.md").read_text().splitlines() if line.startswith("| int8-tflite"))
    assert row.split("|")[9].strip() == "-"  # report.md never shows the emulated figure as the artifact's latency


def test_a_mismatch_fails_with_exit_1_naming_the_target(arm64, int8_run, cli):
    result = cli("verify", int8_run / "model.int8.onnx", "--targets", "qemu-arm64", "--samples", "50", "--min-sqnr", "200")
    assert result.exit_code == 1
    assert "qemu-arm64: SQNR" in result.output and "< 200" in result.output


def test_unloadable_artifact_on_arm64_exits_3_naming_the_target(arm64, cli, tmp_path):
    from onnx import TensorProto, helper

    broken = tmp_path / "broken.onnx"  # an ONNX graph (random bytes are refused before the target: exit 2) no runtime has
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in "xy")
    broken.write_bytes(helper.make_model(helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g", [x], [y])).SerializeToString())
    result = cli("bench", broken, "--target", "qemu-arm64", "--runs", "3")
    assert result.exit_code == 3 and result.output.count("\n") == 1
    assert result.output.startswith("error: qemu-arm64:") and "could not load broken.onnx" in result.output
