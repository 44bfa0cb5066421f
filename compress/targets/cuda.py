"""The cuda target: onnxruntime's TensorRT/CUDA execution providers, or torch on CUDA, timed by the device runner.

On a machine without a usable GPU the target is skipped ("no CUDA device: skipped"), never a crash. TensorRT is
used first when onnxruntime offers it, then CUDA; the runner refuses a session that silently fell back to the CPU.

Example:
    >>> target = CudaTarget()
    >>> target.run(RunRequest(Path("model.fp32.onnx"), runtime="onnxruntime"))   # TargetSkipped on a CPU-only box
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from compress.backends import find_format
from compress.runtimes.base import runtime_for
from compress.targets.base import RunRequest, RunResult, TargetSkipped, register_target
from compress.targets.local import LocalTarget, describe_environment

NO_DEVICE = "no CUDA device: skipped"


def gpu_visible() -> str | None:
    """A GPU's name when the NVIDIA driver shows one, else None."""
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        except (subprocess.TimeoutExpired, OSError):
            return None
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return "NVIDIA GPU"
    return None


def ort_gpu_providers() -> list[str]:
    """TensorRT and/or CUDA providers this onnxruntime build offers, best first (empty for CPU-only builds)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    available = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]


@register_target("cuda", names=("cuda",))
class CudaTarget(LocalTarget):
    """Local child process on the GPU. A format with no CUDA path (its record's ``no_cuda``: ``.tflite``) is skipped,
    like a machine without a GPU."""

    name = "cuda"
    emulated = False

    def run(self, request: RunRequest) -> RunResult:
        runtime = request.runtime if request.runtime != "auto" else runtime_for(request.artifact)
        fmt = find_format(request.artifact)
        if fmt is not None and fmt.no_cuda and runtime == fmt.runtime:
            raise TargetSkipped(fmt.no_cuda)
        self.gpu = gpu_visible()
        if self.gpu is None:
            raise TargetSkipped(NO_DEVICE)
        if runtime == "onnxruntime":
            providers = ort_gpu_providers()
            if not providers:
                raise TargetSkipped(f"{NO_DEVICE} (this onnxruntime has no CUDA provider: pip install onnxruntime-gpu)")
            request.providers = [*providers, "CPUExecutionProvider"]
        else:
            request.providers = ["cuda"]
        request.runtime = runtime
        return super().run(request)

    def describe(self, report: dict) -> str:
        environment = report.get("environment", {})
        return f"{getattr(self, 'gpu', None) or 'GPU'} via {environment.get('delegate', '?')}; host {describe_environment(environment)}"
