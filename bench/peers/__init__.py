"""Peer quantizers (NNCF, Olive) the benchmark compares against, each in its own virtual environment.

Their pins may clash with compress's (constraints.txt), so they never enter its install: ``make_venv.sh NAME``
builds ``bench/.venv-NAME`` and ``NAME_int8.py`` runs there. Only files cross: the fp32 ``.onnx`` and an ``.npz`` of
calibration inputs (one array per ONNX input, keyed by its name) go in, an int8 ``.onnx`` comes out.

Example:
    >>> npz = calibration_npz(calibration, Path("fp32.onnx"), Path("calibration.npz"))
    >>> quantize_with("nncf", Path("fp32.onnx"), npz, Path("nncf.onnx"))      # bench/.venv-nncf must exist
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from compress.data import Dataset

HERE = Path(__file__).parent
VENVS = HERE.parent  # bench/.venv-NAME
PEERS = {"nncf": "nncf.quantize defaults (PERFORMANCE preset: symmetric, min/max)",
         "olive": "Olive OnnxStaticQuantization defaults"}


def venv_python(peer: str) -> Path:
    return VENVS / f".venv-{peer}" / "bin" / "python"


def _freeze(peer: str) -> Path:
    """The venv's ``pip freeze``, written by make_venv.sh as its last step: its presence means the build finished."""
    return venv_python(peer).parents[1] / "freeze.txt"


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run (``"nncf: not installed (bench/peers/make_venv.sh nncf)"``), or None when it can."""
    return None if _freeze(peer).exists() else f"{peer}: not installed (bench/peers/make_venv.sh {peer})"


def calibration_npz(calibration: Dataset, fp32_onnx: Path, path: Path) -> Path:
    """Write ``calibration``'s inputs keyed by ``fp32_onnx``'s graph input names (in order), as the drivers read them."""
    import onnx

    names = [i.name for i in onnx.load(str(fp32_onnx), load_external_data=False).graph.input]
    if len(names) != len(calibration.x):
        raise ValueError(f"{fp32_onnx} takes {len(names)} inputs, the calibration data has {len(calibration.x)}")
    np.savez(path, **dict(zip(names, calibration.x)))
    return path


def quantize_with(peer: str, fp32_onnx: Path, calibration: Path, out: Path, timeout_s: float = 1800) -> Path:
    """Run ``peer``'s driver in its venv; the int8 file, or RuntimeError with the driver's last error line."""
    if reason := missing(peer):
        raise RuntimeError(reason)
    done = subprocess.run([str(venv_python(peer)), str(HERE / f"{peer}_int8.py"), str(fp32_onnx), str(calibration), str(out)],
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not out.exists():
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}, no file written"]
        raise RuntimeError(f"{peer} driver failed: {lines[-1][:300]}")
    return out


def version(peer: str) -> str:
    """``nncf 3.4.0``, read from the venv's freeze.txt (make_venv.sh writes it), or the not-installed reason."""
    if reason := missing(peer):
        return reason
    package = {"olive": "olive-ai"}.get(peer, peer)
    pins = _freeze(peer).read_text().splitlines()
    return next((line.replace("==", " ") for line in pins if line.lower().startswith(f"{package}==")), f"{peer} (version unknown)")
