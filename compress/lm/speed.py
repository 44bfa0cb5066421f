"""A language model's speed as a user meets it: time to first token for a 128-token prompt, decode tokens/s at 1 and
2 threads, peak RSS while generating, KV-cache bytes at a context length, and the decode roofline on named ARM cores.

Each thread count runs in a fresh child process (``python -m compress.lm.speed``) so that its peak RSS
(VmHWM: `peak_rss_bytes`) is that of loading and generating alone. Decoding is bandwidth-bound: every new token reads every
weight once plus the KV cache, so the roofline is bytes per token / the core's DRAM bandwidth (CORES of
compress.targets.estimate), labelled estimate.

Example:
    >>> speed = measure_speed("runs/smollm2/model.int4-weight.onnx", threads=(1, 2))
    >>> speed.decode_tokens_per_s, speed.peak_rss_bytes
    ({1: 41.2, 2: 66.0}, 412000000)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from compress.errors import EnvironmentFailure, UsageError

PROMPT_TOKENS = 128
NEW_TOKENS = 32
KV_CONTEXT = 2048


@dataclass
class LMSpeed:
    """Measured figures per thread count, plus the KV-cache size and roofline estimates."""

    source: str
    runtime: str
    prompt_tokens: int
    new_tokens: int
    ttft_s: dict[int, float]  # threads -> time to first token (prefill of the prompt)
    decode_tokens_per_s: dict[int, float]  # threads -> decode rate
    peak_rss_bytes: dict[int, int]  # threads -> the child's peak resident memory (load + generate)
    weight_bytes: int  # what one decode step reads: the file (or the float parameters for the torch reference)
    kv_cache_bytes: int  # at kv_context positions
    kv_context: int
    roofline: list[dict]  # per core: label "estimate"

    def to_dict(self) -> dict:
        return asdict(self)


def kv_cache_bytes(kv_shape: dict, context: int, bytes_per_value: int = 4) -> int:
    """Keys and values of every layer at ``context`` positions.

    Example:
        >>> kv_cache_bytes({"layers": 30, "kv_heads": 3, "head_dim": 64}, 2048)   # SmolLM2-135M, float32
        94371840
    """
    return 2 * kv_shape["layers"] * kv_shape["kv_heads"] * kv_shape["head_dim"] * context * bytes_per_value


def decode_roofline(weight_bytes: int, kv_bytes: int, cores: Sequence[str] | None = None) -> list[dict]:
    """Decode tokens/s if every token streams the weights and the KV cache through DRAM once, per named core.

    Example:
        >>> decode_roofline(80_000_000, 0, ["cortex-a76"])[0]["tokens_per_s"]
        125.0
    """
    from compress.targets.estimate import CORES

    rows = []
    for key in cores or list(CORES):
        if key not in CORES:
            raise UsageError(f"unknown core {key!r}; choose {', '.join(CORES)}")
        core = CORES[key]
        seconds = (weight_bytes + kv_bytes) / (core.bandwidth_gbs * 1e9)
        rows.append({"label": "estimate", "core": key, "bandwidth_gbs": core.bandwidth_gbs,
                     "bytes_per_token": weight_bytes + kv_bytes, "ms_per_token": round(seconds * 1e3, 6),
                     "tokens_per_s": round(1 / seconds, 2),
                     "assumption": f"{core.name}, {core.bandwidth_gbs:g} GB/s nominal single-core DRAM bandwidth; "
                                   "weights (an untied embedding table counted whole, though one row is read) and KV cache read once per token, "
                                   "compute hidden"})
    return rows


def measure_speed(source, threads: Sequence[int] = (1, 2), prompt_tokens: int = PROMPT_TOKENS,
                  new_tokens: int = NEW_TOKENS, kv_context: int = KV_CONTEXT, cores: Sequence[str] | None = None,
                  timeout_s: float = 900) -> LMSpeed:
    """Run ``source`` (artifact, model directory or .gguf) once per thread count in a child process and collect."""
    runs = {n: _child(Path(source), n, prompt_tokens, new_tokens, timeout_s) for n in threads}
    first = next(iter(runs.values()))
    kv = kv_cache_bytes(first["kv_shape"], kv_context)
    return LMSpeed(source=str(source), runtime=first["runtime"], prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                   ttft_s={n: r["ttft_s"] for n, r in runs.items()},
                   decode_tokens_per_s={n: r["decode_tokens_per_s"] for n, r in runs.items()},
                   peak_rss_bytes={n: r["peak_rss_bytes"] for n, r in runs.items()},
                   weight_bytes=first["weight_bytes"], kv_cache_bytes=kv, kv_context=kv_context,
                   roofline=decode_roofline(first["weight_bytes"], kv, cores))


def _child(source: Path, threads: int, prompt_tokens: int, new_tokens: int, timeout_s: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "compress.lm.speed", str(source), str(threads), str(prompt_tokens), str(new_tokens)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EnvironmentFailure(f"{source.name}: generating {new_tokens} tokens took over {timeout_s:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode == 2:
        raise UsageError((done.stderr.strip().splitlines() or ["the speed run refused the model"])[-1])
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentFailure(f"{source.name}: the speed run failed at {threads} threads: {tail[:300]}")
    return json.loads(lines[-1])


def run_once(source: Path, threads: int, prompt_tokens: int, new_tokens: int) -> dict:
    """In the child: load, prefill a ``prompt_tokens`` window of evaluation text, decode ``new_tokens`` (no stop)."""
    from compress.lm.generation import generate
    from compress.lm.model import kv_shape, read_tokenizer_files
    from compress.lm.session import open_generator
    from compress.lm.text import evaluation_text, token_windows

    session = open_generator(source, threads=threads, max_context=prompt_tokens + new_tokens + 1)
    prompt = token_windows(session.tokenizer, evaluation_text(), prompt_tokens, 1)[0]
    result = generate(session.decoder, prompt, new_tokens, stop=())
    if session.runtime == "torch":
        module = session.decoder.module
        weights, shape = sum(p.numel() * p.element_size() for p in module.parameters()), kv_shape(module.config)
    else:
        weights, shape = source.stat().st_size, read_tokenizer_files(source.parent)[1].get("kv_shape")
    if not shape:
        raise UsageError(f"{source.parent}: lm_meta.json lacks kv_shape (re-export with compress quantize)")
    return {"runtime": session.runtime, "ttft_s": result.ttft_s, "decode_tokens_per_s": result.decode_tokens_per_s,
            "peak_rss_bytes": peak_rss_bytes(), "weight_bytes": int(weights),
            "kv_shape": shape}


def peak_rss_bytes() -> int:
    """This process's own peak resident memory: Linux's VmHWM (``getrusage``'s ``ru_maxrss`` carries the spawning
    parent's peak over fork and exec, so a child started by a large quantize run would report the parent's size).

    Example:
        >>> peak_rss_bytes() > 0
        True
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):  # not Linux: the rusage figure, an upper bound
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    try:
        print(json.dumps(run_once(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
    except UsageError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
