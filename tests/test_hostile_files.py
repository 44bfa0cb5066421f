"""Hostile file systems and interrupted runs: nothing unverified under a final name, locked run directories,
third-party temporary files outside the run directory, a full disk named as such."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compress.safety.io import LOW_SPACE_BYTES, DiskFull, atomic_path, disk_full_named
from compress.report import validate_report
from compress.safety.rundir import LOCK, STAGING, run_directory

REPO = Path(__file__).resolve().parents[1]
MODEL_SUFFIXES = (".onnx", ".tflite")
HOLDER = ("import sys, time; from compress.safety.rundir import run_directory\n"
          "with run_directory(sys.argv[1], 'quantize'):\n    print('held', flush=True); time.sleep(120)\n")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _leftovers(run_dir: Path) -> list[str]:
    """Names that are not finished files: temporary names, the staging area, third-party temporaries."""
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
            if p.name == STAGING or "partial" in p.name or "inferred" in p.name or "augmented" in p.name
            or p.suffix in (".data", ".tmp") or p.name.startswith("ranges.")]


def _model_files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if p.suffix in MODEL_SUFFIXES}


@pytest.fixture()
def holder(tmp_path):
    """A second, real process holding ``tmp_path/run``'s lock until the test ends."""
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, env=_env(), text=True)
    assert process.stdout.readline().strip() == "held"
    yield run_dir, process
    process.kill()
    process.wait()


def _mount_tmpfs(folder: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: run the suite as root (e.g. in a container) for this case")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root with CAP_SYS_ADMIN")


@pytest.fixture()
def tmpfs(tmp_path):
    """``tmpfs(size_k, read_only=False)`` -> a freshly mounted tmpfs (unmounted in teardown)."""
    mounted = []

    def mount(size_k: int, read_only: bool = False) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        _mount_tmpfs(folder, f"size={size_k}k" + (",ro" if read_only else ""))
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# --- an artifact that fails verification -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_int8(zoo_checkpoint, cli, tmp_path_factory):
    """`compress quantize --format onnx` whose int8 file is truncated to 481 bytes after quantization."""
    import compress.backends.onnx.quantize as onnx_quantize

    real = onnx_quantize.quantize_onnx

    def truncating(*args, **kwargs):
        result = real(*args, **kwargs)
        with open(result.path, "r+b") as handle:
            handle.truncate(481)
        return result

    run_dir = tmp_path_factory.mktemp("corrupt") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_quantize, "quantize_onnx", truncating)
        result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--format", "onnx", "--no-bench", "--json", "--out", run_dir)
    return run_dir, result


def test_failed_verification_is_a_failed_gate_exit_1(corrupt_int8):
    run_dir, result = corrupt_int8
    assert result.exit_code == 1, result.output
    assert "int8-onnx failed verification" in result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is False
    gate = next(g for g in report["gates"] if g["name"] == "verified")
    assert gate["artifact"] == "int8-onnx" and gate["passed"] is False and gate["reason"]


def test_failed_artifact_kept_under_failed_listed_never_recommended(corrupt_int8):
    run_dir, _ = corrupt_int8
    report = json.loads((run_dir / "report.json").read_text())
    validate_report(report)
    failed = next(a for a in report["artifacts"] if a["name"] == "int8-onnx")
    assert failed["status"] == "failed" and failed["path"] == "failed/model.int8.onnx" and failed["verified_in"] == []
    assert failed["failure"] and failed["metrics"]["degradation"] is None
    assert not (run_dir / "model.int8.onnx").exists()
    assert (run_dir / "failed" / "model.int8.onnx").stat().st_size == 481
    assert _model_files(run_dir) == {"model.fp32.onnx"}  # the verified fp32 file keeps its name
    picks = [report["recommended"]["local-cpu"], *report["recommended"]["by_format"].values()]
    assert all(pick is None or pick["artifact"] != "int8-onnx" for pick in picks)
    assert not _leftovers(run_dir)


# --- third-party temporary files -----------------------------------------------------------------------------------


def test_no_third_party_temporaries_in_the_run_directory(zoo_checkpoint, tmp_path, monkeypatch):
    """int8 static with real calibration, ONNX and TFLite: onnxruntime's -inferred/augmented models and the
    calibration cache are written elsewhere and removed; the run directory holds finished files only."""
    import onnx

    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize

    written = []
    real = onnx.shape_inference.infer_shapes_path
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", lambda src, dst="", *a, **k: (written.append(Path(dst)), real(src, dst, *a, **k))[1])
    run_dir = tmp_path / "run"
    config = QuantizeConfig(formats=["onnx", "tflite"], precisions=["int8"], calibration="minmax", bench=False)
    report = quantize(load_model(zoo_checkpoint("mnist_cnn", epochs=1)), config, out_dir=run_dir).report
    assert written and not any(run_dir.resolve() in p.resolve().parents for p in written)  # ORT wrote, but not here
    assert not any(p.exists() for p in written)
    assert {p.name for p in run_dir.iterdir()} == {LOCK, "model.fp32.onnx", "model.int8.onnx", "model.fp32.tflite",
                                                   "model.int8.tflite", "report.json", "report.md", "report.html", "manifest.json"}
    assert all(a.get("status") != "failed" for a in report["artifacts"])


# --- the run-directory lock ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [["quantize"], ["prune"], ["qat"], ["tune", "--max-degradation", "0.01"]])
def test_second_process_on_a_locked_run_directory_exits_2_naming_the_holder(verb, holder, zoo_checkpoint, cli):
    run_dir, process = holder
    result = cli(verb[0], zoo_checkpoint("mnist_cnn", epochs=1), *verb[1:], "--out", run_dir)
    assert result.exit_code == 2, result.output
    assert f"pid {process.pid}" in result.stderr and "compress quantize" in result.stderr and "started" in result.stderr
    assert not _model_files(run_dir) and not (run_dir / "report.json").exists()


def test_cli_process_refused_while_this_process_holds_the_lock(zoo_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    with run_directory(run_dir, "run"):
        done = subprocess.run([sys.executable, "-m", "compress.cli", "quantize", str(zoo_checkpoint("mnist_cnn", epochs=1)),
                               "--format", "onnx", "--no-bench", "--out", str(run_dir)],
                              capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"pid {os.getpid()}, compress run" in done.stderr and "Traceback" not in done.stderr


def test_a_dead_holder_does_not_block(holder):
    run_dir, process = holder
    process.send_signal(signal.SIGKILL)  # killed without cleanup: its record stays in the lock file
    process.wait()
    assert json.loads((run_dir / LOCK).read_text())["pid"] == process.pid
    with run_directory(run_dir, "quantize"):
        assert json.loads((run_dir / LOCK).read_text())["pid"] == os.getpid()


def test_lock_released_and_staging_removed_on_an_exception(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # an existing --out keeps its lock file (a folder the command made and left empty is removed)
    with pytest.raises(RuntimeError), run_directory(run_dir, "quantize"):
        (run_dir / STAGING).mkdir()
        (run_dir / STAGING / "model.int8.onnx").write_bytes(b"half")
        raise RuntimeError("boom")
    assert not (run_dir / STAGING).exists()
    fd = os.open(run_dir / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(fd)


# --- interrupts ---------------------------------------------------------------------------------------------------


def test_interrupt_mid_export_leaves_no_final_file(zoo_checkpoint, cli, tmp_path, monkeypatch):
    """KeyboardInterrupt while the fp32 ONNX file is written (before its load check): nothing under a final name."""
    import compress.backends.onnx.session as ort_runtime

    def interrupted(path):
        assert Path(path).stat().st_size > 0  # the file was being written
        raise KeyboardInterrupt

    monkeypatch.setattr(ort_runtime, "check_loads_in_child", interrupted)
    run_dir = tmp_path / "run"
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--format", "onnx", "--no-bench", "--out", run_dir)
    assert result.exit_code == 130
    assert not run_dir.exists() or not (_model_files(run_dir) or _leftovers(run_dir) or (run_dir / "report.json").exists())


def test_interrupt_before_verification_leaves_no_final_file(zoo_checkpoint, cli, tmp_path, monkeypatch):
    """KeyboardInterrupt once the int8 file is written but before it is verified: only the verified fp32 file stays."""
    import compress.backends.onnx.quantize as onnx_quantize

    real = onnx_quantize.quantize_onnx

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_quantize, "quantize_onnx", interrupted)
    run_dir = tmp_path / "run"
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--format", "onnx", "--no-bench", "--out", run_dir)
    assert result.exit_code == 130
    assert _model_files(run_dir) == {"model.fp32.onnx"} and not _leftovers(run_dir)
    with run_directory(run_dir, "quantize"):  # the lock was released
        pass


# --- atomic writes ------------------------------------------------------------------------------------------------


def test_atomic_write_failure_leaves_no_partial_file_and_the_old_one_intact(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of a new rep")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_write_fsyncs_the_file_then_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def recording(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    with atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"bytes")
    assert synced == [False, True]
    assert (tmp_path / "model.onnx").read_bytes() == b"bytes"


# --- read-only and full file systems -------------------------------------------------------------------------------


def test_read_only_out_is_usage_error_naming_it(tmpfs, zoo_checkpoint, cli):
    read_only = tmpfs(64, read_only=True)
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--format", "onnx", "--no-bench", "--out", read_only / "run")
    assert result.exit_code == 2
    assert f"cannot write to the run directory {read_only / 'run'}" in result.stderr and "choose another --out" in result.stderr


def test_enospc_is_named_disk_full(tmp_path):
    with pytest.raises(DiskFull, match=r"no space left on device \(.*\): free space and rerun"), disk_full_named(tmp_path):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.onnx"))


def test_a_corrupt_read_after_a_failed_write_on_a_full_disk_is_named_disk_full(tmpfs):
    """onnxruntime writes through C++ and reports the truncated file later: 'Wire format was corrupt'."""
    full = tmpfs(256)
    with pytest.raises(OSError):
        (full / "filler").write_bytes(b"x" * (512 << 10))
    assert os.statvfs(full).f_bavail * os.statvfs(full).f_frsize < LOW_SPACE_BYTES
    with pytest.raises(DiskFull, match=f"no space left on device \\({full}\\)"), disk_full_named(full):
        raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Wire format was corrupt")


def test_quantize_on_a_disk_that_fills_up_exits_3_leaving_only_finished_files(tmpfs, zoo_checkpoint, cli):
    """600 kB: the fp32 and int8 ONNX files fit, the fp32 TFLite file does not."""
    from compress.runtimes import open_runner

    run_dir = tmpfs(600) / "run"
    result = cli("quantize", zoo_checkpoint("mnist_cnn", epochs=1), "--no-bench", "--out", run_dir)
    assert result.exit_code == 3, result.output
    assert f"no space left on device ({run_dir}): free space and rerun" in result.stderr
    assert "Traceback" not in result.stderr
    assert _model_files(run_dir), "the run should have started (size the tmpfs larger)"
    assert not _leftovers(run_dir)
    for name in _model_files(run_dir):  # every file present is complete: it loads and runs in its runtime
        (logits,) = open_runner(run_dir / name).run((np.zeros((1, 1, 28, 28), np.float32),))
        assert logits.shape == (1, 10)
