"""report.md: the same facts as report.json, as tables for people.

The technique sections (prune, distill, qat) are built once as :class:`Section` objects and rendered here and in
report.html, so both show the same numbers.

Example:
    >>> write_markdown("runs/mnist", report)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compress.safety.io import write_text_atomic
from compress.steps.latency import document_p50 as device_p50, document_timing as device_timing
from compress.steps.phases import timing_rows


def repair_rows(repair: dict) -> list[list[str]]:
    """One row per repair attempt: what was tried, its size, and what each quality gate measured."""
    rows = [[row["step"], f"{row['size_bytes']:,}", "yes" if row["passed"] else "**NO**",
             "; ".join(g["reason"] for g in row["gates"])] for row in repair["steps"]]
    rows += [[row["step"], "-", "skipped", row["why"]] for row in repair.get("skipped", [])]
    budget = repair.get("budget") or {}
    rows += [[label, "-", "not tried", f"the {budget['seconds']:g} s repair budget ran out"] for label in budget.get("not_tried", [])]
    return rows


def _metric(task: dict | None) -> str:
    return "-" if not task else f"{task['name']} {task['value']:.4f}"


def _num(value, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def artifact_rows(report: dict) -> list[list[str]]:
    rows = []
    for a in report["artifacts"]:
        fid, mark = a["metrics"].get("fidelity") or {}, ""
        ppl = a["metrics"].get("perplexity")
        if ppl:  # a decoder language model: its perplexity ratio and teacher-forced top-1 agreement with the reference
            rows.append([a["name"], a["format"], a["precision"], f"{a['size_bytes']:,}",
                         f"perplexity x{_num(ppl['perplexity_ratio'])}", "-", _num(ppl["top1_agreement"]), "-", "-", "-",
                         ", ".join(a["verified_in"])])
            continue
        if not fid and a["metrics"].get("random_input_fidelity"):  # no data: vs fp32 torch on random inputs, marked ~
            fid, mark = a["metrics"]["random_input_fidelity"], "~"
        rows.append([
            a["name"], a["format"], a["precision"], f"{a['size_bytes']:,}", _metric(a["metrics"]["task"]),
            _num(a["metrics"]["degradation"]), mark + _num(fid.get("top1_agreement")), mark + _num(fid.get("sqnr_db"), "{:.1f}"),
            _num(device_p50(a), "{:.3f}"), _num(a.get("speedup_vs_fp32"), "{:.2f}x"), ", ".join(a["verified_in"]),
        ])
    return rows


ARTIFACT_COLUMNS = ["artifact", "format", "precision", "bytes", "metric", "degradation", "top-1 agree", "SQNR dB",
                    "p50 ms (b=1)", "vs fp32", "verified in"]


def timing_lines(report: dict) -> list[str]:
    """How each artifact's headline p50 (the p50 column) was taken: compress.steps.benchmark.describe_conditions per artifact."""
    from compress.steps.benchmark import describe_conditions

    timed = [(a["name"], device_timing(a)) for a in report["artifacts"]]
    return [f"- {name}: {describe_conditions(entry['conditions'])}" for name, entry in timed if entry and entry.get("conditions")]


def interval_lines(report: dict) -> list[str]:
    """Each artifact's quality figures with their 95 % intervals (compress.data.intervals.interval_text)."""
    from compress.data.intervals import interval_text

    return [f"- {line}" for line in map(interval_text, report["artifacts"]) if line]


def output_rows(report: dict) -> list[list[str]]:
    """One row per (artifact, output): its kind and the measures that mean something for that kind."""
    rows = []
    for a in report["artifacts"]:
        for o in (a["metrics"].get("fidelity") or {}).get("outputs", []):
            measures = ", ".join(f"{m} {_num(v, '{:.4g}')}" for m, v in o["measures"].items())
            rows.append([a["name"], o["name"], o["kind"] + (" (labelled)" if o.get("labelled") else ""), measures])
    return rows


def output_kind_lines(report: dict) -> list[str]:
    """Each output's kind, how it was decided and the flag that overrides it (compress.data.outputs.kind_line)."""
    from compress.data.outputs import kind_line

    outputs = report["reference"].get("outputs") or []
    return ["", "## Outputs (what each is judged as)", *(f"- {kind_line(o)}" for o in outputs)] if outputs else []


def verdict_lines(report: dict) -> list[str]:
    """What was judged and why, and what was never recommended."""
    verdict = report.get("verdict") or {}
    lines = [f"- {verdict['summary']}"] if verdict.get("summary") else []
    lines += [f"- {note}" for note in verdict.get("notes", [])]
    lines += [f"- never recommended: {e['artifact']} ({e['why']})" for e in (report.get("recommended") or {}).get("excluded", [])]
    return lines


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Section:
    """One technique's results: a title, plain-text lines and captioned tables ``(caption, columns, rows)``."""

    title: str
    lines: list[str]
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


def technique_sections(report: dict) -> list[Section]:
    """The sections for what the pass commands put into report.json (``prune``, ``distill``, ``qat``, ``streams``,
    ``language_model``)."""
    from compress.report.language_model import language_model_section

    builders = {"prune": prune_section, "distill": distill_section, "qat": qat_section, "streams": stream_section,
                "language_model": language_model_section}
    return [section for key, build in builders.items() if report.get(key) and (section := build(report))]


def _chain_line(report: dict) -> list[str]:
    chain = report.get("chain")
    return [f"For chaining: {chain['model']} (techniques: {', '.join(chain['techniques'])})."] if chain else []


def prune_section(report: dict) -> Section:
    """Parameters before/after, per-layer sparsity, the files vs the dense model, and the fine-tuning ramp."""
    s = report["prune"]
    lines = [f"{s['method']}, target sparsity {s['target_sparsity']:g} ({s['scope']}): parameters {s['params_before']:,} -> "
             f"{s['params_after']:,} ({s['params_after'] / s['params_before']:.3f}x), non-zero {s['nonzero_after']:,}.",
             f"Degradation is measured against the original (unpruned) model: {_metric(report['reference']['metrics'].get('task'))}."]
    if s.get("n_m_check"):
        failed = [layer for layer, ok in s["n_m_check"].items() if not ok]
        lines.append(f"{s['method']} pattern verified on {len(s['n_m_check']) - len(failed)} of {len(s['n_m_check'])} pruned layers"
                     + (f"; FAILED on {', '.join(failed)}" if failed else "") + ".")
    lines += s.get("notes", []) + _chain_line(report)
    tables = [("Per layer", ["layer", "type", "pruned", "params before", "params after", "non-zero after", "sparsity"], layer_rows(s)),
              ("Files vs the dense model", ["artifact", "bytes", "compressed bytes", "size vs dense", "metric",
                                            "degradation vs original", "speed vs dense"], pruned_file_rows(report))]
    if s.get("finetune"):
        tables.append(("Fine-tuning", ["epoch", "sparsity", "loss", "val"],
                       [[str(r["epoch"]), f"{r['sparsity']:.3f}", f"{r['loss']:.4f}", _num(r.get("val"))] for r in s["finetune"]]))
    return Section("Pruning", lines, tables)


def layer_rows(summary: dict) -> list[list[str]]:
    """One row per layer and a total: parameters before/after, non-zeros, sparsity (1 - non-zeros / before)."""
    rows = [[r["layer"], r["type"], "yes" if r["pruned"] else "kept", f"{r['params_before']:,}", f"{r['params_after']:,}",
             f"{r['nonzero_after']:,}", f"{r['sparsity']:.3f}"] for r in summary["layers"]]
    total = 1 - summary["nonzero_after"] / summary["params_before"]
    return rows + [["total", "", "", f"{summary['params_before']:,}", f"{summary['params_after']:,}", f"{summary['nonzero_after']:,}", f"{total:.3f}"]]


def pruned_file_rows(report: dict) -> list[list[str]]:
    """Every file next to the dense fp32 file of its format: size, compressed (deflate) size, metric, speed."""
    dense = {a["format"]: a for a in report["artifacts"] if a["name"].startswith("dense-")}
    rows = []
    for a in report["artifacts"]:
        base = dense.get(a["format"])
        ratio = a["size_bytes"] / base["size_bytes"] if base else None
        rows.append([a["name"], f"{a['size_bytes']:,}", _num(a.get("compressed_size_bytes"), "{:,}"), _num(ratio, "{:.3f}x"),
                     _metric(a["metrics"]["task"]), _num(a["metrics"]["degradation"]), _num(a.get("speedup_vs_baseline"), "{:.2f}x")])
    return rows


def distill_section(report: dict) -> Section:
    """Teacher, distilled student and the same student without KD (eager PyTorch), then the verdict."""
    s = report["distill"]
    features = ", ".join(f"{k}={v}" for k, v in (s.get("features") or {}).items())
    lines = [f"Temperature {s['temperature']:g}, alpha {s['alpha']:g}, {s['epochs']} epochs"
             + (f", feature pairs {features}" if features else "") + ".",
             f"Student parameters: {s['param_ratio']:.3f}x the teacher." if s.get("param_ratio") else "",
             s["verdict"], s.get("runtime_check") or ""]
    parts = [("teacher", "-", s["teacher"]), ("student with KD", s["student"]["spec"], s["student"])]
    if s.get("baseline"):
        parts.append(("same student, no KD", s["baseline"]["spec"], s["baseline"]))
    rows = [[name, spec, _num(p.get("params"), "{:,}"), _metric(p.get("val")), _metric(p.get("test"))] for name, spec, p in parts]
    table = ("Teacher vs student (eager PyTorch)", ["model", "architecture", "params", "val", "test"], rows)
    return Section("Distillation", [line for line in lines if line] + _chain_line(report), [table])


def qat_section(report: dict) -> Section:
    """QAT vs PTQ degradation per format, the training schedule and its history."""
    s = report["qat"]
    epochs = s["epochs"]
    batch_norm = (f"batch norm frozen after {s['bn_frozen_after_epoch']} of {epochs} epochs, then folded into the convolutions"
                  if s.get("batch_norm_folded_into_conv") else "no batch norm to fold")
    lines = [f"Scheme {s['scheme']}; epochs {epochs} at lr {s['lr']:g}; {batch_norm}; "
             f"observers frozen after {s['observers_frozen_after_epoch']} of {epochs} epochs.",
             "Degradation is measured in each file's runtime against the fp32 reference.", *s.get("notes", [])]
    comparison = [[c["format"], c["ptq"], _num(c["ptq_degradation"], "{:+.4f}"), c["qat"], _num(c["qat_degradation"], "{:+.4f}"),
                   c["verdict"] or "no labeled data: not compared"] for c in report.get("comparison", [])]
    history = [[str(r["epoch"]), f"{r['loss']:.4f}", _num(r.get("val")), "yes" if r["bn_frozen"] else "no",
                "yes" if r["observers_frozen"] else "no"] for r in s.get("history", [])]
    return Section("QAT vs PTQ", lines, [
        ("Degradation per format", ["format", "PTQ artifact", "PTQ degradation", "QAT artifact", "QAT degradation", "verdict"], comparison),
        ("Training (fake-quantized validation)", ["epoch", "loss", "val", "BN frozen", "observers frozen"], history)])


def stream_section(report: dict) -> Section:
    """``streams``: each artifact over one stream of chunks with its own state fed back, against eager PyTorch."""
    s = report["streams"]
    lines = [f"{s['steps']} consecutive chunks at batch {s['batch']} ({'from the data, in order' if s['chunks'] == 'data' else 'RANDOM chunks: no data was given'}), "
             "state fed back: " + ", ".join(f"{p['input']} <- {p['output']}" for p in s["state"]), *s.get("inferred", [])]
    rows = []
    for name, result in s["artifacts"].items():
        if "error" in result:
            rows.append([name, result["runtime"], "failed: " + result["error"], "-", "-", "-"])
            continue
        agree = result["decision_agreement"]
        drift = "; ".join(f"{o['output']} {o['drift_sqnr_db']['first']:.1f} -> {o['drift_sqnr_db']['last']:.1f}" for o in result["outputs"])
        rows.append([name, result["runtime"], "-" if agree is None else f"{agree:.3f}", f"{result['min_sqnr_db']:.1f}",
                     f"{result['last_sqnr_db']:.1f}", drift])
    return Section("Streams (state fed back)", lines,
                   [("per artifact", ["artifact", "runtime", "decision agreement", "min SQNR dB", "last-quarter SQNR dB",
                                      "drift SQNR dB (first -> last quarter)"], rows)])


def section_markdown(section: Section) -> list[str]:
    parts = ["", f"## {section.title}", *(f"- {line}" for line in section.lines)]
    for caption, columns, rows in section.tables:
        parts += ["", f"**{caption}**", "", _table(columns, rows)]
    return parts


def _original_note(reference: dict) -> str:
    original = reference.get("original")
    if not original:
        return ""
    return (f" (the original model `{original['source']}`, recorded in the chained file: degradation is against it; "
            "fidelity is against the loaded model)")


def render_markdown(report: dict) -> str:
    source, dataset, ref = report["source"], report["dataset"], report["reference"]
    parts = [
        f"# compress report ({report.get('command', 'run')})",
        f"- source: `{source['path']}` ({source['format']}, sha256 `{source['sha256'][:12]}…`)",
        f"- data: {dataset['name']} {dataset['split']} split, {dataset['samples']} samples" if dataset else "- data: **none** (random calibration; no accuracy claim)",
        f"- reference: {_metric(ref['metrics'].get('task'))}, {ref['size_bytes']:,} bytes" + _original_note(ref),
        f"- created {report['created']} by compress {report['tool']['version']}; passed: **{report['passed']}**",
        "",
        "## Verdict",
        *verdict_lines(report),
        *output_kind_lines(report),
        "",
        "## Artifacts",
        _table(ARTIFACT_COLUMNS, artifact_rows(report)),
    ]
    if interval_lines(report):
        parts += ["", "## 95 % intervals (from per-sample outcomes; a gate passes only when the interval clears it)",
                  *interval_lines(report)]
    if timing_lines(report):
        parts += ["", "## How the p50 was timed", *timing_lines(report)]
    if output_rows(report):
        parts += ["", "## Fidelity per output (the weakest is the headline: top-1 agree / SQNR above)",
                  _table(["artifact", "output", "kind", "measures"], output_rows(report))]
    for section in technique_sections(report):
        parts += section_markdown(section)
    for artifact in (a for a in report["artifacts"] if a.get("repair")):
        parts += ["", f"## Repair of {artifact['name']} ({artifact['repair']['kept'] or 'nothing met the gates'})",
                  _table(["step", "bytes", "passed", "judged"], repair_rows(artifact["repair"]))]
    recommended = report.get("recommended") or {}
    if recommended.get("local-cpu"):
        parts += ["", "## Recommended for this CPU", f"**{recommended['local-cpu']['artifact']}**: {recommended['local-cpu']['why']}"]
        for fmt, pick in (recommended.get("by_format") or {}).items():
            if pick:
                parts.append(f"- {fmt}: {pick['artifact']}")
    if report["gates"]:
        parts += ["", "## Gates", _table(["gate", "artifact", "judged by", "limit", "value", "passed", "why"],
                  [[g["name"], str(g.get("artifact")), g.get("judged_by", "-"), str(g["limit"]), _num(g["value"]),
                    "yes" if g["passed"] else "**NO**", g.get("reason", "")] for g in report["gates"]])]
    notes = [(a["name"], n) for a in report["artifacts"] for n in a.get("notes", [])] + [("run", n) for n in report.get("notes", [])]
    if notes:
        parts += ["", "## Notes"] + [f"- {name}: {note}" for name, note in notes]
    if report.get("preflight"):
        parts += ["", "## Pre-flight"] + [f"- [{f['severity']}] {f['format']}: {f['message']} — {f['suggestion']}" for f in report["preflight"]]
    if report.get("sensitivity"):
        parts += ["", "## Layer sensitivity (quantizing one layer alone)",
                  _table(["layer", "SQNR dB", "top-1 agree"], [[r["layer"], _num(r.get("sqnr_db"), "{:.1f}"), _num(r.get("top1_agreement"))] for r in report["sensitivity"]])]
    if report.get("timings"):
        parts += ["", "## Time per phase", _table(["phase", "wall", "CPU"], [list(row) for row in timing_rows(report["timings"])])]
    return "\n".join(parts) + "\n"


def write_markdown(run_dir: str | Path, report: dict) -> Path:
    path = Path(run_dir) / "report.md"
    write_text_atomic(path, render_markdown(report))
    return path
