"""The recipe faces of the stages that write artifacts or measure (quantize, export, evaluate, benchmark).

Each handler takes the :class:`StageContext` and its config and returns the stage record (see
``compress.passes.registry``: these are registered there, like prune, distill and qat).

Example (what the runner does for ``- quantize: {formats: [onnx]}``):
    >>> record = quantize_stage(context, QuantizeConfig(formats=["onnx"]))
    >>> record["artifacts"][0]["path"]
    'model.fp32.onnx'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from compress.catalog import technique_label, technique_record
from compress.errors import UsageError
from compress.limits import MAX_BATCH, MAX_RUNS, MAX_THREADS
from compress.loading.model import ModelHandle

if TYPE_CHECKING:
    from compress.report.model import Artifact


@dataclass
class StageContext:
    """What a stage may read: the current model, the recipe, the data plan, the reference, its folder, the artifacts so far."""

    handle: ModelHandle
    recipe: object                 # the RecipeBase being run
    plan: object                   # compress.data.plan.DataPlan
    reference: object              # compress.steps.pipeline.Reference (the recipe's input model)
    folder: Path                   # the stage's own folder (cached stages) or the run directory (measurements)
    run_dir: Path
    artifacts: list[Artifact] = field(default_factory=list)


class EvaluateConfig(BaseModel):
    """Evaluate the current model in eager PyTorch on the test split (a checkpoint between stages)."""

    model_config = ConfigDict(extra="forbid")

    split: str = Field("test", pattern="^(test|val)$")


class BenchmarkConfig(BaseModel):
    """Time every artifact so far on the recipe's targets."""

    model_config = ConfigDict(extra="forbid")

    batch: list[Annotated[int, Field(ge=1, le=MAX_BATCH)]] = Field(default_factory=lambda: [1], description=f"Batch sizes timed (each at most {MAX_BATCH:,}).")
    runs: int = Field(100, ge=1, le=MAX_RUNS, description=(
        f"Timed runs, at most (at most {MAX_RUNS:,}); timing stops earlier once the median is known to ±2 %."))
    warmup: int = Field(10, ge=0, le=MAX_RUNS, description=f"Untimed warm-up runs (at most {MAX_RUNS:,}).")
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description=f"Runtime threads (at most {MAX_THREADS:,}).")


def quantize_stage(context: StageContext, config) -> dict:
    """PTQ of the current model; after ``qat`` the model already holds its int8 scales and is exported as is."""
    from compress.passes.qat import is_quantized

    if is_quantized(context.handle.module):
        return _export_quantized(context, config)
    return _quantize(context, config.model_copy(update={"seed": context.recipe.seed}))


def export_stage(context: StageContext, config) -> dict:
    """fp32 (and fp16) files: quantize with the float precisions only."""
    from compress.passes.qat import is_quantized
    from compress.passes.quantize import QuantizeConfig

    if is_quantized(context.handle.module):
        raise UsageError("stage export: the model is already int8 after qat; put the export stage (fp32 files) before qat")
    qconfig = QuantizeConfig(formats=config.formats, precisions=[p for p in config.precisions if p != "fp32"] or ["fp16"],
                             seed=context.recipe.seed, include_fp32="fp32" in config.precisions)
    if "fp16" not in config.precisions:
        qconfig = qconfig.model_copy(update={"precisions": []})
    return _quantize(context, qconfig)


def _quantize(context: StageContext, qconfig) -> dict:
    from compress.passes.quantize import quantize

    result = quantize(context.handle, qconfig, context.recipe.data.name, context.folder, reference=context.reference)
    for entry in result.report["artifacts"]:
        entry["techniques"] = [*map(technique_record, context.handle.techniques), *entry["techniques"]]
    return {"artifacts": result.report["artifacts"], "preflight": result.report.get("preflight", []),
            "refused": result.report.get("refused", [])}


def _export_quantized(context: StageContext, config) -> dict:
    """``quantize`` after ``qat``: export the int8 model as is (no second PTQ).

    Writes ``model.qat-<scheme>.<fmt>`` (the files `compress qat` makes, e.g. ``model.qat-int8.onnx``), each verified
    in its runtime. fp32 baselines come from an ``export`` stage placed before ``qat``.

    Example (recipe stages): ``[{qat: {epochs: 3}}, {quantize: {formats: [onnx, tflite]}}]``
    """
    from compress.build import BuildContext, build
    from compress.passes.qat import QatConfig
    from compress.passes.qat_export import qat_spec
    from compress.steps.pipeline import heads_for

    if config.precisions != ["int8"]:
        raise UsageError("stage quantize: the model is already int8 after qat; "
                         f"set precisions to int8 only (got {', '.join(config.precisions)})")
    qat_config = next((c for k, c in context.recipe.stage_list if k == "qat"), QatConfig())  # names the files, notes the bits
    bench = {"runs": config.bench_runs, "warmup": config.bench_warmup, "threads": config.threads} if config.bench else None
    specs = [qat_spec(context.handle, qat_config, fmt) for fmt in config.formats]
    build_context = BuildContext(context.folder, context.plan, heads_for(context.handle, context.plan), config,
                                 context.reference, bench=bench, compressed_size=True)
    built = build(context.handle, specs, build_context).artifacts  # the stage's marker keeps them as report.json does
    return {"artifacts": [a.model_dump(by_alias=True, exclude_unset=True) for a in built]}


def evaluate_stage(context: StageContext, config: EvaluateConfig) -> dict:
    from compress.data.evaluate import task_metrics
    from compress.passes.training import predict

    handle, data = context.handle, context.plan.test if config.split == "test" else None
    metrics = task_metrics(data.heads, predict(handle.module, data), data.y) if data is not None and handle.module is not None else None
    return {"metrics": metrics, "techniques": [technique_label(t) for t in handle.techniques]}


def benchmark_stage(context: StageContext, config: BenchmarkConfig) -> dict:
    """Add (or replace) one latency entry per artifact × target × batch; returns what the stage log records."""
    from compress.steps.benchmark import benchmark_artifact
    from compress.steps.gates import is_failed

    targets = context.recipe.targets
    for artifact in (a for a in context.artifacts if not is_failed(a)):
        for target in targets:
            for batch in config.batch:
                entry = benchmark_artifact(context.run_dir / artifact.path, target=target, batch=batch, runs=config.runs,
                                           warmup=config.warmup, threads=config.threads)
                artifact.latency = [e for e in artifact.latency if (e.target, e.batch) != (entry["target"], batch)] + [entry]
    return {"targets": targets, "batch": config.batch}
