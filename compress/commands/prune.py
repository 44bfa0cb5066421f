"""`compress prune`: prune (and fine-tune) a model, export it, verify every file in its runtime, report per layer.

Also home of what the three training verbs (prune, distill, qat) share: resolving train/val/test splits,
exporting + verifying a model's fp32/int8 files, and saving a chainable ``.pt2``.

Example:
    $ compress prune mnist_cnn.pt --method l1-structured --sparsity 0.5 --finetune-epochs 3 --out runs/pruned
    $ compress qat runs/pruned/model.pt2 --out runs/pruned-qat          # chaining: the .pt2 carries its dataset
"""
from __future__ import annotations

from pathlib import Path

import typer

from compress.commands._common import (declare_output_kinds, emit, gate_policy, handle_errors, parse_kwargs,
                                     stdout_console)
from compress.commands._options import Options, shared_options
from compress.commands._progress import training_progress
from compress.passes.workflow_common import FORMATS
from compress.passes.prune_workflow import run_prune



def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


# --- shared by prune, distill and qat ---------------------------------------------------------------------------


def split_list(values: list[str] | None) -> list[str]:
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


def check_formats(formats: list[str], allowed: tuple[str, ...] | None = None) -> list[str]:
    """The --format values, deduplicated (default: the default formats); one outside ``allowed`` (default: every
    format compress can produce) is a UsageError naming the choices."""
    from compress.errors import UsageError
    from compress.backends import quantizable

    allowed = allowed or quantizable()
    formats = list(dict.fromkeys(formats or FORMATS))
    unknown = [f for f in formats if f not in allowed]
    if unknown:
        what = "is not available here" if unknown[0] in quantizable() else "is not a format compress knows"
        raise UsageError(f"unknown --format {unknown[0]!r}: it {what}; choose from {', '.join(allowed)}")
    return formats


def config_or_usage(cls, **fields):
    """Build a pass config; a validation error becomes one UsageError line naming the option."""
    from pydantic import ValidationError

    from compress.commands._common import validation_message
    from compress.errors import UsageError

    try:
        return cls(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(validation_message(exc)) from None


def bench_options(opts: Options) -> dict | None:
    """The benchmark settings of the shared "time" options (None: --no-bench)."""
    return None if opts.no_bench else {"runs": opts.runs, "warmup": max(1, opts.runs // 10), "threads": opts.threads}


def raise_failed_gates(report: dict, run_dir: Path) -> None:
    from compress.errors import GateFailed
    from compress.steps.gates import failure_message

    message = failure_message(report, run_dir)
    if message:
        raise GateFailed(message)


def load_for_pass(model: Path, opts: Options):
    """The model of the shared "load" options, with the "judge" options' declared output kinds."""
    from compress.loading.model import load_model

    handle = load_model(model, arch=opts.arch, arch_kwargs=parse_kwargs(opts.arch_kwargs), input_shapes=opts.input_shape,
                        trust_pickle=opts.trust_pickle)
    return declare_output_kinds(handle, opts.output_kind)


# --- prune ------------------------------------------------------------------------------------------------------


@shared_options("pass", "judge", "load", "time", "output")
def prune_command(
    model: Path = typer.Argument(..., help="Zoo checkpoint, state_dict .pt (with --arch), torch.export .pt2 (magnitude/N:M only)."),
    method: str = typer.Option("magnitude", "--method", "-m", help="magnitude, l1-structured, l2-structured, or N:M such as 2:4."),
    sparsity: float = typer.Option(None, "--sparsity", "-s", show_default="0.5; N:M: fixed by the pattern",
                                   help="Fraction removed, in [0, 1): weights (magnitude) or channels (structured)."),
    scope: str = typer.Option("layer", "--scope", help="layer: every layer at the target; global: one ranking across layers."),
    layer_sparsity: list[str] = typer.Option(None, "--layer-sparsity", help="Per-layer target, e.g. features.0=0.2 (repeatable)."),
    skip: list[str] = typer.Option(None, "--skip", help="Layer never pruned (repeatable; a parent name covers its children)."),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", "-e", help="Fine-tune epochs while sparsity ramps up (cubic schedule)."),
    schedule: str = typer.Option("cubic", "--schedule", help="cubic, linear or one-shot."),
    lr: float = typer.Option(None, "--lr", help="Fine-tuning learning rate (Adam; default 5e-4)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<model name>-pruned)."),
    *,
    opts: Options,
) -> None:
    """Prune a model (unstructured, structured channels or 2:4), fine-tune it, export and verify it.

    Example: compress prune mnist_cnn.pt --method l1-structured --sparsity 0.5 --finetune-epochs 3
    """
    from compress.commands._render import artifact_table
    from compress.errors import UsageError
    from compress.passes.prune import PruneConfig

    with handle_errors(opts.debug, opts.json_out):
        ratios = {}
        for name, value in parse_kwargs(layer_sparsity).items():
            if not isinstance(value, (int, float)):
                raise UsageError(f"--layer-sparsity {name}={value!r}: the value must be a number in [0, 1)")
            ratios[name] = float(value)
        config = config_or_usage(PruneConfig, method=method, sparsity=sparsity, scope=scope, layer_sparsity=ratios,
                                 skip=split_list(skip), finetune_epochs=finetune_epochs, schedule=schedule, lr=lr, seed=opts.seed)
        fmts = check_formats(split_list(opts.formats))
        handle = load_for_pass(model, opts)
        run_dir = out or Path("runs") / f"{model.stem}-pruned"
        with training_progress(f"pruning ({config.method})", config.finetune_epochs, transient=opts.json_out) as (on_epoch, step):
            report = run_prune(handle, config, opts.data, run_dir, fmts, not opts.no_int8, bench_options(opts),
                               gate_policy(opts.max_degradation, opts.no_gate), on_epoch, step)
        emit(report, opts.json_out, lambda: stdout_console.print(artifact_table(report, run_dir), prune_table(report["prune"])))
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
