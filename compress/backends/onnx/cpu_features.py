"""Which int8 instructions this CPU has, and what that means for int8 speed in ONNX Runtime.

Read from /proc/cpuinfo (Linux x86 ``flags``, Linux ARM ``Features``) or sysctl (macOS); a flag that cannot be
read is reported False, and ``source`` says where the facts came from.

Example (on an x86 CPU with AVX2 but no VNNI):
    >>> features = cpu_int8_features()
    >>> features["arch"], features["avx2"], features["avx512_vnni"]
    ('x86_64', True, False)
    >>> needs_reduce_range(features)
    True
    >>> int8_speed_explanation(features)[:30]
    'this CPU has AVX2 but no VNNI:'
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

X86_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "amx_int8": "amx_int8"}
ARM_FLAGS = {"dotprod": "asimddp", "i8mm": "i8mm"}
MACOS_FLAGS = {"dotprod": "hw.optional.arm.FEAT_DotProd", "i8mm": "hw.optional.arm.FEAT_I8MM"}


def cpu_int8_features() -> dict:
    """``{"arch", "model", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm", "source"}``."""
    return dict(_features())


@functools.lru_cache(maxsize=1)
def _features() -> tuple:
    arch = platform.machine().lower()
    features = {"arch": arch, "model": platform.processor() or arch, **{k: False for k in (*X86_FLAGS, *ARM_FLAGS)}}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags, model = _parse_cpuinfo(cpuinfo.read_text(errors="replace"))
        features.update({k: flag in flags for k, flag in {**X86_FLAGS, **ARM_FLAGS}.items()}, source="/proc/cpuinfo")
        features["model"] = model or features["model"]
    elif platform.system() == "Darwin" and arch in ("arm64", "aarch64"):
        features.update({k: _sysctl(name) == "1" for k, name in MACOS_FLAGS.items()}, source="sysctl")
    else:
        features["source"] = "platform only (instruction flags unknown)"
    return tuple(features.items())


def _parse_cpuinfo(text: str) -> tuple[set[str], str]:
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    return flags, model


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def is_x86(features: dict) -> bool:
    return features["arch"] in ("x86_64", "amd64", "i386", "i686", "x86")


def has_vnni(features: dict) -> bool:
    return bool(features["avx512_vnni"] or features["avx_vnni"] or features["amx_int8"])


def needs_reduce_range(features: dict) -> bool:
    """7-bit weights where ORT's u8s8 int8 kernels can overflow: x86 without VNNI (AVX2 vpmaddubsw saturates int16)."""
    return is_x86(features) and not has_vnni(features)


def int8_speed_explanation(features: dict) -> str:
    """One sentence on what int8 arithmetic can gain on this CPU in ONNX Runtime."""
    if is_x86(features):
        if features["amx_int8"]:
            return ("this CPU has AMX-INT8 tiles and VNNI: int8 matmuls can be several times faster than fp32; "
                    "when int8 is not faster the model is too small or float ops and Quantize/Dequantize steps dominate")
        if has_vnni(features):
            which = "AVX512-VNNI" if features["avx512_vnni"] else "AVX-VNNI"
            return (f"this CPU has {which}: one vpdpbusd does four int8 multiply-adds per lane (about 4x fp32 FMA), so "
                    "when int8 is not faster the cause is elsewhere: small matrices, Quantize/Dequantize overhead, "
                    "or float ops between the quantized ones")
        if features["avx2"]:
            return ("this CPU has AVX2 but no VNNI: onnxruntime's int8 kernels need three instructions "
                    "(vpmaddubsw, vpmaddwd, vpaddd) per 32 multiply-adds with saturating 16-bit sums, at best ~1.3x the "
                    "fp32 FMA rate, so int8 saves memory here more than time (and needs 7-bit weights: reduce_range)")
        return "this CPU has no AVX2: onnxruntime's int8 kernels run on SSE and are rarely faster than fp32"
    if features["arch"] in ("arm64", "aarch64", "armv8l"):
        if features["i8mm"]:
            return "this ARM CPU has i8mm (smmla) and dotprod (sdot): int8 matmuls can be 2-4x faster than fp32"
        if features["dotprod"]:
            return "this ARM CPU has dotprod (sdot/udot): int8 matmuls can be about 2x faster than fp32"
        return "this ARM CPU has no dotprod: int8 arithmetic is barely faster than fp32 NEON, it mostly saves memory"
    return f"int8 speed on {features['arch']} is unknown: onnxruntime may have no optimized int8 kernels for it"
