"""Hostile paths and environments through the real CLI: each one exit 2 (bad input) or 3 (environment) with one line
that names the real cause and says what to do, one JSON document with --json, no traceback, nothing under a final
name. Also: one format that cannot be produced does not stop the others (exit 1, the report says which and why)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_hostile_files import tmpfs  # noqa: F401  (a fixture: a freshly mounted tmpfs)
from tests.test_hostile_inputs import refused

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint) -> Path:
    return zoo_checkpoint("mnist_cnn", epochs=1)


@pytest.fixture()
def links(tmp_path) -> Path:
    """``loop`` (a symlink loop: loop -> twin -> loop) and ``dangling`` (a symlink to a folder that does not exist)."""
    (tmp_path / "loop").symlink_to(tmp_path / "twin")
    (tmp_path / "twin").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    return tmp_path


def quantize(cli, model, out, *args):
    return cli("quantize", model, "--no-bench", "--format", "onnx", "--out", out, "--json", *args)


# --- --out that cannot be a run directory ------------------------------------------------------------------------

@pytest.mark.parametrize("out, message", [
    ("/proc/compress-run", "cannot write to the run directory /proc/compress-run: No such file or directory; choose another --out"),
    ("/proc/self/compress-run", "cannot write to the run directory /proc/self/compress-run: No such file or directory"),
    ("{links}/loop", "--out {links}/loop runs into a symlink loop; fix the link or give another path"),
    ("{links}/loop/run", "--out {links}/loop/run runs into a symlink loop"),
    ("{links}/dangling", "--out {links}/dangling: {links}/dangling is a symlink to {links}/nowhere, which does not exist; "
                         "fix the link or give another path"),
])
def test_out_that_cannot_hold_a_run_is_exit_2_naming_the_cause(cli, mnist, links, out, message):
    out = out.format(links=links)
    line = refused(quantize(cli, mnist, out), json_out=True)
    assert message.format(links=links) in line
    assert not (links / "nowhere").exists() and not Path(out).parent.joinpath("report.json").exists()
    assert "an existing file" not in line


@pytest.mark.parametrize("verb", [["quantize"], ["prune"], ["zoo", "eval"]])
def test_symlink_loop_as_the_model_is_exit_2_naming_it(cli, links, tmp_path, verb):
    result = cli(*verb, links / "loop", "--out", tmp_path / "run", "--json") if verb[0] != "zoo" else cli(*verb, links / "loop", "--json")
    assert f"model {links / 'loop'} runs into a symlink loop" in refused(result, json_out=True)
    assert not (tmp_path / "run").exists()


# --- zoo train --out -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("out, message", [
    ("/proc/x.pt", "cannot write to /proc/x.pt: No such file or directory; choose another --out"),
    ("{links}/loop", "--out {links}/loop runs into a symlink loop"),
    ("{links}/dangling/model.pt", "{links}/dangling is a symlink to {links}/nowhere, which does not exist"),
    ("{links}", "--out {links} is a directory; give a file name"),
])
def test_zoo_train_out_refused_before_training(cli, links, out, message):
    result = cli("zoo", "train", "mnist_cnn", "--epochs", "1", "--force", "--out", out.format(links=links), "--json")
    assert message.format(links=links) in refused(result, json_out=True)
    assert not list(links.rglob("*.pt")) and not [p for p in links.iterdir() if "probe" in p.name]


# --- messages that named the wrong thing -----------------------------------------------------------------------------

def test_full_tmpdir_is_named_not_the_run_directory(tmpfs, mnist, tmp_path):  # noqa: F811
    """onnxruntime's quantizer reads a copy of the fp32 file in $TMPDIR: a TMPDIR with 100 kB free fails there."""
    full = tmpfs(256)
    (full / "filler").write_bytes(b"\0" * (150 << 10))
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(mnist), "--format", "onnx", "--no-bench",
                           "--out", str(run_dir)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(full)})
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert (f"error: no space left in the temporary folder {full} ($TMPDIR): free space there or set TMPDIR to a folder "
            "with room, and rerun") in done.stderr.splitlines()
    assert str(run_dir) not in done.stderr
    assert not (run_dir / "model.int8.onnx").exists() and not (run_dir / "report.json").exists()


def test_missing_known_hosts_file_is_named(cli, mnist, tmp_path):
    onnx = tmp_path / "run"
    cli("quantize", mnist, "--no-bench", "--format", "onnx", "--precision", "fp16", "--out", onnx)
    missing = tmp_path / "nowhere" / "known_hosts"
    result = cli("bench", onnx / "model.fp32.onnx", "--target", "ssh://127.0.0.1:1", "--known-hosts", missing, "--json")
    line = refused(result, json_out=True)
    assert f"known_hosts file {missing} does not exist" in line and "ssh-keyscan -p 1 127.0.0.1" in line
    assert "changed" not in line


@pytest.mark.parametrize("out, message", [
    ("/proc/compress-fleet", "cannot write to the run directory /proc/compress-fleet: No such file or directory"),
    ("{links}/loop", "--out {links}/loop runs into a symlink loop"),
])
def test_fleet_out_refused_before_any_recipe_runs(cli, links, out, message):
    result = cli("fleet", links / "recipe.yaml", "--out", out.format(links=links), "--json")
    assert message.format(links=links) in refused(result, json_out=True)


@pytest.mark.parametrize("option", [["--workers", "0"], ["--cpus-per-recipe", "-1"]])
def test_fleet_refusal_prints_one_json_document(cli, tmp_path, option):
    line = refused(cli("fleet", tmp_path / "recipe.yaml", *option, "--out", tmp_path / "fleet", "--json"), json_out=True)
    assert line.startswith(f"error: {option[0]}: give 1 to ")  # the option's range, checked while the line is parsed
    assert not (tmp_path / "fleet").exists()


# --- one format that cannot be produced ------------------------------------------------------------------------------

ROUNDING_MODEL = '''import torch
from torch import nn


class RoundNet(nn.Module):
    """Logits rounded to two decimals: ONNX and TFLite express round(decimals=2), ExecuTorch has no kernel for it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return torch.round(self.fc(x), decimals=2)
'''


@pytest.fixture(scope="module")
def pte_refused(cli, tmp_path_factory):
    """`compress quantize --format onnx,tflite,pte` on a model ExecuTorch cannot lower (a real failure, no injection)."""
    import torch

    folder = tmp_path_factory.mktemp("rounding")
    (folder / "rounding.py").write_text(ROUNDING_MODEL)
    sys.path.insert(0, str(folder))
    try:
        import rounding

        torch.manual_seed(0)
        torch.save(rounding.RoundNet().state_dict(), folder / "round.pt")
    finally:
        sys.path.remove(str(folder))
    np.savez(folder / "inputs.npz", x=np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    run_dir = folder / "run"
    return run_dir, quantize_rounding(cli, folder, run_dir, "onnx,tflite,pte")


def quantize_rounding(cli, folder: Path, run_dir: Path, formats: str):
    return cli("quantize", folder / "round.pt", "--arch", f"{folder / 'rounding.py'}:RoundNet", "--data", folder / "inputs.npz",
               "--format", formats, "--no-bench", "--out", run_dir, "--json")


def test_a_format_that_cannot_be_lowered_is_refused_while_the_others_go_on(pte_refused):
    from compress.report import validate_report

    run_dir, result = pte_refused
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    report = json.loads(result.stdout)  # exactly one JSON document: the report
    assert report == json.loads((run_dir / "report.json").read_text())
    validate_report(report)
    [refusal] = report["refused"]
    assert refusal["format"] == "pte" and refusal["precisions"] == ["fp32", "int8"]
    assert "ExecuTorch could not lower the model" in refusal["reason"] and "round.decimals" in refusal["reason"]
    gate = next(g for g in report["gates"] if not g["passed"])
    assert (gate["name"], gate["artifact"]) == ("produced", "pte") and report["passed"] is False
    last = result.stderr.strip().splitlines()[-1]  # after the progress lines
    assert last.startswith("error: gate produced failed for pte: not produced (fp32, int8): the .pte path cannot lower")
    assert {a["name"] for a in report["artifacts"]} == {"fp32-onnx", "int8-onnx", "fp32-tflite", "int8-tflite"}


def test_the_refused_format_leaves_no_file_and_the_others_are_verified(pte_refused):
    from compress.runtimes import open_runner

    run_dir, _ = pte_refused
    assert {p.name for p in run_dir.iterdir() if p.suffix in (".onnx", ".tflite", ".pte")} == {
        "model.fp32.onnx", "model.int8.onnx", "model.fp32.tflite", "model.int8.tflite"}
    assert not list(run_dir.rglob("*.pte")) and not (run_dir / ".partial").exists()
    for name in ("model.int8.onnx", "model.int8.tflite"):
        (logits,) = open_runner(run_dir / name).run((np.zeros((1, 16), np.float32),))
        assert logits.shape == (1, 4)
    for page in ("report.md", "report.html"):
        text = (run_dir / page).read_text()
        assert "produced" in text and "round.decimals" in text


def test_only_the_refused_format_asked_for_is_exit_2(cli, pte_refused, tmp_path):
    run_dir, _ = pte_refused
    result = quantize_rounding(cli, run_dir.parent, tmp_path / "run", "pte")
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]  # after the progress lines
    assert json.loads(result.stdout) == {"error": last.removeprefix("error: "), "exit_code": 2}
    assert "ExecuTorch could not lower the model" in last
    assert not (tmp_path / "run").exists()


# --- numpy inside forward ----------------------------------------------------------------------------------------

NUMPY_MODELS = '''import numpy as np
import torch
from torch import nn


class CallsNumpy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x) * float(np.abs(x.detach().numpy()).mean())


class AsArray(CallsNumpy):
    def forward(self, x):
        return self.fc(x) + torch.from_numpy(np.tanh(np.asarray(x.detach()))).sum()
'''


@pytest.mark.parametrize("name, line", [("CallsNumpy", 12), ("AsArray", 17)])
def test_numpy_inside_forward_is_exit_2_naming_the_line(cli, tmp_path, name, line):
    """torch.export cannot capture it (before: exit 3 mid-export, or exit 0 with the TorchScript tracer's frozen values)."""
    import torch

    (tmp_path / "numpy_models.py").write_text(NUMPY_MODELS)
    torch.save({"fc.weight": torch.zeros(4, 16), "fc.bias": torch.zeros(4)}, tmp_path / "weights.pt")
    result = cli("quantize", tmp_path / "weights.pt", "--arch", f"{tmp_path / 'numpy_models.py'}:{name}", "--input-shape", "1x16",
                 "--format", "onnx,tflite", "--no-bench", "--out", tmp_path / "run", "--json")
    line_text = refused(result, json_out=True)
    assert f"the model's forward hands a tensor to numpy (numpy_models.py:{line})" in line_text
    assert "use torch operations in forward" in line_text
    assert not (tmp_path / "run").exists()


# --- bench of a file that is not a model ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, message", [
    (".onnx", "is not an ONNX model (DecodeError); give a file exported to ONNX"),
    (".tflite", "is not a .tflite model (its file identifier is missing)"),
    (".pte", "is not a .pte model (its file identifier is missing)"),
])
def test_bench_of_random_bytes_is_exit_2(cli, tmp_path, suffix, message):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    assert f"{path} {message}" in refused(cli("bench", path, "--runs", "3", "--json"), json_out=True)
    assert not (tmp_path / "report.json").exists()


def test_a_converter_that_crashes_refuses_its_format_only(cli, pte_refused, tmp_path, monkeypatch):
    """Injected at the converter boundary (no small model found that only litert-torch fails on): litert_torch.convert
    raises as a converter bug would; the TFLite format is refused, the ONNX files are verified, exit 1."""
    import litert_torch

    def crashing(*args, **kwargs):
        raise RuntimeError("failed to legalize operation 'tfl.custom'\n  (more converter output)")

    monkeypatch.setattr(litert_torch, "convert", crashing)
    run_dir = tmp_path / "run"
    result = quantize_rounding(cli, pte_refused[0].parent, run_dir, "onnx,tflite")
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads(result.stdout)
    assert report["refused"] == [{"format": "tflite", "precisions": ["fp32", "int8"],
                                  "reason": report["refused"][0]["reason"]}]
    assert "litert-torch could not convert the model to TFLite: failed to legalize operation 'tfl.custom'" in report["refused"][0]["reason"]
    assert {a["name"] for a in report["artifacts"]} == {"fp32-onnx", "int8-onnx"}
    assert {p.name for p in run_dir.iterdir() if p.suffix in (".onnx", ".tflite")} == {"model.fp32.onnx", "model.int8.onnx"}


def test_a_recipe_quantize_stage_keeps_the_refusal(cli, pte_refused, tmp_path):
    folder = pte_refused[0].parent
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  source: {folder / 'round.pt'}\n  arch: {folder / 'rounding.py'}:RoundNet\n"
                      f"  input_shapes: [1x16]\ndata:\n  name: {folder / 'inputs.npz'}\n"
                      "stages:\n  - quantize:\n      formats: [onnx, tflite, pte]\n      precisions: [int8]\n")
    result = cli("run", recipe, "--trust-code", "--out", tmp_path / "run", "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads(result.stdout)
    assert [r["format"] for r in report["refused"]] == ["pte"] and report["passed"] is False
    assert json.loads((tmp_path / "run" / "report.json").read_text())["refused"] == report["refused"]
    assert not list((tmp_path / "run").rglob("model.*.pte"))
