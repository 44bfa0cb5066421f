"""`compress qat`: quantization-aware fine-tuning, exported to int8 ONNX and TFLite, compared with PTQ in one report.

Example:
    $ compress qat mnist_cnn.pt --epochs 3 --out runs/qat
    $ compress qat attention.pt --weight-bits 4 --out runs/qat-w4          # the hard case: PTQ at 4 bits loses > 1 pt
"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import emit, gate_policy, handle_errors, stdout_console
from compress.commands._options import MAX_DEGRADATION_OPTION, Options, shared_options
from compress.commands._progress import training_progress
from compress.commands.prune import (bench_options, check_formats, config_or_usage, load_for_pass, raise_failed_gates,
                                     split_list)
from compress.backends import qat_formats
from compress.passes.qat_workflow import run_qat

def register(app: typer.Typer) -> None:
    app.command("qat")(qat_command)


@shared_options("judge", "load", "time", "output")
def qat_command(
    model: Path = typer.Argument(..., help="Zoo checkpoint, state_dict .pt (with --arch) or torch.export .pt2 (float)."),
    epochs: int = typer.Option(3, "--epochs", "-e", help="Fine-tuning epochs with fake quantization."),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor weight scales instead of per-channel."),
    weight_bits: int = typer.Option(8, "--weight-bits", help="Weight bits, 2..8 (stored in int8; 4 is the hard case)."),
    freeze_bn_after: int = typer.Option(None, "--freeze-bn-after", help="Epochs before batch norm uses running statistics (default: half)."),
    freeze_observers_after: int = typer.Option(None, "--freeze-observers-after", help="Epochs before quantization ranges freeze (default: all but the last)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (default: the model's own)."),
    formats: list[str] = typer.Option(None, "--format", "-f", help="onnx, tflite, pte (comma-separated). Default: onnx,tflite."),
    max_degradation: float = MAX_DEGRADATION_OPTION,
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<model name>-qat)."),
    *,
    opts: Options,
) -> None:
    """Fine-tune with fake quantization (PT2E QAT), export int8 ONNX and TFLite (and .pte), and compare with PTQ.

    Example: compress qat mnist_cnn.pt --epochs 3 --out runs/qat
    """
    from compress.commands._render import artifact_table
    from compress.passes.qat import QatConfig

    with handle_errors(opts.debug, opts.json_out):
        config = config_or_usage(QatConfig, epochs=epochs, lr=lr, per_channel=not per_tensor, weight_bits=weight_bits,
                                 freeze_bn_after=freeze_bn_after, freeze_observers_after=freeze_observers_after, seed=opts.seed)
        fmts = check_formats(split_list(formats), qat_formats())
        handle = load_for_pass(model, opts)
        run_dir = out or Path("runs") / f"{model.stem}-qat"
        with training_progress(f"QAT ({config.scheme()})", config.epochs, transient=opts.json_out) as (on_epoch, step):
            report = run_qat(handle, config, data, run_dir, fmts, bench_options(opts), gate_policy(max_degradation, opts.no_gate),
                            on_epoch, step)
        emit(report, opts.json_out, lambda: stdout_console.print(artifact_table(report, run_dir), comparison_lines(report["comparison"])))
        raise_failed_gates(report, run_dir)


def comparison_lines(comparison: list[dict]) -> str:
    rows = ["[bold]QAT vs PTQ[/] (degradation vs the fp32 reference, measured in the runtime)"]
    for c in comparison:
        rows.append(f"  {c['format']:<7} PTQ {c['ptq_degradation']:+.4f}   QAT {c['qat_degradation']:+.4f}   {c['verdict']}"
                    if c["verdict"] else f"  {c['format']}: no labeled data, not compared")
    return "\n".join(rows)
