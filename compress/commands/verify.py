"""`compress verify`: does the artifact give the same answers on every target as the PyTorch reference?"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import console, emit, handle_errors, stdout_console
from compress.commands._options import Options, shared_options, target_options
from compress.commands.bench import split_targets


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)


@shared_options("target", "output")
def verify_command(
    artifact: Path = typer.Argument(..., help="An artifact: .onnx, .tflite or .pte (and its run's report.json beside it, or above failed/)."),
    targets: list[str] = typer.Option(None, "--targets", "-t", help="Comma-separated: local, cuda, ssh://user@host[:port], adb[:serial], "
                                      "qemu-arm64 (default local)."),
    reference: Path = typer.Option(None, "--reference", help="The uncompressed model (default: source.path of the report.json next to the artifact)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (default: the data the report's run used, by path, with a warning if "
                             "the file changed; or the zoo model's own); its test split is used."),
    samples: int = typer.Option(256, "--samples", help="Test samples to run (a deterministic subset)."),
    threads: int = typer.Option(None, "--threads", help="Runtime threads on each target."),
    min_top1: float = typer.Option(0.95, "--min-top1", help="Tolerance: top-1 agreement with the reference at least this."),
    min_sqnr: float = typer.Option(10.0, "--min-sqnr", help="Tolerance: output SQNR against the reference at least this (dB)."),
    max_abs_error: float = typer.Option(None, "--max-abs-error", help="Tolerance: largest output difference from the reference."),
    min_agreement: float = typer.Option(0.99, "--min-agreement", help="Tolerance: top-1 agreement with the first target's outputs."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not add the results to the report.json next to the artifact."),
    trust_code_from: list[str] = typer.Option(None, "--trust-code-from", metavar="PKG", help=(
        "Allow a package.module:function that the report names as its dataset to be imported and run, "
        "for names under this import root, e.g. mypkg (repeatable; a run directory is data: otherwise nothing in it runs).")),
    *,
    opts: Options,
) -> None:
    """Run the same real test inputs through ARTIFACT on each target; compare with the PyTorch reference and the first target.

    Exit 1 names the target whose outputs miss a tolerance, or the gate the file failed in the run that wrote it
    (a file the run could not verify, under failed/, is not run again); exit 2 names a file that changed since its run
    (its sha256 differs from report.json's) and writes nothing; exit 3 names a target that could not run.

    Example: compress verify runs/mnist/model.int8.tflite --targets local,qemu-arm64,ssh://pi@raspberrypi.local
    """
    from compress.errors import GateFailed
    from compress.recipe.trust import Trust
    from compress.targets.parity import Tolerance, record_parity, verify_on_targets

    with handle_errors(opts.debug, opts.json_out):
        options = target_options(opts)
        tolerance = Tolerance(min_top1, min_sqnr, max_abs_error, min_agreement)
        result = verify_on_targets(artifact, split_targets(targets), reference=reference, data=data, samples=samples,
                                   threads=threads, tolerance=tolerance, trust=Trust(roots=tuple(trust_code_from or ())),
                                   **options)
        for warning in [*(result["reference"] or {}).get("warnings", []), *(result["data"] or {}).get("warnings", [])]:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        recorded = None if no_report or result["run"] is None else record_parity(artifact, result)  # only where listed
        result["report_updated"] = str(recorded) if recorded else None
        emit(result, opts.json_out, lambda: _render(result))
        failures = [f"{row['target']}: {', '.join(row['failures'])}" for row in result["targets"] if not row["passed"]]
        failures += [f"{artifact.name} in its run: {failure}" for failure in (result["run"] or {}).get("failures", [])]
        if failures:
            raise GateFailed("; ".join(failures))


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _render(result: dict) -> None:
    from rich import box
    from rich.table import Table

    run_failures = (result["run"] or {}).get("failures", [])
    for failure in run_failures:
        stdout_console.print(f"[red]FAILED[/] in the run that wrote {Path(result['artifact']).name} "
                             f"({result['run']['report']}): {failure}", highlight=False, soft_wrap=True)
    if not result["targets"]:
        stdout_console.print("not run again: the run kept it under failed/ for debugging; copy it out of the run "
                             "directory to measure it anyway (with --reference)", highlight=False, soft_wrap=True)
        return
    data = result["data"]
    table = Table(title=f"{Path(result['artifact']).name} vs {Path(result['reference']['path']).name} "
                        f"({result['reference']['runtime']}) on {data['samples']} {data['name']} {data['split']} samples",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("target", "top-1", "SQNR dB", "max err", "1st: top-1", "1st: diff", "result"):
        table.add_column(column, no_wrap=column != "result")
    for row in result["targets"]:
        fidelity, agreement = row["fidelity"], row["agreement_with_first"]
        table.add_row(
            f"{row['target']}{'*' if row['emulated'] else ''}", _num(fidelity.get("top1_agreement"), "{:.4f}"),
            _num(fidelity.get("sqnr_db"), "{:.1f}"), _num(fidelity.get("max_abs_error"), "{:.3g}"),
            "-" if agreement is None else _num(agreement["top1_agreement"], "{:.4f}"),
            "-" if agreement is None else f"{agreement['max_abs_diff']:.3g}",
            "[red]MISMATCH[/]" if not row["passed"] else "[red]FAILED in its run[/]" if run_failures else "[green]ok[/]",
        )
    stdout_console.print(table)
    for row in result["targets"]:
        stdout_console.print(f"  {row['target']}: {row['runtime']} {row['runtime_version'] or ''} on {row['device']}", highlight=False, soft_wrap=True)
        if row["failures"]:
            stdout_console.print(f"    [red]mismatch:[/] {'; '.join(row['failures'])}", highlight=False, soft_wrap=True)
        for warning in row["warnings"]:
            stdout_console.print(f"    [yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if any(row["emulated"] for row in result["targets"]):
        stdout_console.print("* emulated under qemu (the outputs are real ARM64 runtime outputs; only timing would be unrepresentative)", soft_wrap=True)
    if result.get("report_updated"):
        stdout_console.print(f"parity added to {result['report_updated']}", soft_wrap=True)
