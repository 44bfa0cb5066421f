"""`compress quantize`: post-training quantization to ONNX and TFLite, verified in the real runtimes.

One config object serves the CLI, the Python API and recipes.

Example:
    >>> from compress.loading.model import load_model
    >>> result = quantize(load_model("mnist_cnn.pt"), QuantizeConfig(formats=["onnx"]), out_dir="runs/mnist")
    >>> result.report["artifacts"][1]["verified_in"]
    ['onnxruntime']
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from compress import backends as registry
from compress.backends.calibration import calibration_names, check_calibration
from compress.backends.onnx.ops import DYNAMIC_OP_TYPES
from compress.catalog import check_precisions, exported, quantized
from compress.data.plan import DataPlan, plan_data
from compress.build import FP32, QUANTIZER, ArtifactSpec, BuildContext, Refusals, build
from compress.build import converts_ahead  # noqa: F401  (compress.commands.quantize asks it before loading the model)
from compress.errors import UsageError
from compress.backends.reuse import conversions
from compress.loading.model import ModelHandle
from compress.steps.gates import GatePolicy, is_compressed, max_degradation_field
from compress.steps.pipeline import Reference, finish_report, heads_for
from compress.report.manifest import write_manifest
from compress.passes.registry import searchable
from compress.steps.phases import PhaseClock
from compress.limits import MAX_LAYERS, MAX_RUNS, MAX_SAMPLES, MAX_SECONDS, MAX_THREADS
from compress.steps.repair_budget import DEFAULT_REPAIR_BUDGET
from compress.safety.rundir import holds_run_dir, located


def check_formats(value: list[str]) -> list[str]:
    """Registered formats `compress quantize` can produce, deduplicated; anything else is a ValueError."""
    if not value:
        raise ValueError(f"give at least one format ({', '.join(registry.quantizable())})")
    for name in value:
        if name not in registry.quantizable():
            raise ValueError(f"unknown format {name!r}; choose from {', '.join(registry.quantizable())}")
    return list(dict.fromkeys(value))


def check_dynamic_op_types(value: list[str]) -> list[str]:
    """The op types an int8 run may quantize dynamically, deduplicated; anything else is a ValueError."""
    unknown = [op for op in value if op not in DYNAMIC_OP_TYPES]
    if unknown:
        raise ValueError(f"op type {unknown[0]!r} cannot be quantized dynamically; choose from {', '.join(DYNAMIC_OP_TYPES)}")
    return list(dict.fromkeys(value))


Formats = Annotated[list[str], AfterValidator(check_formats)]


def _calibration(name: str, info: ValidationInfo) -> str:
    """``name`` when each format asked for implements it (compress.backends.calibration; none falls back to another)."""
    for fmt in info.data.get("formats") or [None]:
        check_calibration(name, fmt)
    return name


class QuantizeConfig(BaseModel):
    """Post-training quantization settings (the same object for CLI, API and recipe stages)."""

    model_config = ConfigDict(extra="forbid")

    formats: Formats = Field(default_factory=registry.default_formats, description=(
        f"Artifact formats to produce: {', '.join(registry.quantizable())}."))
    precisions: Annotated[list[str], AfterValidator(lambda v: check_precisions(v, quantized))] = Field(
        default_factory=lambda: ["int8"], description=f"Any of {', '.join(quantized())}.",
        json_schema_extra=searchable("precisions", ["int8", "int8-dynamic"], options="compress.catalog:tunable"))
    calibration: Annotated[str, AfterValidator(_calibration)] = Field(
        "minmax", description="How static int8 picks activation ranges (compress.backends.calibration).",
        json_schema_extra={**searchable("calibrations", list(calibration_names())), "enum": list(calibration_names())})
    calib_samples: int = Field(256, ge=1, le=MAX_SAMPLES, description=f"Calibration samples drawn from train+val (at most {MAX_SAMPLES:,}).",
                               json_schema_extra=searchable("calib_samples", [128, 256, 512], description=f"Calibration sample counts (each at most {MAX_SAMPLES:,})."))
    per_channel: bool = Field(True, json_schema_extra=searchable("per_channel", [True, False]))
    exclude: list[str] = Field(default_factory=list, description="Layers kept in float (torch module or ONNX node names).",
                               json_schema_extra=searchable("keep_float_max", 2, kind="max", le=MAX_LAYERS, description=(
                                   f"Up to this many of the most sensitive layers stay in float (at most {MAX_LAYERS:,}).")))
    dynamic_op_types: list[str] = Field(default_factory=list, description=(
        f"int8, ONNX only: op types ({', '.join(DYNAMIC_OP_TYPES)}) quantized dynamically, the rest static."),
        json_schema_extra=searchable("dynamic_op_types", [[], ["MatMul", "Gemm"]], description=(
            "With int8: op types quantized dynamically, the rest static ([]: all static).")))
    max_degradation: float | None = max_degradation_field()
    auto_fallback: bool = Field(True, description=(
        "Repair a static int8 file that fails its quality gates (labels or fidelity floors): dynamic int8, other "
        "calibrations, then the most sensitive layers in float (compress.steps.repair)."))
    repair_budget: float = Field(DEFAULT_REPAIR_BUDGET, gt=0, le=MAX_SECONDS, description=(
        f"Seconds all repairs of a run may take (at most {MAX_SECONDS:,}); the steps left when it runs out are listed as not tried."))
    max_fallback_layers: int = Field(4, ge=1, le=MAX_LAYERS, description=f"At most this many layers fall back to float (at most {MAX_LAYERS:,}).")
    analyze: bool = Field(False, description="Rank layers by how much quantizing each alone hurts fidelity.")
    include_fp32: bool = Field(True, description="Also export and verify fp32 baselines (used for the speed comparison).")
    bench: bool = True
    bench_runs: int = Field(100, ge=1, le=MAX_RUNS, description=f"Timed runs per artifact (at most {MAX_RUNS:,}).")
    bench_warmup: int = Field(10, ge=0, le=MAX_RUNS, description=f"Untimed warm-up runs (at most {MAX_RUNS:,}).")
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description=f"Runtime threads (at most {MAX_THREADS:,}; default: the runtime's own).")
    seed: int = 0

    @field_validator("dynamic_op_types")
    @classmethod
    def _dynamic_op_types(cls, value: list[str]) -> list[str]:
        return check_dynamic_op_types(value)


class ExportConfig(BaseModel):
    """Plain export (no quantization): fp32 and optionally fp16 files, verified like every artifact."""

    model_config = ConfigDict(extra="forbid")

    formats: Formats = Field(default_factory=registry.default_formats)
    precisions: Annotated[list[str], AfterValidator(lambda v: check_precisions(v, exported) if v else v)] = Field(
        default_factory=lambda: ["fp32"], description=f"Any of {', '.join(exported())}.")


@dataclass
class QuantizeResult:
    run_dir: Path
    report: dict
    preflight: list[dict] = field(default_factory=list)


Step = Callable[[str], None]


def refuse_unconvertible(handle: ModelHandle, config: QuantizeConfig) -> tuple[QuantizeConfig, list[dict]]:
    """Formats the source cannot reach (``ArtifactFormat.unreachable``), found before any work: refused (exit 2) when
    nothing else is asked for, else dropped with an error finding while the other formats go on."""
    reasons = {name: registry.get(name).unreachable(handle) for name in config.formats}
    refused = {name: reason for name, reason in reasons.items() if reason}
    if not refused:
        return config, []
    if len(refused) == len(config.formats):
        raise UsageError(next(iter(refused.values())))
    findings = [{"format": name, "op": None, "node": None, "layer": None, "severity": "error",
                 "message": f"not produced: {reason}", "suggestion": "the other formats go on"} for name, reason in refused.items()]
    return config.model_copy(update={"formats": [f for f in config.formats if f not in refused]}), findings


def stream_report(handle: ModelHandle, plan: DataPlan, run_dir: Path, artifacts: list, seed: int = 0,
                  kinds: list | None = None) -> dict | None:
    """report.json ``streams``: every artifact run over one stream with its own state fed back (stateful models);
    ``kinds`` (each output's OutputKind) say which outputs make the decisions the stream gate judges."""
    from compress.runtimes import open_runner
    from compress.data.streams import evaluate_stream, stream_metrics

    if not handle.input_spec.state:
        return None
    verified = [a for a in artifacts if a.status != "failed"]
    runners = {a.name: open_runner(Path(run_dir) / a.path, spec=plan.spec) for a in verified}
    streams = evaluate_stream(handle, plan, runners, seed=seed)
    for artifact in verified if streams else []:  # each artifact's streamed decisions are gated (compress.steps.resolve.stream_gate)
        artifact.metrics.stream = stream_metrics(streams["artifacts"][artifact.name], [k.kind for k in kinds or []] or None)
    return streams


@holds_run_dir("quantize")
@conversions()  # the pre-flight's dry runs and the real exports share their conversions
def quantize(
    handle: ModelHandle,
    config: QuantizeConfig | None = None,
    data=None,
    out_dir: str | Path = "runs/quantize",
    step: Step | None = None,
    reference: Reference | None = None,
    policy: GatePolicy | None = None,
) -> QuantizeResult:
    """Quantize ``handle`` into every format × precision, verify each file in its runtime, write the run directory.

    ``reference``: what degradation and fidelity are measured against (default: ``handle`` itself; a recipe passes
    its input model, so a pruned or distilled model's loss counts too). ``policy``: the gates (default: on, with
    ``config.max_degradation``; see compress.steps.gates).
    """
    clock = PhaseClock()
    config = config or QuantizeConfig()
    step = clock.wrap(step)
    run_dir = Path(out_dir)
    config, refused = refuse_unconvertible(handle, config)

    step("loading data")
    plan = plan_data(handle, data, config.calib_samples, config.seed)
    heads = heads_for(handle, plan)
    notes: list[str] = []
    if plan.synthetic:
        notes.append("NO DATA: calibrated on random inputs; no accuracy claim is made (top-1 and SQNR marked ~ compare each "
                     "file with fp32 torch on the same random inputs). Pass --data for real numbers.")

    policy = policy or GatePolicy(max_degradation=config.max_degradation)
    sensitivity: list[dict] = []

    def ranked_layers() -> list[str]:
        """Layers by harm when quantized alone (analysed once per run, on first need)."""
        if not sensitivity:
            step("sensitivity analysis")
            sensitivity.extend(analyze(handle, plan, config, run_dir))
        return [row["layer"] for row in sensitivity]

    refusals = Refusals(config.formats, list(dict.fromkeys((["fp32"] if config.include_fp32 else []) + config.precisions)), run_dir)
    bench = {"runs": config.bench_runs, "warmup": config.bench_warmup, "threads": config.threads} if config.bench else None
    context = BuildContext(run_dir, plan, heads, config, reference, policy, preflight=True, second_process=True, repair=True,
                           bench=bench, time_last=True, output_kinds=True, ranked_layers=ranked_layers, refusals=refusals,
                           rank_first=config.analyze, step=step, clock=clock)
    built = build(handle, artifact_specs(config), context)
    artifacts, preflight = built.artifacts, refused + built.preflight
    step("stream evaluation")
    streams = stream_report(handle, plan, run_dir, artifacts, config.seed, built.reference.kinds)  # gated: before any pick
    remeasured = None
    if config.bench:  # a pick the 95 % intervals cannot decide: its files re-timed side by side, once, bounded
        from compress.steps.remeasure import judged, remeasure_undecided

        _, remeasured = remeasure_undecided(run_dir, artifacts, judged(artifacts, policy), step=step)
    extra = {
        "streams": streams,
        "command": "quantize",
        "config": config.model_dump(),
        "preflight": preflight,
        "notes": notes,
        "sensitivity": sensitivity or None,
        "timings": clock.record(),
        "remeasured": remeasured,
    }
    report = finish_report(run_dir, handle, plan, built.reference, artifacts, policy, extra, candidate=is_compressed,
                           refused=refusals.records(artifacts))
    write_manifest(run_dir, report)
    return QuantizeResult(run_dir, report, preflight)


def artifact_specs(config: QuantizeConfig) -> list[ArtifactSpec]:
    """The files `compress quantize` makes with ``config``: per format, fp32 (when included) then each precision.

    Example:
        >>> [s.filename for s in artifact_specs(QuantizeConfig(formats=["onnx"]))]
        ['model.fp32.onnx', 'model.int8.onnx']
    """
    specs = []
    for fmt in map(registry.get, config.formats):
        if config.include_fp32:
            specs.append(ArtifactSpec(fmt.name, "fp32", f"fp32-{fmt.name}", fmt.filename("fp32"), FP32,
                                      phase=f"fp32 {fmt.name}: export and verify"))
        specs += [ArtifactSpec(fmt.name, precision, f"{precision}-{fmt.name}", fmt.filename(precision), QUANTIZER,
                               phase=f"{precision} {fmt.name}: quantize and verify") for precision in config.precisions]
    return specs


def analyze(handle: ModelHandle, plan: DataPlan, config: QuantizeConfig, run_dir: Path) -> list[dict]:
    """Per-layer sensitivity on the ONNX graph (the run's fp32 file, else one exported to a temporary folder)."""
    import tempfile

    from compress.backends.onnx.quantize import analyze_sensitivity

    onnx = registry.get("onnx")
    eval_data = plan.test if plan.test is not None else plan.calibration
    fp32 = located(run_dir, onnx.filename("fp32"))
    with tempfile.TemporaryDirectory(prefix="compress-analyze-") as work:
        if not fp32.exists():
            fp32 = Path(work) / fp32.name
            onnx.export_fp32(handle, fp32)
        return analyze_sensitivity(fp32, plan.calibration, eval_data.take(256, config.seed), config.calibration,
                                   config.per_channel, None)
