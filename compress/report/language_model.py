"""The language-model section of report.md and report.html: each decoder file's quality on held-out text (perplexity
ratio with its 95 % interval, top-1 and greedy agreement, the verdict), its speed as a user meets it (TTFT, decode
tokens/s, peak RSS, KV-cache bytes), the decode roofline estimate on named ARM cores, and the sample generation.

Built once as a :class:`compress.report.markdown.Section`, so both reports show the same numbers.

Example:
    >>> section = language_model_section(report)      # a `compress quantize` report of a decoder LM
    >>> [caption for caption, _, _ in section.tables]
    ['Quality on held-out text', 'Speed (measured on this machine)', 'Decode roofline (estimate, ARM cores)', 'Sample generation']
"""
from __future__ import annotations

MB = 2**20


def _num(value, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def _per_threads(values: dict | None, fmt: str) -> str:
    return ", ".join(f"{fmt.format(v)} ({n}t)" for n, v in (values or {}).items() if v is not None) or "-"


def _decoders(report: dict) -> list[dict]:
    return [a for a in report["artifacts"] if a["metrics"].get("perplexity")]


def quality_rows(report: dict) -> list[list[str]]:
    """Per file: perplexity vs the reference's, the ratio [95 % bootstrap interval], agreement, the verdict."""
    rows = []
    for a in _decoders(report):
        ppl = a["metrics"]["perplexity"]
        low, high = ppl["ratio_interval"]
        verdict = ppl["verdict"] if ppl["generation_ran"] else "no verdict: generation failed"
        rows.append([a["name"], f"{_num(ppl['perplexity'], '{:.2f}')} vs {_num(ppl['reference_perplexity'], '{:.2f}')}",
                     f"{_num(ppl['perplexity_ratio'])} [{_num(low)}, {_num(high)}]",
                     _num(ppl.get("max_increase"), "+{:.1%}"), _num(ppl["top1_agreement"], "{:.3f}"),
                     _num(ppl["greedy_agreement"], "{:.3f}"), verdict])
    return rows


def speed_rows(report: dict) -> list[list[str]]:
    """Per timed file: time to first token, decode tokens/s and peak RSS per thread count, KV-cache and file size."""
    rows = []
    for a in _decoders(report):
        tokens = a.get("tokens")
        if not tokens:
            continue
        rss = {n: v / MB for n, v in (tokens.get("peak_rss_bytes") or {}).items()}
        rows.append([a["name"], tokens.get("runtime", "-"), _per_threads(tokens.get("ttft_s"), "{:.3f}"),
                     _per_threads(tokens.get("decode_tokens_per_s"), "{:.1f}"), _per_threads(rss, "{:.0f}"),
                     f"{tokens['kv_cache_bytes'] / MB:.1f} @ {tokens['kv_context']}", f"{a['size_bytes'] / MB:.1f}"])
    return rows


def roofline_rows(report: dict) -> list[list[str]]:
    """Per timed file and named core: bytes read per token and the bandwidth-bound decode rate (an estimate)."""
    return [[a["name"], row["core"], f"{row['bandwidth_gbs']:g}", f"{row['bytes_per_token'] / MB:.1f}",
             f"{row['tokens_per_s']:.1f}"]
            for a in _decoders(report) for row in (a.get("tokens") or {}).get("roofline", [])]


def sample_rows(report: dict) -> list[list[str]]:
    """Per file: its greedy continuation of the sample prompt beside the reference's."""
    rows = []
    for a in _decoders(report):
        ppl = a["metrics"]["perplexity"]
        sample = ppl["sample_text"] if ppl["generation_ran"] else f"generation failed: {ppl.get('generation_error')}"
        rows.append([a["name"], repr(ppl["sample_prompt"]), repr(sample), repr(ppl.get("reference_sample_text"))])
    return rows


def language_model_section(report: dict):
    """The section (compress.report.markdown.Section) for a report with decoder-LM files; None without any."""
    from compress.report.markdown import Section

    if not _decoders(report):
        return None
    reference = (report["reference"].get("language_model") or {}).get("reference", "the float model")
    first = _decoders(report)[0]["metrics"]["perplexity"]
    lines = [f"Reference: {reference}.",
             f"Perplexity on {first['windows']} windows of {first['window_length']} held-out tokens (never the calibration "
             f"text), run in each file's own runtime; greedy agreement: the share of {first['greedy_tokens']} greedy tokens "
             f"from {first['greedy_prompts']} prompts equal to the reference's before the first divergence."]
    tables = [("Quality on held-out text", ["artifact", "perplexity vs ref", "ratio [95 %]", "gate", "top-1 agree",
                                            "greedy agree", "verdict"], quality_rows(report))]
    if speed_rows(report):
        tables.append(("Speed (measured on this machine)", ["artifact", "runtime", "TTFT s (128-token prompt)",
                                                            "decode tokens/s", "peak RSS MB", "KV cache MB @ positions",
                                                            "file MB"], speed_rows(report)))
        lines.append("Decode roofline: every token reads the file's weights and the KV cache once from DRAM at the "
                     "core's nominal bandwidth (compute hidden): an estimate, not a measurement.")
        tables.append(("Decode roofline (estimate, ARM cores)", ["artifact", "core", "GB/s", "MB read per token",
                                                                 "tokens/s (estimate)"], roofline_rows(report)))
    tables.append(("Sample generation", ["artifact", "prompt", "sample", "reference sample"], sample_rows(report)))
    return Section("Language model", lines, tables)
