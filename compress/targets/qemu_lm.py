"""Token parity of a decoder LM's ONNX file on ARM64: the same greedy tokens from onnxruntime here (x86) and inside
the qemu-arm64 userspace (compress.targets.qemu: Debian arm64, onnxruntime 1.27 aarch64 wheel, a named core), both
by compress/targets/lm_greedy.py. Files whose layers compute in float (fp32, int4-weight: MatMulNBits
accuracy_level 0) give the same tokens; int8-compute layers (8da4w, int8-weight: accuracy_level 4) round activations
to int8 in kernels that differ between x86 and ARM (and onnxruntime 1.32 here vs 1.27 there), so their logits differ
slightly (measured: up to 0.05 on logits of magnitude 2.3, tiny Llama 8da4w) and a near tie can go the other way.

Only ONNX is checked there: the userspace ships onnxruntime and LiteRT, not ExecuTorch (its aarch64 runtime comes
with torch, which the userspace does not carry), so a ``.pte`` is refused with that reason.

Example:
    >>> here, arm = greedy_here(path, [1, 2, 3], 16), greedy_on_qemu(path, [1, 2, 3], 16)   # doctest: +SKIP
    >>> here["tokens"] == arm["tokens"], arm["machine"]                                      # doctest: +SKIP
    (True, 'aarch64')
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from compress.errors import EnvironmentFailure, UsageError

SCRIPT = Path(__file__).with_name("lm_greedy.py")


def _check(path: Path) -> None:
    if path.suffix.lower() != ".onnx":
        raise UsageError(f"{path.name}: token parity on qemu-arm64 runs ONNX files only (the ARM64 userspace has "
                         "onnxruntime and LiteRT, not ExecuTorch, whose aarch64 runtime comes with torch)")
    if not path.is_file():
        raise UsageError(f"no such file: {path}")


def _parse(done: subprocess.CompletedProcess, where: str) -> dict:
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentFailure(f"greedy decoding {where} failed: {tail[:300]}")
    return json.loads(lines[-1])


def greedy_here(path, prompt: list[int], steps: int, threads: int = 1) -> dict:
    """``{"tokens", "machine", "onnxruntime"}`` from this machine's onnxruntime."""
    path = Path(path)
    _check(path)
    done = subprocess.run([sys.executable, str(SCRIPT), str(path), json.dumps(prompt), str(steps), str(threads)],
                          capture_output=True, text=True, timeout=600)
    return _parse(done, "here")


def greedy_on_qemu(path, prompt: list[int], steps: int, threads: int = 1, cpu: str = "cortex-a76",
                   timeout_s: float = 1800) -> dict:
    """The same, inside the qemu-arm64 userspace (built once, cached: compress.targets.qemu.ensure_rootfs)."""
    from compress.targets.qemu import _env, ensure_rootfs, find_qemu

    path = Path(path).resolve()
    _check(path)
    qemu, rootfs = find_qemu(), ensure_rootfs()
    command = [qemu, "-cpu", cpu, "-L", str(rootfs), str(rootfs / "usr/bin/python3"), str(SCRIPT), str(path),
               json.dumps(prompt), str(steps), str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=_env(rootfs), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"greedy decoding under qemu-arm64 took over {timeout_s:.0f} s") from None
    return _parse(done, "under qemu-arm64")
