"""Pick, by timing on this CPU, the fastest of equivalent ONNX files: graph fusions kept or not (fp32), int8 matmuls
static or dynamic (on the fp32 graph as exported).

Which is fastest depends on the CPU's kernels, not on the graph alone: on a 2-core AVX2 CPU without VNNI the
transformer's fused SkipLayerNormalization is slower than LayerNormalization + Add, QAttention slower than int8
MatMuls, and dynamic int8 MatMuls (bias fused) faster than static QDQ ones. So the candidates are built and timed
here, interleaved, as the CPU time of the calling thread with one onnxruntime thread (other processes on a busy
machine barely move it), and a candidate only wins when it is no less faithful to fp32 than the default. The choice
applies to graphs where it matters (attention / LayerNorm patterns, LSTMs); others are quantized as asked.

Example:
    >>> result = quantize_fastest_int8(Path("model.fp32.onnx"), Path("model.int8.onnx"), quantize, calibration)
    >>> result.notes[-1]
    'int8 variant picked by timing on this CPU ...: dynamic MatMul/Gemm 2.17 ms (kept), static 2.30 ms, ...'
"""
from __future__ import annotations

import collections
import functools
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from compress.steps.benchmark import TARGET_HALF_WIDTH, interleaved_samples
from compress.errors import CompressError, first_line
from compress.backends.faithful import FIDELITY_SAMPLES, as_faithful, first_batches, output_fidelity
from compress.backends.onnx.fusions import FUSED_OPS, fuse_transformer, has_transformer_patterns
from compress.catalog import Technique
from compress.safety.io import atomic_path

RUNS = 30                  # timed runs per candidate at most (interleaved, batch 1)
MIN_RUNS = 10              # ... and at least; in between, timing stops as compress.steps.benchmark's adaptive timing does
WARMUP = 3
MARGIN = 0.05              # within 5 % of the fastest counts as a tie: the smaller file wins
FP32_FUSION_SQNR_DB = 60.0  # a fused fp32 graph must compute the same function
DYNAMIC_MATMULS = ("MatMul", "Gemm")
HOW = (f"batch 1, 1 thread, CPU-time p50 of {MIN_RUNS}-{RUNS} interleaved runs, each right after an untimed one, "
       f"until each median's 95 % interval is within ±{TARGET_HALF_WIDTH:.0%}")


@dataclass
class Candidate:
    label: str
    path: Path
    result: object = None   # the quantizer's result (compress.build.ExportResult) for int8 candidates
    p50_ms: float = 0.0
    fidelity: dict | None = None


def worth_choosing(model: onnx.ModelProto) -> bool:
    """Graphs whose fastest form differs by CPU: transformer patterns (fusable or fused, many matmuls) or LSTMs."""
    return has_transformer_patterns(model) or bool(_fused_nodes(model)) or any(node.op_type == "LSTM" for node in model.graph.node)


def _fused_nodes(model: onnx.ModelProto) -> list:
    """The nodes onnxruntime's transformer optimizer made (its com.microsoft fused ops)."""
    return [node for node in model.graph.node if node.domain == "com.microsoft" and node.op_type in FUSED_OPS]


def fuse_fp32_if_faster(path: Path, inputs: tuple[np.ndarray, ...]) -> str | None:
    """Replace the fp32 file ``path`` by its fused graph when that is faster here and computes the same; then say so
    (no timings in the note: it goes into the file, whose bytes stay the same for the same choice)."""
    fusion = fuse_transformer(onnx.load(str(path)))
    if fusion is None:
        return None
    with tempfile.TemporaryDirectory(prefix="compress-fuse-") as work:
        fused = Path(work) / "fused.onnx"
        onnx.save(fusion.model, str(fused))
        plain, candidate = Candidate("unfused", path), Candidate("fused", fused)
        time_candidates([plain, candidate], inputs)
        same = output_fidelity(_outputs(path, [inputs]), _outputs(fused, [inputs]))["sqnr_db"] >= FP32_FUSION_SQNR_DB
        if not (same and candidate.p50_ms < plain.p50_ms * (1 - MARGIN)):
            return None
        with atomic_path(path) as tmp:
            shutil.copyfile(fused, tmp)
    return f"graph fusions ({fusion.describe()}) kept: the fused graph ran faster on the CPU that exported it ({HOW})"


def quantize_fastest_int8(fp32: Path, out: Path, quantize: Callable, fidelity_inputs, kinds: list[str] | None = None):
    """Write ``out``: the fastest faithful int8 file among static / dynamic MatMul+Gemm of the fp32 graph as exported
    (fused when the fusions paid in fp32 on this CPU: fused int8 graphs are not tried on top, which halves the cost of
    the pick). ``quantize(source, out, dynamic_op_types)`` makes one file (an ExportResult); ``fidelity_inputs``:
    a Dataset the candidates are compared with fp32 on; ``kinds``: each output's kind (top-1 agreement is compared on
    class outputs only, compress.backends.faithful.output_fidelity)."""
    model = onnx.load(str(fp32))
    fused_ops = collections.Counter(node.op_type for node in _fused_nodes(model))
    matmuls = any(node.op_type in DYNAMIC_MATMULS for node in model.graph.node)
    with tempfile.TemporaryDirectory(prefix="compress-choose-") as work:
        work = Path(work)
        candidates, failed = [], []
        for dynamic in ((), DYNAMIC_MATMULS) if matmuls else ((),):
            label = "dynamic MatMul/Gemm" if dynamic else "static"
            path = work / f"candidate{len(candidates) + len(failed)}.onnx"
            try:
                candidates.append(Candidate(label, path, quantize(fp32, path, dynamic)))
            except CompressError as exc:
                if not candidates:  # the default file: its error is the run's
                    raise
                failed.append(f"{label} failed ({first_line(exc, 160)})")
        batches = first_batches(fidelity_inputs, min(FIDELITY_SAMPLES, fidelity_inputs.size), 16)
        reference = _outputs(fp32, batches)
        for candidate in candidates:
            candidate.fidelity = output_fidelity(reference, _outputs(candidate.path, batches), kinds)
        time_candidates(candidates, first_batches(fidelity_inputs, 1, 1)[0])
        chosen = pick(candidates)
        shutil.copyfile(chosen.path, out)
    result = chosen.result
    result.path = Path(out)
    if fused_ops:
        result.techniques.insert(0, Technique("graph-fusion", settings=tuple(sorted(fused_ops.items()))))
    listed = ", ".join([*(f"{c.label} {c.p50_ms:.2f} ms" + (" (kept)" if c is chosen else "") for c in candidates), *failed])
    result.notes.append(f"int8 variant picked by timing on this CPU ({HOW}; fidelity vs fp32 on "
                        f"{min(FIDELITY_SAMPLES, fidelity_inputs.size)} calibration samples): {listed}")
    return result


def pick(candidates: list[Candidate]) -> Candidate:
    """The smallest file among the faithful candidates within MARGIN of the fastest faithful one; the first
    candidate is the default the others must be as faithful as."""
    default = candidates[0]
    faithful = [c for c in candidates if c is default or as_faithful(c.fidelity, default.fidelity)]
    fastest = min(c.p50_ms for c in faithful)
    return min((c for c in faithful if c.p50_ms <= fastest * (1 + MARGIN)), key=lambda c: (c.path.stat().st_size, c.p50_ms))


def time_candidates(candidates: list[Candidate], inputs: tuple[np.ndarray, ...], runs: int = RUNS, seed: int = 0) -> None:
    """Set each candidate's ``p50_ms``: the calling thread's CPU time per run with one onnxruntime thread (it runs
    on this thread), by compress.steps.benchmark.interleaved_samples (each timed run right after an untimed one of the same
    file); after MIN_RUNS rounds, rounds stop once every candidate's median is known within ±TARGET_HALF_WIDTH (95 %
    interval), else after ``runs``."""
    from compress.backends.onnx.session import OrtRunner

    runners = {str(i): functools.partial(OrtRunner(c.path, threads=1).run, inputs) for i, c in enumerate(candidates)}
    samples = interleaved_samples(runners, runs, WARMUP, seed, time.thread_time, min_rounds=MIN_RUNS)
    for i, c in enumerate(candidates):
        c.p50_ms = statistics.median(samples[str(i)])


def _outputs(path: Path, batches: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    from compress.backends.onnx.session import OrtRunner

    runner = OrtRunner(path, threads=1)
    chunks = [runner.run(arrays) for arrays in batches]
    return [np.concatenate(parts) for parts in zip(*chunks)]
