"""`compress prune`: prune (and fine-tune) a model, export it, verify every file in its runtime, report per layer.

Also home of what the three training verbs (prune, distill, qat) share: resolving train/val/test splits,
the epoch progress bar, exporting + verifying a model's fp32/int8 files, and saving a chainable ``.pt2``.

Example:
    $ compress prune mnist_cnn.pt --method l1-structured --sparsity 0.5 --finetune-epochs 3 --out runs/pruned
    $ compress qat runs/pruned/model.pt2 --out runs/pruned-qat          # chaining: the .pt2 carries its dataset
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import typer

from compress.commands._common import (ARCH_KWARGS_OPTION, ARCH_OPTION, DEBUG_OPTION, INPUT_SHAPE_OPTION, JSON_OPTION,
                                     NO_BENCH_OPTION, RUNS_OPTION, SEED_OPTION, THREADS_OPTION, TRUST_PICKLE_OPTION,
                                     console, emit, handle_errors, parse_kwargs)

FORMATS = ("onnx", "tflite")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


# --- shared by prune, distill and qat ---------------------------------------------------------------------------


def split_list(values: list[str] | None) -> list[str]:
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def check_formats(formats: list[str]) -> list[str]:
    from compress.errors import UsageError

    formats = list(dict.fromkeys(formats or FORMATS))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown --format {unknown[0]!r}; choose onnx, tflite or both")
    return formats


def config_or_usage(cls, **fields):
    """Build a pass config; a validation error becomes one UsageError line naming the option."""
    from pydantic import ValidationError

    from compress.errors import UsageError

    try:
        return cls(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "-".join(str(p) for p in error["loc"]).replace("_", "-")
        message = error["msg"].removeprefix("Value error, ")
        if where and error["type"] != "value_error":
            message += f" (got {error['input']!r})"
        raise UsageError(f"--{where}: {message}" if where else message) from None


def resolve_splits(handle, data, seed: int = 0, calib_samples: int = 256):
    """Train/val/test splits for the passes and the DataPlan (calibration from train+val, test) for verification.

    ``data`` None means the model's own dataset and split seed (zoo checkpoints, compress-made .pt2 files).
    """
    from compress.data import Dataset, resolve_data
    from compress.dataplan import image_shape, plan_data
    from compress.errors import UsageError

    if data is None and not handle.dataset:
        raise UsageError(f"{handle.source_path} carries no dataset: pass --data (a dataset name, .npz, image folder or package.module:function)")
    own = data is None
    dataset = resolve_data(handle.dataset["name"] if own else data, image_shape(handle)) if not isinstance(data, Dataset) else data
    if not dataset.labeled:
        raise UsageError(f"data {dataset.name!r} has no labels: training and evaluation need labeled data")
    plan = plan_data(handle, None if own else dataset, calib_samples, seed)
    return dataset.split(plan.split_seed), plan


@contextlib.contextmanager
def training_progress(title: str, epochs: int, transient: bool = False) -> Iterator[tuple[Callable[[dict], None], Callable[[str], None]]]:
    """One rich display for a training verb: a bar over epochs (loss, val, sparsity) and one line per later step.

    Yields ``(on_epoch, step)``: ``on_epoch`` takes a pass's epoch row, ``step(message)`` closes the previous step.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=transient) as progress:
        training = progress.add_task(title, total=epochs, info="")
        current = {"task": None}

        def on_epoch(row: dict) -> None:
            parts = [row.get("run", ""), f"sparsity {row['sparsity']:.3f}" if "sparsity" in row else "",
                     f"loss {row['loss']:.4f}", f"val {row['val']:.4f}" if row.get("val") is not None else ""]
            progress.update(training, advance=1, info="  ".join(p for p in parts if p))

        def step(message: str) -> None:
            progress.update(training, completed=epochs)
            if current["task"] is not None:
                progress.update(current["task"], completed=1, total=1)
            current["task"] = progress.add_task(message, total=None, info="")

        try:
            yield on_epoch, step
        except BaseException:
            progress.live.transient = True  # an error is one line: the bars vanish instead of staying above it
            raise
        if current["task"] is not None:
            progress.update(current["task"], completed=1, total=1)


def export_verified(handle, run_dir: Path, stem: str, formats: list[str], int8: bool, plan, reference, heads,
                    bench: dict | None, prefix: str = "", seed: int = 0, step=None) -> list[dict]:
    """Export ``handle`` to fp32 (and PTQ int8) ONNX/TFLite as ``{stem}.{precision}.{fmt}``, verify each file in its
    runtime on the test split, and return the report entries (with ``compressed_size_bytes``)."""
    from compress.export.onnx import export_onnx
    from compress.export.onnx_quantize import quantize_onnx
    from compress.export.tflite import export_tflite
    from compress.passes.prune import compressed_size
    from compress.pipeline import verify_artifact

    step = step or (lambda message: None)
    entries = []

    def verify(filename, precision, techniques, name, notes=(), float_ops=()):
        entry = verify_artifact(run_dir, filename, precision, [*handle.techniques, *techniques], plan, reference, heads,
                                name=name, bench=bench, notes=list(notes), float_ops=list(float_ops))
        entry["compressed_size_bytes"] = compressed_size(run_dir / filename)
        entries.append(entry)

    for fmt in formats:
        fp32 = f"{stem}.fp32.{fmt}"
        step(f"{prefix}fp32 {fmt}: export and verify")
        if fmt == "onnx":
            export_onnx(handle, run_dir / fp32)
        else:
            export_tflite(handle, run_dir / fp32, "fp32", None)
        verify(fp32, "fp32", ["export:fp32"], f"{prefix}fp32-{fmt}")
        if int8:
            step(f"{prefix}int8 {fmt}: quantize and verify")
            out = run_dir / f"{stem}.int8.{fmt}"
            result = (quantize_onnx(run_dir / fp32, out, "int8", plan.calibration, seed=seed) if fmt == "onnx"
                      else export_tflite(handle, out, "int8", plan.calibration, seed=seed))
            verify(out.name, result.precision, result.techniques, f"{prefix}int8-{fmt}", result.notes, result.float_ops)
    return entries


def bench_options(no_bench: bool, runs: int, threads: int | None) -> dict | None:
    return None if no_bench else {"runs": runs, "warmup": max(1, runs // 10), "threads": threads}


def gates_for(artifacts: list[dict], max_degradation: float | None, plan) -> list[dict]:
    from compress.gates import degradation_gate

    if max_degradation is None or plan.test is None:
        return []
    return [degradation_gate(a, max_degradation) for a in artifacts if not a["name"].startswith(("dense-", "teacher-", "no-kd-"))]


def raise_failed_gates(report: dict, run_dir: Path) -> None:
    from compress.errors import GateFailed

    failed = [g for g in report["gates"] if not g["passed"]]
    if failed:
        raise GateFailed(f"gate {failed[0]['name']} failed for {failed[0]['artifact']}: {failed[0]['value']} > {failed[0]['limit']} "
                         f"(artifacts are still in {run_dir})")


def load_for_pass(model: Path, arch, arch_kwargs, input_shape, trust_pickle):
    from compress.model import load_model

    return load_model(model, arch=arch, arch_kwargs=parse_kwargs(arch_kwargs), input_shapes=input_shape, trust_pickle=trust_pickle)


# --- prune ------------------------------------------------------------------------------------------------------


def run_prune(handle, config, data=None, out_dir: str | Path = "runs/prune", formats: tuple[str, ...] = FORMATS,
              int8: bool = True, bench: dict | None = None, max_degradation: float | None = None,
              on_epoch=None, step=None) -> dict:
    """Prune ``handle`` (compress.passes.prune), export dense and pruned files, verify them, write the run directory.

    Artifacts: ``dense-fp32-*`` (the unpruned model, for size and latency side by side), ``fp32-*`` and ``int8-*``
    (the pruned model, int8 by the same PTQ as `compress quantize`), plus ``model.pt2`` for chaining. Returns the report.
    """
    from compress.advice import recommend
    from compress.model import save_program
    from compress.passes.prune import apply, check_prunable, compressed_size
    from compress.pipeline import finish_report, heads_for, measure_reference, original_record, verify_artifact

    step = step or (lambda message: None)
    check_prunable(handle)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits, plan = resolve_splits(handle, data, config.seed)
    heads = heads_for(handle, plan)
    pruned = apply(handle, config, splits, on_epoch)
    artifacts: list[dict] = []
    for fmt in formats:  # the dense fp32 file is the reference's size and the latency baseline
        step(f"dense fp32 {fmt}: export")
        _export_fp32(handle, run_dir / f"dense.fp32.{fmt}", fmt)
    reference = measure_reference(handle, plan, size_bytes=(run_dir / f"dense.fp32.{formats[0]}").stat().st_size)
    step("saving model.pt2 (for chaining)")
    save_program(pruned, run_dir / "model.pt2", original=original_record(handle, plan, reference))
    for fmt in formats:
        entry = verify_artifact(run_dir, f"dense.fp32.{fmt}", "fp32", ["export:fp32"], plan, reference, heads,
                                name=f"dense-fp32-{fmt}", bench=bench, notes=["the unpruned model, for comparison"])
        entry["compressed_size_bytes"] = compressed_size(run_dir / entry["path"])
        artifacts.append(entry)
    artifacts += export_verified(pruned, run_dir, "model", list(formats), int8, plan, reference, heads, bench, seed=config.seed, step=step)
    summary = pruned.metrics["prune"]
    _size_notes(artifacts, config)
    compare_latency(artifacts, "dense-")
    gates = gates_for(artifacts, max_degradation, plan)
    extra = {"command": "prune", "config": config.model_dump(mode="json"), "prune": summary,
             "recommended": recommend([a for a in artifacts if not a["name"].startswith("dense-")], max_degradation),
             "chain": {"model": "model.pt2", "techniques": pruned.techniques}}
    return finish_report(run_dir, handle, plan, reference, artifacts, gates, extra)


def compare_latency(artifacts: list[dict], baseline_prefix: str) -> None:
    """``speedup_vs_baseline`` (batch-1 p50 of the ``baseline_prefix`` fp32 file of the same format / own p50) and a note."""
    def p50(artifact):
        local = [e for e in artifact["latency"] if not e.get("emulated") and e.get("batch", 1) == 1]
        return local[0]["p50_ms"] if local else None

    base = {a["format"]: a for a in artifacts if a["name"].startswith(baseline_prefix) and a["precision"] == "fp32"}
    for artifact in artifacts:
        reference = base.get(artifact["format"])
        if reference is None or artifact is reference or not p50(artifact) or not p50(reference):
            continue
        artifact["speedup_vs_baseline"] = round(p50(reference) / p50(artifact), 3)
        artifact["notes"].append(f"p50 {p50(artifact):.3f} ms vs {p50(reference):.3f} ms for {reference['name']} at batch 1 "
                                 f"({artifact['speedup_vs_baseline']:.2f}x)")


def _export_fp32(handle, path: Path, fmt: str) -> None:
    from compress.export.onnx import export_onnx
    from compress.export.tflite import export_tflite

    if fmt == "onnx":
        export_onnx(handle, path)
    else:
        export_tflite(handle, path, "fp32", None)


def _size_notes(artifacts: list[dict], config) -> None:
    """Say what shrank: the file itself (structured) or only its compressed download (zeros in a dense file)."""
    dense = {a["format"]: a for a in artifacts if a["name"].startswith("dense-")}
    for artifact in artifacts:
        base = dense.get(artifact["format"])
        if base is None or artifact is base:
            continue
        ratio = artifact["size_bytes"] / base["size_bytes"]
        zipped = artifact["compressed_size_bytes"] / base["compressed_size_bytes"]
        if config.structured:
            artifact["notes"].append(f"{ratio:.2f}x the dense fp32 file ({artifact['size_bytes']:,} vs {base['size_bytes']:,} bytes): channels were removed")
        else:
            artifact["notes"].append(f"dense file {ratio:.2f}x the unpruned one: zeros are still stored; compressed (deflate, "
                                     f"as in an APK or a zip download) {artifact['compressed_size_bytes']:,} bytes = {zipped:.2f}x "
                                     f"the unpruned file's {base['compressed_size_bytes']:,}")


def prune_command(
    model: Path = typer.Argument(..., help="Zoo checkpoint, state_dict .pt (with --arch), torch.export .pt2 (magnitude/N:M only)."),
    method: str = typer.Option("magnitude", "--method", "-m", help="magnitude, l1-structured, l2-structured, or N:M such as 2:4."),
    sparsity: float = typer.Option(None, "--sparsity", "-s", help="Fraction removed, in [0, 1): weights (magnitude) or channels (structured). Default 0.5."),
    scope: str = typer.Option("layer", "--scope", help="layer: every layer at the target; global: one ranking across layers."),
    layer_sparsity: list[str] = typer.Option(None, "--layer-sparsity", help="Per-layer target, e.g. features.0=0.2 (repeatable)."),
    skip: list[str] = typer.Option(None, "--skip", help="Layer never pruned (repeatable; a parent name covers its children)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", "-e", help="Fine-tune epochs while sparsity ramps up (cubic schedule)."),
    schedule: str = typer.Option("cubic", "--schedule", help="cubic, linear or one-shot."),
    lr: float = typer.Option(None, "--lr", help="Fine-tuning learning rate (Adam; default 5e-4)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset name, .npz, image folder or package.module:function (zoo default: its own)."),
    formats: list[str] = typer.Option(None, "--format", "-f", help="onnx, tflite or both (comma-separated). Default: both."),
    no_int8: bool = typer.Option(False, "--no-int8", help="Export the pruned model in fp32 only (default: also int8, as `compress quantize`)."),
    max_degradation: float = typer.Option(None, "--max-degradation", help="Gate: allowed metric loss as a fraction; exit 1 if missed."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<model name>-pruned)."),
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
    """Prune a model (unstructured, structured channels or 2:4), fine-tune it, export and verify it.

    Example: compress prune mnist_cnn.pt --method l1-structured --sparsity 0.5 --finetune-epochs 3
    """
    from compress.commands._render import artifact_table
    from compress.errors import UsageError
    from compress.passes.prune import PruneConfig

    with handle_errors(debug):
        ratios = {}
        for name, value in parse_kwargs(layer_sparsity).items():
            if not isinstance(value, (int, float)):
                raise UsageError(f"--layer-sparsity {name}={value!r}: the value must be a number in [0, 1)")
            ratios[name] = float(value)
        config = config_or_usage(PruneConfig, method=method, sparsity=sparsity, scope=scope, layer_sparsity=ratios,
                                 skip=split_list(skip), finetune_epochs=finetune_epochs, schedule=schedule, lr=lr, seed=seed)
        fmts = check_formats(split_list(formats))
        handle = load_for_pass(model, arch, arch_kwargs, input_shape, trust_pickle)
        run_dir = out or Path("runs") / f"{model.stem}-pruned"
        with training_progress(f"pruning ({config.method})", config.finetune_epochs, transient=json_out) as (on_epoch, step):
            report = run_prune(handle, config, data, run_dir, fmts, not no_int8, bench_options(no_bench, runs, threads),
                               max_degradation, on_epoch, step)
        emit(report, json_out, lambda: console.print(artifact_table(report, run_dir), prune_table(report["prune"])))
        raise_failed_gates(report, run_dir)


def prune_table(summary: dict):
    """The per-layer table: parameters before/after, non-zeros, sparsity."""
    from rich.table import Table

    table = Table(title=f"per layer ({summary['method']}, target {summary['target_sparsity']:g}, {summary['scope']})")
    for column in ("layer", "type", "params before", "params after", "non-zero after", "sparsity"):
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for row in summary["layers"]:
        table.add_row(row["layer"], row["type"], f"{row['params_before']:,}", f"{row['params_after']:,}",
                      f"{row['nonzero_after']:,}", f"{row['sparsity']:.3f}" + ("" if row["pruned"] else " (kept)"))
    table.add_row("total", "", f"{summary['params_before']:,}", f"{summary['params_after']:,}", f"{summary['nonzero_after']:,}",
                  f"{1 - summary['nonzero_after'] / summary['params_before']:.3f}")
    return table
