"""llama.cpp (llama-cpp-python) on one GGUF file, run by bench/.venv-llama's python, not compress's: quantize a GGUF
into another type, measure one's perplexity and top-1 agreement on given token chunks, or time it at one thread
count (time to first token, decode tokens/s, peak RSS of that process alone). Prints one JSON document.

Example:
    $ bench/.venv-llama/bin/python bench/peers/llama_cpp_worker.py quantize src.gguf out.Q4_0.gguf Q4_0
    $ bench/.venv-llama/bin/python bench/peers/llama_cpp_worker.py quality out.Q4_0.gguf job.json
    $ bench/.venv-llama/bin/python bench/peers/llama_cpp_worker.py speed out.Q4_0.gguf job.json 2
      (job.json: {"chunks": [[ids]], "reference_top1": [[ids]], "prompt": [ids], "decode": 32, "threads": [1, 2]})
"""
import ctypes
import json
import sys
import time

import llama_cpp
import numpy as np

FTYPES = {"Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
          "F16": "LLAMA_FTYPE_MOSTLY_F16"}


def peak_rss_bytes() -> int:
    """This process's peak RSS since its exec (VmHWM: getrusage's ru_maxrss keeps the spawning parent's peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def quantize(source: str, out: str, kind: str) -> dict:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[kind])
    params.allow_requantize = True  # the source is Q4_1: dequantized to float, then rounded to the new type
    params.nthread = 2
    start = time.perf_counter()
    code = llama_cpp.llama_model_quantize(source.encode(), out.encode(), ctypes.byref(params))
    if code != 0:
        raise SystemExit(f"llama_model_quantize {kind} failed with code {code}")
    return {"quantized": kind, "seconds": round(time.perf_counter() - start, 1)}


def _model(path: str, threads: int, logits_all: bool, n_ctx: int) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads, n_threads_batch=threads,
                           logits_all=logits_all, verbose=False, seed=0)


def quality(path: str, job: dict) -> dict:
    chunks, top1_ref = job["chunks"], job["reference_top1"]
    llm = _model(path, max(job["threads"]), True, max(512, max(len(c) for c in chunks)))
    nll, count, agree, total = 0.0, 0, 0, 0
    for chunk, ref in zip(chunks, top1_ref):
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[: len(chunk)], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        nll -= float(log_probs[np.arange(len(chunk) - 1), np.asarray(chunk[1:])].sum())
        count += len(chunk) - 1
        agree += int((logits.argmax(axis=1) == np.asarray(ref)).sum())
        total += len(chunk)
    return {"perplexity": float(np.exp(nll / count)), "top1_agreement": agree / total,
            "llama_cpp_python": llama_cpp.__version__}


def speed(path: str, job: dict, threads: int) -> dict:
    """Time to first token of the prompt (one eval, best of 3) and decode tokens/s, in a process of its own."""
    llm = _model(path, threads, False, 512)
    ttft = []
    for _ in range(3):
        llm.reset()
        start = time.perf_counter()
        llm.eval(job["prompt"])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ttft.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(job["decode"]):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return {"ttft_ms": 1000 * min(ttft), "decode_tok_s": job["decode"] / (time.perf_counter() - start),
            "peak_rss_bytes": peak_rss_bytes()}


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "quantize":
        print(json.dumps(quantize(*args)))
    else:
        with open(args[1]) as handle:
            job = json.load(handle)
        print(json.dumps(quality(args[0], job) if command == "quality" else speed(args[0], job, int(args[2]))))
