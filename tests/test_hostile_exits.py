"""Hostile paths and environments through the real CLI: each one exit 2 (bad input) or 3 (environment) with one line
that names the real cause and says what to do, one JSON document with --json, no traceback, nothing under a final
name. Also: one format that cannot be produced does not stop the others (exit 1, the report says which and why)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
                         "create that folder or give another path"),
])
def test_out_that_cannot_hold_a_run_is_exit_2_naming_the_cause(cli, mnist, links, out, message):
    out = out.format(links=links)
    line = refused(quantize(cli, mnist, out), json_out=True)
    assert message.format(links=links) in line
    assert not (links / "nowhere").exists() and not Path(out).parent.joinpath("report.json").exists()
    assert "an existing file" not in line


def test_symlink_loop_as_the_model_is_exit_2(cli, links, tmp_path):
    assert "loop" in refused(quantize(cli, links / "loop", tmp_path / "run"), json_out=True)
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


@pytest.mark.parametrize("option", [["--workers", "0"], ["--cpus-per-recipe", "-1"]])
def test_fleet_refusal_prints_one_json_document(cli, tmp_path, option):
    line = refused(cli("fleet", tmp_path / "recipe.yaml", *option, "--out", tmp_path / "fleet", "--json"), json_out=True)
    assert "must be at least 1" in line
    assert not (tmp_path / "fleet").exists()
