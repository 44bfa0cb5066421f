"""`compress qat`: quantization-aware fine-tuning, exported to int8 ONNX and TFLite, compared with PTQ in one report.

Example:
    $ compress qat mnist_cnn.pt --epochs 3 --out runs/qat
    $ compress qat attention.pt --weight-bits 4 --out runs/qat-w4          # the hard case: PTQ at 4 bits loses > 1 pt
"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import (ARCH_KWARGS_OPTION, ARCH_OPTION, DEBUG_OPTION, INPUT_SHAPE_OPTION, JSON_OPTION,
                                     NO_BENCH_OPTION, RUNS_OPTION, SEED_OPTION, THREADS_OPTION, TRUST_PICKLE_OPTION,
                                     console, emit, handle_errors)
from compress.commands.prune import (FORMATS, bench_options, check_formats, config_or_usage, gates_for, load_for_pass,
                                     raise_failed_gates, resolve_splits, split_list, training_progress)

def register(app: typer.Typer) -> None:
    app.command("qat")(qat_command)


def run_qat(handle, config, data=None, out_dir: str | Path = "runs/qat", formats: tuple[str, ...] = FORMATS,
            bench: dict | None = None, max_degradation: float | None = None, on_epoch=None, step=None) -> dict:
    """QAT (compress.passes.qat), then fp32, PTQ and QAT files per format, each verified in its runtime; write the run.

    The PTQ baseline is what `compress quantize` makes (int8 per-channel scheme) or, for another scheme (per-tensor,
    fewer weight bits), the PT2E PTQ twin with the very same quantizer, so the comparison isolates training.
    ``report["comparison"]`` lists PTQ vs QAT degradation per format. Returns the report.
    """
    from compress.passes import qat
    from compress.passes.qat_export import export_qat, export_technique, float_ops_in, scheme_notes, scheme_tag
    from compress.pipeline import finish_report, heads_for, measure_reference, verifier

    step = step or (lambda message: None)
    qat.check_quantizable(handle)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits, plan = resolve_splits(handle, data, config.seed)
    heads = heads_for(handle, plan)
    trained = qat.apply(handle, config, splits, on_epoch)
    default_scheme = config.weight_bits == 8 and config.per_channel
    twin = None if default_scheme else qat.ptq(handle, config, plan.calibration)
    reference = None
    artifacts: list[dict] = []
    comparison = []
    for fmt in formats:
        step(f"fp32 {fmt}: export")
        fp32 = run_dir / f"model.fp32.{fmt}"
        _export_fp32(handle, fp32, fmt)
        if reference is None:
            reference = measure_reference(handle, plan, size_bytes=fp32.stat().st_size)
        verify = verifier(run_dir, plan, reference, heads, bench)
        artifacts.append(verify(fp32.name, "fp32", [*handle.techniques, "export:fp32"], f"fp32-{fmt}"))
        step(f"PTQ {fmt}: quantize and verify")
        if default_scheme:
            ptq_entry = _project_ptq(handle, fmt, run_dir, plan, config.seed, verify)
        else:
            path = run_dir / f"model.ptq-{scheme_tag(config)}.{fmt}"
            (qat.export_int8_onnx if fmt == "onnx" else qat.export_int8_tflite)(twin, path)
            ptq_entry = verify(path.name, "int8", [*twin.techniques, export_technique(fmt)], f"ptq-{scheme_tag(config)}-{fmt}",
                               scheme_notes(config), float_ops=float_ops_in(path, handle))
        artifacts.append(ptq_entry)
        step(f"QAT {fmt}: export and verify")
        qat_entry = export_qat(trained, config, fmt, run_dir, verify, handle)
        artifacts.append(qat_entry)
        comparison.append(_compare(fmt, ptq_entry, qat_entry))
    extra = {"command": "qat", "config": config.model_dump(mode="json"), "qat": trained.metrics["qat"], "comparison": comparison}
    return finish_report(run_dir, handle, plan, reference, artifacts, gates_for(artifacts, max_degradation, plan), extra)


def _export_fp32(handle, path: Path, fmt: str) -> None:
    from compress.export.onnx import export_onnx
    from compress.export.tflite import export_tflite

    if fmt == "onnx":
        export_onnx(handle, path)
    else:
        export_tflite(handle, path, "fp32", None)


def _project_ptq(handle, fmt, run_dir: Path, plan, seed: int, verify) -> dict:
    """The int8 file `compress quantize` makes (onnxruntime static QDQ / PT2E static TFLite), as the PTQ baseline."""
    from compress.export.onnx_quantize import quantize_onnx
    from compress.export.tflite import export_tflite

    out = run_dir / f"model.ptq-int8.{fmt}"
    result = (quantize_onnx(run_dir / "model.fp32.onnx", out, "int8", plan.calibration, seed=seed) if fmt == "onnx"
              else export_tflite(handle, out, "int8", plan.calibration, seed=seed))
    return verify(out.name, result.precision, [*handle.techniques, *result.techniques], f"ptq-int8-{fmt}", result.notes, result.float_ops)


def _compare(fmt: str, ptq: dict, qat: dict) -> dict:
    a, b = ptq["metrics"]["degradation"], qat["metrics"]["degradation"]
    verdict = None
    if a is not None and b is not None:
        verdict = ("QAT loses less than PTQ" if b < a else "QAT loses as much as PTQ" if b == a else "QAT loses MORE than PTQ")
    return {"format": fmt, "ptq": ptq["name"], "qat": qat["name"], "ptq_degradation": a, "qat_degradation": b,
            "qat_not_worse": None if verdict is None else b <= a, "verdict": verdict}


def qat_command(
    model: Path = typer.Argument(..., help="Zoo checkpoint, state_dict .pt (with --arch) or torch.export .pt2 (float)."),
    epochs: int = typer.Option(3, "--epochs", "-e", help="Fine-tuning epochs with fake quantization."),
    lr: float = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor weight scales instead of per-channel."),
    weight_bits: int = typer.Option(8, "--weight-bits", help="Weight bits, 2..8 (stored in int8; 4 is the hard case)."),
    freeze_bn_after: int = typer.Option(None, "--freeze-bn-after", help="Epochs before batch norm uses running statistics (default: half)."),
    freeze_observers_after: int = typer.Option(None, "--freeze-observers-after", help="Epochs before quantization ranges freeze (default: all but the last)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (default: the model's own)."),
    formats: list[str] = typer.Option(None, "--format", "-f", help="onnx, tflite or both (comma-separated). Default: both."),
    max_degradation: float = typer.Option(None, "--max-degradation", help="Gate: allowed metric loss as a fraction; exit 1 if missed."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<model name>-qat)."),
    arch: str = ARCH_OPTION,
    arch_kwargs: list[str] = ARCH_KWARGS_OPTION,
    input_shape: list[str] = INPUT_SHAPE_OPTION,
    trust_pickle: bool = TRUST_PICKLE_OPTION,
    no_bench: bool = NO_BENCH_OPTION,
    runs: int = RUNS_OPTION,
    threads: int = THREADS_OPTION,
    seed: int = SEED_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Fine-tune with fake quantization (PT2E QAT), export int8 ONNX and TFLite, and compare with PTQ.

    Example: compress qat mnist_cnn.pt --epochs 3 --out runs/qat
    """
    from compress.commands._render import artifact_table
    from compress.passes.qat import QatConfig

    with handle_errors(debug):
        config = config_or_usage(QatConfig, epochs=epochs, lr=lr, per_channel=not per_tensor, weight_bits=weight_bits,
                                 freeze_bn_after=freeze_bn_after, freeze_observers_after=freeze_observers_after, seed=seed)
        fmts = check_formats(split_list(formats))
        handle = load_for_pass(model, arch, arch_kwargs, input_shape, trust_pickle)
        run_dir = out or Path("runs") / f"{model.stem}-qat"
        with training_progress(f"QAT ({config.scheme()})", config.epochs, transient=json_out) as (on_epoch, step):
            report = run_qat(handle, config, data, run_dir, fmts, bench_options(no_bench, runs, threads), max_degradation, on_epoch, step)
        emit(report, json_out, lambda: console.print(artifact_table(report, run_dir), comparison_lines(report["comparison"])))
        raise_failed_gates(report, run_dir)


def comparison_lines(comparison: list[dict]) -> str:
    rows = ["[bold]QAT vs PTQ[/] (degradation vs the fp32 reference, measured in the runtime)"]
    for c in comparison:
        rows.append(f"  {c['format']:<7} PTQ {c['ptq_degradation']:+.4f}   QAT {c['qat_degradation']:+.4f}   {c['verdict']}"
                    if c["verdict"] else f"  {c['format']}: no labeled data, not compared")
    return "\n".join(rows)
