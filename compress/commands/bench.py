"""`compress bench`: latency of artifacts on a target, measured by the same device runner everywhere."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import emit, handle_errors, stdout_console
from compress.commands._options import Options, shared_options, target_options
from compress.runtimes.base import RUNTIME_MODULES


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


def split_targets(values: list[str] | None, default: str = "local") -> list[str]:
    items = [item.strip() for value in values or [] for item in value.split(",") if item.strip()]
    return items or [default]


@shared_options("target", "output")
def bench_command(
    artifacts: list[Path] = typer.Argument(..., help="Artifact files: .onnx, .tflite, or .pt/.pt2 with --runtime torch."),
    targets: list[str] = typer.Option(None, "--target", "-t", help="local (default), cuda, ssh://user@host[:port], adb[:serial], "
                                      "qemu-arm64, estimate[:core] (analytic); repeatable or comma-separated."),
    runtime: str = typer.Option("auto", "--runtime", help=f"auto (by suffix), {', '.join(RUNTIME_MODULES)}."),
    threads: int = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's own)."),
    batch: int = typer.Option(1, "--batch", help="Samples per inference."),
    runs: int = typer.Option(None, "--runs", help="Exactly this many timed runs (default: adaptive, until the median is "
                             "known to ±2 %, at most 100)."),
    seconds: float = typer.Option(None, "--seconds", help="Time for this many seconds instead of a number of runs."),
    warmup: int = typer.Option(None, "--warmup", help="Untimed runs before timing (default 10)."),
    peak_gops: float = typer.Option(None, "--peak-gops", help="estimate: the core's peak (GOP/s) instead of the named core's."),
    bandwidth_gbs: float = typer.Option(None, "--bandwidth-gbs", help="estimate: memory bandwidth (GB/s) instead of the named core's."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not add the results to the report.json next to the artifact."),
    *,
    opts: Options,
) -> None:
    """Time artifacts on a target: p50/p90/p99, mean ± stdev, the median's 95 % CI, load time, first inference, peak memory.

    Results are added to the artifact's report.json (latency[]) when one lists it, with how they were taken
    (conditions) and the session (this command) that took them; the report's recommendation is judged again on
    figures of one session only (a pick the 95 % intervals cannot decide is re-timed side by side first, at most 2
    passes), and a changed pick is said (old → new, and why). Emulated (qemu) figures are marked and never device latencies; estimates are analytic, not measurements.

    Example: compress bench runs/mnist/model.int8.tflite --target ssh://pi@raspberrypi.local --threads 4
    """
    from compress.steps.benchmark import benchmark_artifact, start_timing_session
    from compress.steps.recording import record_latencies
    from compress.steps.lm_verify import is_decoder_artifact
    from compress.errors import UsageError

    with handle_errors(opts.debug, opts.json_out):
        if runs is not None and seconds is not None:
            raise UsageError("give --runs or --seconds, not both")
        options = target_options(opts)
        if not no_report:
            _check_unchanged(artifacts)
        results, estimates, measured, tokens = [], [], [], []
        session = start_timing_session()  # every figure of this command is compared only with this command's
        for artifact in artifacts:
            if is_decoder_artifact(artifact):  # a language model: time to first token and decode tokens/s
                tokens.append(_time_tokens(artifact, targets, threads, no_report))
                continue
            for target in split_targets(targets):
                if target.startswith("estimate"):
                    from compress.targets.estimate import estimate_artifact

                    estimates.append({"artifact": str(artifact), **estimate_artifact(artifact, core=target.partition(":")[2] or None,
                                                                                      batch=batch, peak_gops=peak_gops, bandwidth_gbs=bandwidth_gbs)})
                    continue
                from compress.targets.base import open_target

                open_target(target, strict=False)  # a bad target name is a usage error before any work
                entry = benchmark_artifact(artifact, target=target, runtime=runtime, threads=threads, batch=batch, runs=runs,
                                           seconds=seconds, warmup=warmup, adaptive=runs is None, **_applicable(target, options))
                results.append({"artifact": str(artifact), **entry})
                measured.append((artifact, entry))
        recorded = [] if no_report else record_latencies(measured)
        document = {"results": results, "estimates": estimates, "session": session, "tokens": tokens,
                    "reports_updated": sorted(str(r["report"]) for r in recorded),
                    "recommendation_changed": [{"report": str(r["report"]), **r["changed"]} for r in recorded if r["changed"]],
                    "recommended": [{"report": str(r["report"]), **r["recommended"]} for r in recorded if r["recommended"]]}
        emit(document, opts.json_out, lambda: _render(document))


def _time_tokens(artifact: Path, targets, threads: int | None, no_report: bool) -> dict:
    """A decoder LM artifact timed in tokens on this machine (compress.lm.speed), recorded in its report.json."""
    from compress.errors import UsageError
    from compress.steps.lm_verify import measure_tokens
    from compress.steps.recording import record_tokens

    if set(split_targets(targets)) != {"local"}:
        raise UsageError(f"{artifact.name}: a language model is timed in tokens on the local target only (drop --target)")
    tokens = measure_tokens(artifact, {"threads": (threads,) if threads else (1, 2)})
    report = None if no_report else record_tokens(artifact, tokens)
    return {"artifact": str(artifact), **tokens, "report": str(report) if report else None}


def _check_unchanged(artifacts) -> None:
    """A file whose bytes differ from the sha256 its run recorded gets no latency written beside that digest: exit 2
    before any timing (compress.targets.run_record, as verify)."""
    from compress.targets.run_record import run_record

    for artifact in artifacts:
        record = run_record(artifact)
        if record is not None:
            record.check_unchanged("or pass --no-report to time it without recording")


def _applicable(target: str, options: dict) -> dict:
    from compress.targets.base import target_class

    cls, _ = target_class(target)
    return {k: v for k, v in options.items() if k in cls.OPTIONS}


def _ms(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _short(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _render(document: dict) -> None:
    from rich import box
    from rich.table import Table

    from compress.steps.benchmark import describe_conditions

    for row in document.get("tokens", []):
        for n, rate in row["decode_tokens_per_s"].items():
            stdout_console.print(f"  {Path(row['artifact']).name} ({row['runtime']}, {n} thread{'s' if n != '1' else ''}): "
                                 f"time to first token {row['ttft_s'][n]:.3f} s for {row['prompt_tokens']} tokens, decode "
                                 f"{rate:.1f} tokens/s, peak RSS {row['peak_rss_bytes'][n] / 2**20:.0f} MB; KV cache "
                                 f"{row['kv_cache_bytes'] / 2**20:.1f} MB at {row['kv_context']} positions",
                                 highlight=False, soft_wrap=True)

    if document["results"]:
        table = Table(title="latency per inference (ms)", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("artifact", "target", "p50", "p90", "p99", "mean", "peak MB"):
            table.add_column(column, justify="left" if column in ("artifact", "target") else "right", no_wrap=True)
        for row in document["results"]:
            name = Path(row["artifact"]).name
            if row.get("skipped"):
                table.add_row(name, row["target"], "[yellow]skipped[/]", *[""] * 4)
                continue
            peak = row.get("peak_memory_bytes")
            p50 = f"[magenta]{_short(row['p50_ms'])}*[/]" if row["emulated"] else _short(row["p50_ms"])
            table.add_row(name, f"{row['target']}{'*' if row['emulated'] else ''}", p50, _short(row["p90_ms"]), _short(row["p99_ms"]),
                          _short(row["mean_ms"]), "-" if peak is None else f"{peak / 2**20:.0f}")
        stdout_console.print(table)
        for row in document["results"]:
            where = f"  {Path(row['artifact']).name} on {row['target']}"
            if row.get("skipped"):
                stdout_console.print(f"{where}: [yellow]{row['skipped']}[/]", highlight=False, soft_wrap=True)
                continue
            label = " [magenta](EMULATED: not a device latency)[/]" if row["emulated"] else ""
            ci = row.get("median_ci95_ms")
            stdout_console.print(f"{where}{label}: {row['runtime']} {row.get('runtime_version') or ''}, batch {row['batch']}, "
                          f"{describe_conditions(row['conditions'])}; stdev "
                          f"{_ms(row.get('stdev_ms'))} ms, load {_ms(row.get('load_ms'))} ms, p50 95% CI {_ms(ci[0]) if ci else '-'}–{_ms(ci[1]) if ci else '-'} ms, first inference "
                          f"{_ms(row.get('first_inference_ms'))} ms, {row.get('throughput_per_s') or 0:,.0f} samples/s; {row.get('device', '')}",
                          highlight=False, soft_wrap=True)
            for warning in row.get("warnings", []):
                if warning != row.get("skipped"):
                    stdout_console.print(f"    [yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        if any(r["emulated"] for r in document["results"]):
            stdout_console.print("[magenta]*[/] emulated under qemu: shows that the file runs on ARM64; these are NOT device latencies", soft_wrap=True)
    if document["estimates"]:
        table = Table(title="estimate (analytic roofline, not a measurement)", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("artifact", "core", "MACs", "bytes", "compute", "memory", "estimate ms", "bound"):
            table.add_column(column, justify="left" if column in ("artifact", "core", "bound") else "right", no_wrap=True)
        for row in document["estimates"]:
            table.add_row(Path(row["artifact"]).name, row["core"], f"{row['macs']:.3g}", f"{row['bytes_moved']:.3g}", _short(row["compute_ms"]),
                          _short(row["memory_ms"]), _short(row["estimate_ms"]), row["bound"])
        stdout_console.print(table)
        for note in dict.fromkeys(note for row in document["estimates"] for note in row.get("assumptions", [])):
            stdout_console.print(f"  {note}", highlight=False, soft_wrap=True)
    for path in document["reports_updated"]:
        stdout_console.print(f"latency added to {path}", soft_wrap=True)
    for pick in document["recommended"]:
        verdict = f" [{pick['verdict']}]" if pick.get("verdict") else ""
        stdout_console.print(f"recommended in {pick['report']}{verdict}: {pick['artifact']} — {pick['why']}",
                             highlight=False, soft_wrap=True, markup=False)
    for change in document["recommendation_changed"]:
        stdout_console.print(f"recommendation changed in {change['report']}: {change['from']} → {change['to']}: {change['why']}",
                             highlight=False, soft_wrap=True, markup=False)
