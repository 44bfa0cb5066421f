"""`python -m bench.pages`: write the figures docs/benchmarks.md shows from bench/results/*.json, never by hand.

Each generated block sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` and is rewritten whole:
``latest`` (the benchmark tables, bench/results/latest.json), ``zoo`` (the zoo table, bench/results/zoo.json),
``pte`` (int8 ``.pte`` beside ONNX and TFLite, bench/results/pte.json), ``transformer_speed``
(bench/results/transformer_speed.json), ``cost`` (what `compress quantize` costs, bench/results/cost.json) and
``fidelity_floors`` (int8 fidelity per output kind against the default floors, bench/results/fidelity_floors.json)
and ``lm`` (SmolLM2 through ONNX and the accuracy algorithms, bench/results/lm_onnx.json and lm_algorithms.json, and
llama.cpp beside compress, bench/results/lm_peers.json, once bench.lm_peers has run).
``--check`` rewrites nothing and exits 1 naming a block that differs from its JSON (the test suite runs it).

Example:
    $ python -m bench && python -m bench.pages        # measure, then put the new figures in docs/benchmarks.md
    $ python -m bench.pages --check
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PAGE = Path(__file__).parents[1] / "docs" / "benchmarks.md"


def latest_block() -> str:
    """The benchmark section's tables: bench.__main__'s latest.md, its per-model headings one level down."""
    from bench.__main__ import markdown

    text = markdown(json.loads((RESULTS / "latest.json").read_text()))
    return re.sub(r"^### ", "#### ", text, flags=re.M).rstrip("\n")


def zoo_block() -> str:
    """The model zoo table from zoo.json (articles from the zoo registry: words, not figures)."""
    from compress.data.evaluate import metric_text
    from compress.zoo import ZOO

    rows = json.loads((RESULTS / "zoo.json").read_text())["rows"]
    lines = ["| model | article | dataset | parameters | epochs | test metric (seed 0) | train time |", "|---|---|---|---|---|---|---|"]
    lines += [f"| `{r['model']}` | {ZOO[r['model']].article} | {r['dataset']} | {r['parameters']:,} | {r['epochs']} | "
              f"{metric_text(r['task'], digits=4)} | {r['train_seconds']:.0f} s |" for r in rows]
    return "\n".join(lines)


def pte_block() -> str:
    """Per seed model: compress's int8 ONNX / TFLite / .pte and ExecuTorch's defaults (bench/results/pte.json)."""
    lines = ["| model | int8 file | bytes (× int8 params) | degr. | SQNR dB | p50 b1 ms |", "|---|---|---|---|---|---|"]
    for model in json.loads((RESULTS / "pte.json").read_text())["models"]:
        if "failed" in model:
            lines.append(f"| {model['model']} | not measured: {model['failed']} | | | | |")
            continue
        rows = {row["variant"]: row for row in model["rows"]}
        ours = [rows[f"compress-int8-{fmt}"] for fmt in ("onnx", "tflite", "pte")]
        cells = [" / ".join(cell(r) for r in ours) for cell in (
            lambda r: f"{r['size_bytes']:,} ({r['size_vs_limit']:.3f})", lambda r: f"{r['degradation']:+.3f}",
            lambda r: f"{r['sqnr_db']:.1f}", lambda r: f"{r['p50_ms_b1']:.3g}")]
        lines.append(f"| {model['model']} | compress ONNX / TFLite / .pte | " + " | ".join(cells) + " |")
        base = rows["executorch-xnnpack-default"]
        lines.append(f"| {model['model']} | ExecuTorch defaults | {base['size_bytes']:,} ({base['size_vs_limit']:.3f}) | "
                     f"{base['degradation']:+.3f} | {base['sqnr_db']:.1f} | {base['p50_ms_b1']:.3g} |")
    return "\n".join(lines)


def transformer_speed_block() -> str:
    from bench.transformer_speed import markdown

    return markdown(json.loads((RESULTS / "transformer_speed.json").read_text()))


def cost_block() -> str:
    """The cost table: bench.cost's cost.md."""
    from bench.cost import markdown

    return markdown(json.loads((RESULTS / "cost.json").read_text())).rstrip("\n")


def fidelity_floors_block() -> str:
    """Per model and output, the measure nearest its floor, as configured and repaired (bench.fidelity_floors)."""
    from bench.fidelity_floors import page_table

    return page_table(json.loads((RESULTS / "fidelity_floors.json").read_text()))


def lm_block() -> str:
    """SmolLM2 through each LM route: ONNX files measured in onnxruntime (bench.lm_onnx) and the accuracy algorithms
    in torch (bench.lm_algorithms), with the machine's load when they ran."""
    onnx_run = json.loads((RESULTS / "lm_onnx.json").read_text())
    algorithms = json.loads((RESULTS / "lm_algorithms.json").read_text())
    lines = [f"ONNX files of {onnx_run['model']} in onnxruntime; reference: {onnx_run['reference']} (perplexity "
             f"{onnx_run['reference_perplexity']}); text: {onnx_run['text']}; {onnx_run['timing']}; measured "
             f"{onnx_run['date'][:10]} on {onnx_run['machine']['cpus']} CPUs, load {onnx_run['machine']['loadavg_1m_at_end']} "
             "at the end (speeds on a loaded machine are rough).", "",
             "| file | MB | perplexity change | top-1 agreement | decode tok/s (1 thread) | TTFT 128 tokens (1 thread) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {v['variant']} | {v['bytes'] / 1e6:.0f} | {v['ppl_increase_pct']:+.2f} % | {v['top1_agreement']:.3f} | "
              f"{v['decode_tok_s_t1']:.1f} | {v['ttft_ms_128_t1']:.0f} ms |" for v in onnx_run["variants"]]
    lines += ["", f"Weights rounded in torch (fake-quant) by each algorithm; reference: {algorithms['reference']}; "
              f"{algorithms['text']['evaluation_windows']} x {algorithms['text']['tokens_per_window']} held-out tokens; "
              f"measured {algorithms['date'][:10]}.", "",
              "| variant | perplexity change | top-1 agreement | weight MB |", "|---|---|---|---|"]
    lines += [f"| {v['variant']} | {v['perplexity_increase_pct']:+.2f} % | {v['top1_agreement']:.3f} | "
              f"{v['weight_bytes'] / 1e6:.0f} |" for v in algorithms["variants"]]
    if (RESULTS / "lm_peers.json").is_file():  # bench.lm_peers: llama.cpp beside compress on the same weights
        from bench.lm_peers import markdown

        lines += ["", "Peers on the same weights, text and threads (bench.lm_peers): "
                  + markdown(json.loads((RESULTS / "lm_peers.json").read_text())).rstrip()]
    return "\n".join(lines)

BLOCKS = {"latest": latest_block, "zoo": zoo_block, "pte": pte_block,
          "transformer_speed": transformer_speed_block, "cost": cost_block, "fidelity_floors": fidelity_floors_block,
          "lm": lm_block}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- bench:{name} -->\n)(.*?)(\n<!-- /bench:{name} -->)", re.S)


def rendered(page: str) -> str:
    """``page`` with every generated block rewritten from its JSON."""
    for name, block in BLOCKS.items():
        if not _pattern(name).search(page):
            raise SystemExit(f"{PAGE.name} has no <!-- bench:{name} --> block")
        page = _pattern(name).sub(lambda m, text=block(): m.group(1) + text + m.group(3), page)
    return page


def stale_blocks(page: str) -> list[str]:
    """Names of the blocks whose text differs from what their JSON gives."""
    return [name for name, block in BLOCKS.items() if (m := _pattern(name).search(page)) is None or m.group(2) != block()]


def write_page() -> None:
    """Rewrite every block of docs/benchmarks.md from bench/results/*.json."""
    PAGE.write_text(rendered(PAGE.read_text()))
    print(f"rewrote {', '.join(BLOCKS)} in {PAGE}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"Only check; exit 1 if {PAGE.name} differs from the JSON.")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_blocks(PAGE.read_text())
        if stale:
            sys.exit(f"{PAGE} blocks out of date with bench/results: {', '.join(stale)}; run python -m bench.pages")
        print(f"{PAGE} agrees with bench/results")
        return
    write_page()


if __name__ == "__main__":
    main()
