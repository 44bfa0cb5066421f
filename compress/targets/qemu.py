"""The qemu-arm64 target: an emulated ARM64 Linux userspace (Debian arm64 Python + aarch64 wheels) under qemu-user.

The userspace is built once into ``$COMPRESS_QEMU_CACHE`` (default ``$COMPRESS_CACHE/qemu-arm64`` or
``~/.cache/compress/qemu-arm64``):
``debootstrap --foreign`` downloads and unpacks Debian bookworm arm64 with python3 (no second stage is needed: nothing
has to be configured for Python to run), then pip on this machine installs aarch64 wheels of numpy, onnxruntime and
ai-edge-litert into it (``--platform manylinux_*_aarch64``). Runs use ``qemu-aarch64-static -L <rootfs>``.

Pinned versions (checked on Debian bookworm's qemu-user 7.2): onnxruntime 1.27.0 is the newest that imports there
(1.28 and later die with SIGSEGV at import); ai-edge-litert 2.1.6 is the newest that runs (2.2.0 and 2.3.0 crash when
a model is loaded). The emulated core defaults to ``cortex-a76`` because ``-cpu max`` gave wrong int8 results (dynamic
int8 ConvInteger in onnxruntime, static int8 in LiteRT) where every named core matched x86 exactly.

Latency measured here is marked ``emulated: true``: it shows that the file runs on ARM64, never how fast.

Example:
    >>> rootfs = ensure_rootfs()            # minutes the first time, then cached
    >>> QemuTarget().run(RunRequest(Path("model.int8.tflite"), runs=20)).report["environment"]["machine"]
    'aarch64'
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compress.errors import EnvironmentFailure, UsageError
from compress.safety.jsonsafe import loads
from compress.safety.quiet import story_stream
from compress.targets.base import (
    register_target,
    RUNNER_PATH, RunRequest, RunResult, last_line, load_outputs, parse_runner_output, run_command, save_inputs,
)

SUITE = "bookworm"                 # Debian release of the userspace; its python3 is 3.11
PYTHON_VERSION = "3.11"
PINS = {"numpy": "2.2.6", "onnxruntime": "1.27.0", "ai-edge-litert": "2.1.6"}
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{n}_aarch64" for n in (17, 24, 26, 27, 28, 31)))
DEFAULT_CPU = "cortex-a76"
DEFAULT_TIMEOUT_S = 1800.0
BUILD_TIMEOUT_S = 1800
NAME = "qemu-arm64"


def cache_root() -> Path:
    """``$COMPRESS_QEMU_CACHE``, else ``$COMPRESS_CACHE/qemu-arm64``, else ``~/.cache/compress/qemu-arm64``."""
    if os.environ.get("COMPRESS_QEMU_CACHE"):
        return Path(os.environ["COMPRESS_QEMU_CACHE"])
    base = os.environ.get("COMPRESS_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "compress") / "qemu-arm64"


def rootfs_dir(cache: Path | None = None) -> Path:
    tag = "-".join(f"{name}{version}" for name, version in PINS.items())
    return (cache or cache_root()) / f"{SUITE}-py{PYTHON_VERSION}-{tag}"


def find_qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name)
        if found:
            return found
    raise EnvironmentFailure(f"{NAME}: qemu-aarch64 not found; install it (Debian: apt-get install qemu-user-static)")


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (``COMPRESS_DEBIAN_MIRROR`` overrides)."""
    if os.environ.get("COMPRESS_DEBIAN_MIRROR"):
        return os.environ["COMPRESS_DEBIAN_MIRROR"]
    candidates = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        candidates += re.findall(r"^URIs:\s*(\S+)", path.read_text(), flags=re.M)
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), flags=re.M)
    for uri in candidates:
        if "security" not in uri and "debian" in uri:
            return uri
    raise EnvironmentFailure(f"{NAME}: no Debian archive found in /etc/apt; set COMPRESS_DEBIAN_MIRROR to a Debian mirror URL")


def ensure_rootfs(cache: Path | None = None, log=None) -> Path:
    """The ready userspace, built first if needed (under a lock, into a temporary folder renamed when complete)."""
    final = rootfs_dir(cache)
    if (final / "compress-rootfs.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "compress-rootfs.json").is_file():
            return final
        build_rootfs(final, log or (lambda message: print(f"{NAME}: {message}", file=story_stream(), flush=True)))
    return final


def build_rootfs(final: Path, log) -> None:
    qemu = find_qemu()
    if not shutil.which("debootstrap"):
        raise EnvironmentFailure(f"{NAME}: debootstrap not found; install it (Debian: apt-get install debootstrap)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        rootfs = work / "rootfs"
        log(f"building the ARM64 userspace once into {final} (Debian {SUITE} arm64 + python3; a few minutes)")
        _step(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3", SUITE, str(rootfs), debian_mirror()],
              "debootstrap")
        archives = rootfs / "var/cache/apt/archives"
        for deb in sorted(archives.glob("*.deb")):  # --foreign unpacks only the base; python3 and its libraries too
            _step(["dpkg-deb", "-x", str(deb), str(rootfs)], f"unpacking {deb.name}", timeout=300)
        for junk in (archives, rootfs / "usr/share/doc", rootfs / "usr/share/man", rootfs / "usr/share/locale", rootfs / "debootstrap"):
            shutil.rmtree(junk, ignore_errors=True)
        site = rootfs / "opt/compress/site"
        log(f"installing aarch64 wheels: {', '.join(f'{k}=={v}' for k, v in PINS.items())}")
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        _step([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts", "--no-compile",
               "--target", str(site), *platforms, "--python-version", PYTHON_VERSION, "--implementation", "cp",
               "--only-binary=:all:", *(f"{k}=={v}" for k, v in PINS.items())], "pip install (aarch64 wheels)")
        check = ("import json, platform, numpy, onnxruntime, ai_edge_litert.interpreter as i;"
                 "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), 'numpy': numpy.__version__,"
                 "'onnxruntime': onnxruntime.__version__}))")
        done = _step([qemu, "-cpu", DEFAULT_CPU, "-L", str(rootfs), str(rootfs / "usr/bin/python3"), "-c", check],
                     "the smoke test (import numpy, onnxruntime, ai_edge_litert under qemu)", env=_env(rootfs), timeout=600)
        stamp = {**loads(done.stdout.strip().splitlines()[-1]), "pins": PINS, "suite": SUITE, "qemu": qemu_version(qemu),
                 "build_seconds": round(time.monotonic() - started, 1)}
        (rootfs / "compress-rootfs.json").write_text(json.dumps(stamp, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(rootfs, final)
        log(f"ready in {stamp['build_seconds']:.0f} s: {final}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _step(command: list[str], what: str, env: dict | None = None, timeout: int = BUILD_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise EnvironmentFailure(f"{NAME}: {command[0]} not found while building the userspace") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"{NAME}: {what} took longer than {timeout} s while building the userspace") from None
    if done.returncode != 0:
        raise EnvironmentFailure(f"{NAME}: {what} failed while building the userspace: {last_line(done.stderr or done.stdout)}")
    return done


def _env(rootfs: Path) -> dict:
    """A clean environment for the emulated Python: nothing of this machine's Python leaks in."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(rootfs / "opt/compress/site"), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def qemu_version(qemu: str) -> str:
    try:
        done = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(r"version (\S+)", done.stdout)
    return match.group(1) if match else "?"


@register_target("qemu-arm64", names=("qemu-arm64",))
class QemuTarget:
    """Runs the device runner inside the cached ARM64 userspace under qemu-user; latency is ``emulated``."""

    name = NAME
    emulated = True
    process = "emulator"
    OPTIONS = ("cpu", "timeout_s", "cache")

    def __init__(self, cpu: str | None = None, timeout_s: float | None = None, cache: str | Path | None = None):
        self.cpu = cpu or DEFAULT_CPU
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.cpu):
            raise UsageError(f"{NAME}: bad --qemu-cpu {self.cpu!r}; use a qemu ARM core name like cortex-a76 or neoverse-n1")
        self.timeout_s = float(timeout_s or DEFAULT_TIMEOUT_S)
        self.cache = Path(cache) if cache else None
        self.notes = [] if self.cpu != "max" else ["-cpu max gave wrong int8 results under qemu 7.2 here: prefer a named core"]

    def run(self, request: RunRequest) -> RunResult:
        qemu = find_qemu()
        rootfs = ensure_rootfs(self.cache)
        self.qemu_version = qemu_version(qemu)
        with tempfile.TemporaryDirectory(prefix="compress-qemu-") as folder:
            folder = Path(folder)
            inputs = save_inputs(request.inputs, folder / "inputs.npz") if request.inputs is not None else None
            outputs = folder / "outputs.npz" if request.want_outputs else None
            args = request.runner_args(str(Path(request.artifact).resolve()), str(inputs) if inputs else None, str(outputs) if outputs else None)
            command = [qemu, "-cpu", self.cpu, "-L", str(rootfs), str(rootfs / "usr/bin/python3"), str(RUNNER_PATH), *args]
            done = run_command(command, NAME, self.timeout_s, env=_env(rootfs), what="the emulated runner")
            if "unable to find CPU model" in (done.stderr or ""):
                raise UsageError(f"{NAME}: qemu has no CPU model {self.cpu!r}; try cortex-a76, cortex-a72, cortex-a53 or neoverse-n1")
            if done.returncode < 0 or "uncaught target signal" in (done.stderr or ""):
                raise EnvironmentFailure(f"{NAME}: the runtime crashed under emulation ({last_line(done.stderr)})")
            report = parse_runner_output(done, NAME)
            return RunResult(report, load_outputs(outputs) if outputs else None)

    def describe(self, report: dict) -> str:
        import platform

        environment = report.get("environment", {})
        return (f"emulated {environment.get('machine', 'aarch64')} {self.cpu} under qemu-aarch64 {getattr(self, 'qemu_version', '?')} "
                f"on {platform.machine()} (Python {environment.get('python', '?')}); not a device latency")
