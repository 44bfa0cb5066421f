"""`compress quantize`: one command from a trained model to small, fast, verified artifacts."""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import (BATCH_AXIS_OPTION, FORMAT_OPTION, STATE_OPTION, console, declare_output_kinds, emit,
                                     gate_policy, handle_errors, parse_kwargs, stdout_console)
from compress.commands._options import MAX_DEGRADATION_OPTION, Options, shared_options
from compress.commands._progress import step_progress
from compress.commands._render import artifact_table
from compress.backends import default_formats
from compress.backends.calibration import calibration_names
from compress.catalog import quantized
from compress.steps.repair_budget import DEFAULT_REPAIR_BUDGET


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)


def _split(values: list[str] | None) -> list[str]:
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


@shared_options("judge", "load", "time", "output")
def quantize_command(
    model: Path = typer.Argument(..., help="Zoo checkpoint, TorchScript .pt, torch.export .pt2, state_dict .pt (with --arch), .onnx, "
                                 "or a decoder language model (a directory with config.json, *.safetensors, tokenizer.json, or a .gguf file)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset name, .npz, image folder or package.module:function (zoo default: its own dataset)."),
    formats: list[str] = FORMAT_OPTION,
    precisions: list[str] = typer.Option(None, "--precision", "-p", help=f"{', '.join(quantized())} (default int8; a language model: "
                                         "int8-weight,int4-weight as onnx; pte and 8da4w on request); comma-separated."),
    calibration: str = typer.Option("minmax", "--calibration", help=f"How static int8 picks activation ranges: {', '.join(calibration_names())}."),
    calib_samples: int = typer.Option(256, "--calib-samples", help="Calibration samples (from train+val, never test)."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Per-tensor weights instead of per-channel."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Keep this layer in float (repeatable)."),
    dynamic_ops: list[str] = typer.Option(None, "--dynamic-ops", help="With int8 on ONNX: quantize these op types (Conv, Gemm, MatMul) dynamically, the rest static; comma-separated."),
    max_degradation: float = MAX_DEGRADATION_OPTION,
    auto_fallback: bool = typer.Option(True, "--auto-fallback/--no-auto-fallback", help="Repair a static int8 file that fails its quality gates (with or without labels): dynamic int8, other calibrations, then the most sensitive layers in float (on by default)."),
    repair_budget: float = typer.Option(DEFAULT_REPAIR_BUDGET, "--repair-budget", help=(
        "Seconds all repairs of the run may take; the steps left when it runs out are listed in the report as not tried.")),
    analyze: bool = typer.Option(False, "--analyze", help="Rank layers by how much quantizing each alone hurts fidelity."),
    block_size: int = typer.Option(32, "--block-size", help="Language models: weights per int4 scale (16, 32, 64, 128, 256)."),
    algorithm: str = typer.Option(None, "--algorithm", help="Language models: how int4 weights are rounded: rtn, gptq, awq (smoothquant: 8da4w only); default per precision: rtn, gptq for 8da4w."),
    max_context: int = typer.Option(512, "--max-context", help="Language models: positions the exported KV cache holds."),
    embeddings: str = typer.Option(None, "--embeddings", help="Language models: the token table's precision: fp32 (default), "
                                   "int8-weight or int4-weight (ONNX GatherBlockQuantized)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<model name>)."),
    batch_axis: list[str] = BATCH_AXIS_OPTION,
    state: list[str] = STATE_OPTION,
    *,
    opts: Options,
) -> None:
    """Quantize a model to int8 ONNX and TFLite, verified in onnxruntime and LiteRT on real data.

    Example: compress quantize mnist_cnn.pt --format onnx,tflite --max-degradation 0.005 --out runs/mnist
    """
    from pydantic import ValidationError

    from compress.errors import GateFailed, UsageError
    from compress.steps.gates import failure_message
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, converts_ahead, quantize

    with handle_errors(opts.debug, opts.json_out):
        from compress.lm.model import is_language_model

        if is_language_model(model):  # before any torch model loading
            _quantize_language_model(model, formats, precisions, block_size, algorithm, max_context, max_degradation,
                                     auto_fallback, out, opts, embeddings=embeddings, keep_float=_split(exclude))
            return
        asked = [flag for flag, value, default in (("--block-size", block_size, 32), ("--algorithm", algorithm, None),
                                                   ("--max-context", max_context, 512), ("--embeddings", embeddings, None))
                 if value != default]
        if asked:
            raise UsageError(f"{asked[0]} applies to decoder language models only (a model directory with config.json "
                             f"or a .gguf file); {model.name} is not one: drop {asked[0]}")
        try:
            config = QuantizeConfig(
                formats=_split(formats) or default_formats(), precisions=_split(precisions) or ["int8"],
                calibration=calibration, calib_samples=calib_samples, per_channel=not per_tensor, exclude=_split(exclude),
                dynamic_op_types=_split(dynamic_ops),
                max_degradation=max_degradation, auto_fallback=auto_fallback, repair_budget=repair_budget, analyze=analyze, bench=not opts.no_bench,
                bench_runs=opts.runs, threads=opts.threads, seed=opts.seed,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            option = {"dynamic_op_types": "dynamic-ops"}.get(str(error["loc"][0]), "-".join(str(p) for p in error["loc"]))
            raise UsageError(f"--{option}: {error['msg'].removeprefix('Value error, ')}") from None
        from compress.data.streams import parse_batch_axes, parse_pairs

        if converts_ahead(config):
            from compress.steps.ahead import prewarm

            prewarm()  # the second process imports its libraries while this one loads the model
        handle = load_model(model, arch=opts.arch, arch_kwargs=parse_kwargs(opts.arch_kwargs), input_shapes=opts.input_shape,
                            trust_pickle=opts.trust_pickle,
                            batch_axes=parse_batch_axes(batch_axis), state=parse_pairs(state, "--state"),
                            data=data if data and data.endswith(".npz") else None)
        declare_output_kinds(handle, opts.output_kind)
        if data is None and not handle.dataset:  # said first, not only under the table minutes later
            console.print("[yellow]warning:[/] NO DATA: no --data and the model names no dataset, so calibration uses random "
                          "inputs and no accuracy claim is made; pass --data for real numbers", highlight=False, soft_wrap=True)
        run_dir = out or Path("runs") / model.stem
        with step_progress(transient=opts.json_out) as step:
            result = quantize(handle, config, data, run_dir, step=step, policy=gate_policy(max_degradation, opts.no_gate))
        report = result.report
        emit(report, opts.json_out, lambda: stdout_console.print(artifact_table(report, run_dir)))
        if not report["passed"]:
            raise GateFailed(failure_message(report, run_dir))


def _quantize_language_model(model: Path, formats, precisions, block_size: int, algorithm: str, max_context: int,
                             max_degradation, auto_fallback: bool, out: Path | None, opts: Options, *,
                             embeddings: str | None = None, keep_float: list[str] | None = None) -> None:
    """`compress quantize` of a decoder LM (compress.passes.quantize_lm): the same run directory, report and exit codes;
    ``--exclude`` patterns keep those layers in float, ``--embeddings`` quantizes the token table."""
    from compress.errors import GateFailed
    from compress.lm.model import load_lm
    from compress.passes.quantize_lm import LMQuantizeConfig, quantize_lm
    from compress.steps.gates import failure_message

    config = LMQuantizeConfig(**{k: v for k, v in {"formats": _split(formats), "precisions": _split(precisions)}.items() if v},
                              block_size=block_size, algorithm=algorithm, max_context=max_context,
                              max_degradation=max_degradation, auto_fallback=auto_fallback, bench=not opts.no_bench,
                              threads=(opts.threads,) if opts.threads else (1, 2), embeddings=embeddings,
                              keep_float=keep_float or [])
    run_dir = out or Path("runs") / model.stem
    with step_progress(transient=opts.json_out) as step:
        step("loading the language model")
        lm = load_lm(model)
        result = quantize_lm(lm, config, run_dir, step=step, policy=gate_policy(max_degradation, opts.no_gate))
    report = result.report
    emit(report, opts.json_out, lambda: stdout_console.print(artifact_table(report, run_dir)))
    if not report["passed"]:
        raise GateFailed(failure_message(report, run_dir))
