"""Processes and streams as a user (or a CI runner) meets them: a killed `compress quantize` takes its second process
with it, ``--json`` stdout is one JSON document whatever libraries print, a wrong path is answered before torch
loads, and third-party lines stay off stderr without --verbose.

Every case runs the real CLI in its own process (signals, file descriptors and imports are per process).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).parents[1]
ARTIFACT_SUFFIXES = (".onnx", ".tflite", ".pte", ".json", ".md", ".html")


def env(*paths: Path) -> dict:
    """The environment of a CLI process: this checkout (and ``paths``) importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (REPO, *paths))}


def compress(*args, extra_path: tuple[Path, ...] = (), timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env(*extra_path))


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(scope="module")
def mnist(zoo_checkpoint) -> Path:
    return zoo_checkpoint("mnist_cnn", epochs=1)


# --- the second process dies with its parent ---------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_quantize_takes_its_second_process_with_it(mnist, tmp_path, sig):
    out = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-m", "compress.cli", "quantize", str(mnist), "--format", "onnx,tflite",
                               "--no-bench", "--json", "--out", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env())
    try:
        converters = []

        def converting() -> bool:  # the second process has its request: the ONNX work (staged) goes on meanwhile
            converters[:] = [pid for pid in children(parent.pid)
                             if b"compress.steps.ahead" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            return bool(converters) and (out / ".partial").is_dir() and any((out / ".partial").iterdir())

        assert wait_until(converting, 300), parent.stderr.read1().decode() if parent.poll() is not None else "no second process"
        child = converters[0]
        os.kill(parent.pid, sig)
        parent.wait(timeout=60)
        assert wait_until(lambda: not alive(child), 5), f"second process {child} outlived its parent ({sig.name})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    stderr = parent.stderr.read().decode()
    assert "Traceback" not in stderr, stderr
    finals = [p for p in out.iterdir() if p.is_file() and p.suffix in ARTIFACT_SUFFIXES] if out.exists() else []
    if sig == signal.SIGTERM:  # unwound as Ctrl-C: staging removed, the lock released, said in one line
        assert parent.returncode == 130 and "interrupted" in stderr, stderr
        assert not (out / ".partial").exists()
        verified = {"model.fp32.onnx", "model.int8.onnx", "model.fp32.tflite", "model.int8.tflite"}
        assert {p.name for p in finals} <= verified  # only files verified before the signal; no report yet
        assert json.loads(parent.stdout.read()) == {"error": "interrupted: nothing half-written was left behind",
                                                    "exit_code": 130}
    assert "report.json" not in {p.name for p in finals}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_killed_fleet_takes_its_workers_with_it(mnist, tmp_path):
    import yaml

    recipe = tmp_path / "mnist.yaml"
    recipe.write_text(yaml.safe_dump({"seed": 0, "model": {"source": str(mnist)}, "data": {"name": "digits28"},
                                      "stages": [{"quantize": {"formats": ["onnx"], "bench": False}}]}))
    parent = subprocess.Popen([sys.executable, "-m", "compress.cli", "fleet", str(recipe), "--executor", "local",
                               "--workers", "1", "--out", str(tmp_path / "fleet"), "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    try:
        workers = []

        def working() -> bool:  # a worker process at its recipe (past its start-up imports)
            workers[:] = [pid for pid in children(parent.pid)
                          if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes() and cpu_seconds(pid) > 2.0]
            return bool(workers)

        assert wait_until(working, 300), "no worker started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), 5), "a fleet worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# --- --json stdout is one document ---------------------------------------------------------------------------------

NOISY_DATA = '''
import ctypes, os
import numpy as np

def digits():
    ctypes.CDLL(None).puts(b"printed from C")          # libc stdio: buffered, flushed late
    os.write(1, b"written to fd 1\\n")
    print("printed from Python")
    rng = np.random.default_rng(0)
    for _ in range(4):
        yield {"x": rng.random((16, 1, 28, 28), dtype=np.float32), "y": rng.integers(0, 10, 16)}
'''


@pytest.mark.parametrize("loud", [False, True], ids=["quiet", "verbose"])
def test_json_stdout_is_one_document_whatever_libraries_print(mnist, tmp_path, loud):
    (tmp_path / "noisy_data.py").write_text(NOISY_DATA)
    done = compress("quantize", mnist, "--data", "noisy_data:digits", "--format", "onnx", "--no-bench", "--json",
                    "--out", tmp_path / "run", *(["--verbose"] if loud else []), extra_path=(tmp_path,))
    assert done.returncode in (0, 1), done.stderr
    assert json.loads(done.stdout)["dataset"]  # exactly one JSON document: json.loads refuses anything more
    for line in ("printed from C", "written to fd 1", "printed from Python"):
        assert line not in done.stdout
        assert (line in done.stderr) == loud  # set aside, not lost: --verbose shows it on stderr


def test_an_error_with_json_is_one_document_too(tmp_path):
    done = compress("quantize", tmp_path / "missing.pt2", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout) == {"error": done.stderr.strip().removeprefix("error: "), "exit_code": 2}


# --- a bad path answers before torch loads -------------------------------------------------------------------------

NO_TORCH = "import sys\nclass NoTorch:\n    def find_spec(self, name, *args):\n" \
           "        if name.split('.')[0] in ('torch', 'onnxruntime'):\n" \
           "            raise ImportError(f'{name} was imported before the arguments were checked')\n" \
           "sys.meta_path.insert(0, NoTorch())\n"


@pytest.mark.parametrize("verb, args, message", [
    ("quantize", ["missing.pt2"], "missing.pt2 not found"),
    ("quantize", ["missing.pt2", "--format", "onnx,tflite"], "missing.pt2 not found"),
    ("prune", ["missing.pt2"], "missing.pt2 not found"),
    ("qat", ["model.tflite"], "an output of compress, not an input"),
    ("quantize", ["model.pt2", "--data", "missing.npz"], "data file missing.npz not found"),
    ("tune", ["model.pt2", "--data", "missing.npz"], "data file missing.npz not found"),
    ("prune", ["model.pt2", "--data", "missing.npz"], "data file missing.npz not found"),  # --data: a shared option
    ("distill", ["--teacher", "model.pt2", "--student", "mnist_cnn", "--data", "missing.npz"], "data file missing.npz not found"),
])
def test_a_bad_model_or_data_path_is_answered_before_torch_is_imported(tmp_path, verb, args, message):
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH)
    (tmp_path / "model.tflite").write_bytes(b"TFL3")
    (tmp_path / "model.pt2").write_bytes(b"PK")  # a model path that exists: the --data check comes next
    done = subprocess.run([sys.executable, "-m", "compress.cli", verb, *args, "--json"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env(tmp_path))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 2


# --- third-party lines stay off stderr without --verbose -----------------------------------------------------------

class DeepTokens(nn.Module):
    """int64 token ids (litert-torch's root-logger 'Signature' warning) and >100 tensors (ai-edge-quantizer's bar)."""

    def __init__(self, layers: int = 40, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(20, dim)
        self.layers = nn.Sequential(*[nn.Linear(dim, dim) for _ in range(layers)])
        self.head = nn.Linear(dim, 3)

    def forward(self, ids):
        return self.head(self.layers(self.embed(ids)).mean(1))


THIRD_PARTY_LINES = ("Applying Transformations to tensors", "cpuinfo_utils.cpp", "WARNING:root:", "Signature 'serving_default'",
                     "oneDNN", "_pytree.py", "Failed to load")


def test_quantize_to_tflite_and_pte_prints_no_third_party_lines(tmp_path):
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(DeepTokens().eval(), (torch.randint(0, 20, (2, 5)),), dynamic_shapes=({0: batch},), strict=False)
    torch.export.save(program, tmp_path / "deep.pt2")
    done = compress("quantize", tmp_path / "deep.pt2", "--format", "tflite,pte", "--precision", "int8-dynamic",
                    "--no-bench", "--out", tmp_path / "run")
    assert done.returncode in (0, 1), done.stderr
    leaked = [line for line in done.stderr.splitlines() if any(text in line for text in THIRD_PARTY_LINES)]
    assert leaked == [], leaked
    assert (tmp_path / "run" / "report.json").is_file()
