"""`compress quantize`: post-training quantization to ONNX and TFLite, verified in the real runtimes.

One config object serves the CLI, the Python API and recipes.

Example:
    >>> from compress.model import load_model
    >>> result = quantize(load_model("mnist_cnn.pt"), QuantizeConfig(formats=["onnx"]), out_dir="runs/mnist")
    >>> result.report["artifacts"][1]["verified_in"]
    ['onnxruntime']
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from compress import formats as registry
from compress.formats.calibration import calibration_names, check_calibration
from compress.formats.onnx import DYNAMIC_OP_TYPES
from compress.formats.precisions import check_precisions, exported, quantized, tunable
from compress.dataplan import DataPlan, plan_data
from compress.errors import CompressError, GateFailed, UsageError, first_line
from compress.export.reuse import conversions
from compress.io import DiskFull, disk_full_cause
from compress.model import ModelHandle
from compress.gates import GatePolicy, is_compressed, is_failed, max_degradation_field
from compress.pipeline import Reference, finish_report, heads_for, measure_reference, verify_artifact
from compress.passes.registry import searchable
from compress.phases import PhaseClock
from compress.limits import MAX_LAYERS, MAX_RUNS, MAX_SAMPLES, MAX_THREADS
from compress.rundir import holds_run_dir, located, staged


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
    """``name`` when each format asked for implements it (compress.formats.calibration; none falls back to another)."""
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
        json_schema_extra=searchable("precisions", ["int8", "int8-dynamic"], options=list(tunable())))
    calibration: Annotated[str, AfterValidator(_calibration)] = Field(
        "minmax", description="How static int8 picks activation ranges (compress.formats.calibration).",
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
        "calibrations, then the most sensitive layers in float (compress.repair)."))
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
AHEAD_PHASE = "second process: TFLite/.pte conversions"  # wall: the wait for it; CPU: all of its work


def _finding_dict(finding) -> dict:
    return {k: getattr(finding, k) for k in ("format", "op", "node", "layer", "severity", "message", "suggestion")}


def run_preflight(handle: ModelHandle, config: QuantizeConfig, fp32: dict[str, Path], plan: DataPlan, run_dir: Path,
                  refusals: "Refusals", formats: list[str] | None = None) -> list[dict]:
    """Ops each format (of ``formats``, default all) cannot quantize or run, found before its verification (``fp32``:
    the fp32 files exported so far). Each format sees the job it will quantize, with nothing excluded yet. A format
    with an error is refused (``refusals``): the others go on; with none left the run stops (exit 2)."""
    findings = []
    for name in formats or config.formats:
        fmt = registry.get(name)
        if fmt.preflight is None:
            continue
        with refusals.producing(name):
            for precision in config.precisions:
                job = _job(handle, name, precision, staged(run_dir, fmt.filename(precision)), fp32.get(name), plan, config, [])
                findings += [_finding_dict(f) for f in fmt.preflight(job)]
            error = next((f for f in findings if f["format"] == name and f["severity"] == "error"), None)
            if error is not None:
                raise UsageError(f"{name}: {error['message']} ({error['suggestion']})")
    return findings


@dataclass
class Refusals:
    """Formats asked for and not produced, each with why: one format's failure does not stop the others.

    Example:
        >>> refusals = Refusals(["onnx", "pte"], ["fp32", "int8"], Path("runs/x"))
        >>> with refusals.producing("pte"):
        ...     raise EnvironmentFailure("ExecuTorch could not lower the model to XNNPACK: ...")
        >>> refusals.records([])[0]["reason"]
        'ExecuTorch could not lower the model to XNNPACK: ...'
    """

    formats: list[str]
    precisions: list[str]
    run_dir: Path
    reasons: dict[str, str] = field(default_factory=dict)

    def wanted(self, name: str) -> bool:
        return name not in self.reasons

    @contextlib.contextmanager
    def producing(self, name: str) -> Iterator[None]:
        """Work towards format ``name``: a failure inside refuses it (a full disk or a failed gate never does)."""
        try:
            yield
        except (DiskFull, GateFailed):
            raise
        except Exception as exc:
            cause = disk_full_cause(exc, self.run_dir)
            if cause is not None:
                raise cause from exc
            self.refuse(name, exc)

    def refuse(self, name: str, error: Exception) -> None:
        """Refuse ``name`` because of ``error``; with no other format left, ``error`` is raised as it is."""
        if all(other in self.reasons for other in self.formats if other != name):
            raise error
        reason = str(error) if isinstance(error, CompressError) else f"{type(error).__name__}: {first_line(error)}"
        self.reasons[name] = reason.removeprefix(f"{name}: ")

    def records(self, artifacts: list[dict]) -> list[dict]:
        """report.json ``refused``: each refused format, the precisions it has no file of (``artifacts``: the run's)."""
        made = {(a["format"], a["precision"]) for a in artifacts}
        return [{"format": name, "precisions": [p for p in self.precisions if (name, p) not in made], "reason": reason}
                for name, reason in self.reasons.items()]


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


def stream_report(handle: ModelHandle, plan: DataPlan, run_dir: Path, artifacts: list[dict], seed: int = 0) -> dict | None:
    """report.json ``streams``: every artifact run over one stream with its own state fed back (stateful models)."""
    from compress.runtimes import open_runner
    from compress.streams import evaluate_stream

    if not handle.input_spec.state:
        return None
    runners = {a["name"]: open_runner(Path(run_dir) / a["path"], spec=plan.spec) for a in artifacts}
    return evaluate_stream(handle, plan, runners, seed=seed)


def _job(handle: ModelHandle, name: str, precision: str, out: Path, fp32: Path | None, plan: DataPlan,
         config: QuantizeConfig, exclude: list[str], reference: Reference | None = None) -> registry.QuantizeJob:
    kinds = [k.kind for k in reference.kinds] if reference is not None and reference.kinds else None
    return registry.QuantizeJob(handle, precision, out, fp32 if registry.get(name).quantizes_fp32_file else None,
                                plan.calibration, config.calibration, config.per_channel, exclude, config.seed,
                                list(config.dynamic_op_types), kinds)


def _quantize_one(handle: ModelHandle, name: str, precision: str, run_dir: Path, out: Path, plan: DataPlan,
                  config: QuantizeConfig, exclude: list[str], reference: Reference | None = None):
    fmt = registry.get(name)
    return fmt.quantize(_job(handle, name, precision, out, located(run_dir, fmt.filename("fp32")), plan, config, exclude,
                             reference))


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
    ``config.max_degradation``; see compress.gates).
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

    @contextlib.contextmanager
    def waiting() -> Iterator[None]:
        """A wait for the second process is its own phase; then the interrupted one goes on."""
        interrupted = clock.running
        step(AHEAD_PHASE)
        yield
        if interrupted:
            step(interrupted)

    ahead = _convert_ahead(handle, config, plan, waiting)
    later = ahead.formats if ahead is not None else []  # converted there: checked and verified last
    fp32: dict[str, Path] = {}  # exported up front: the files a format quantizes from
    refusals = Refusals(config.formats, list(dict.fromkeys((["fp32"] if config.include_fp32 else []) + config.precisions)), run_dir)
    for fmt in map(registry.get, config.formats):
        if fmt.quantizes_fp32_file:
            step(f"exporting fp32 {fmt.name}")
            with refusals.producing(fmt.name):
                fmt.export_fp32(handle, staged(run_dir, fmt.filename("fp32")))
                fp32[fmt.name] = staged(run_dir, fmt.filename("fp32"))
    step("pre-flight")
    preflight = refused + run_preflight(handle, config, fp32, plan, run_dir, refusals,
                                        [f for f in config.formats if f not in later and refusals.wanted(f)])

    if reference is None:
        step("measuring the reference")
        first = next(iter(fp32.values()), None)
        reference = measure_reference(handle, plan, size_bytes=registry.artifact_size(first) if first else None)
    bench = {"runs": config.bench_runs, "warmup": config.bench_warmup, "threads": config.threads} if config.bench else None
    policy = policy or GatePolicy(max_degradation=config.max_degradation)

    artifacts: list[dict] = []
    sensitivity: list[dict] = []

    def ranked_layers() -> list[str]:
        """Layers by harm when quantized alone (analysed once per run, on first need)."""
        if not sensitivity:
            step("sensitivity analysis")
            sensitivity.extend(analyze(handle, plan, config, run_dir))
        return [row["layer"] for row in sensitivity]

    if config.analyze:
        ranked_layers()

    for fmt in map(registry.get, sorted(filter(refusals.wanted, config.formats), key=later.__contains__)):
        with refusals.producing(fmt.name):  # a format that cannot be made is refused; the others go on
            if config.include_fp32:
                step(f"fp32 {fmt.name}: export and verify")
                if fmt.name not in fp32:
                    fmt.export_fp32(handle, staged(run_dir, fmt.filename("fp32")))
                artifacts.append(verify_artifact(run_dir, fmt.filename("fp32"), "fp32", ["export:fp32"], plan, reference, heads))
            if fmt.name in later:  # converted beside the work above (its fp32 file first): checked before it quantizes
                step("pre-flight")
                preflight += run_preflight(handle, config, fp32, plan, run_dir, refusals, [fmt.name])
                if not refusals.wanted(fmt.name):
                    continue
            fp32_entry = next((a for a in artifacts if a["format"] == fmt.name and a["precision"] == "fp32"), None)
            for precision in config.precisions:
                step(f"{precision} {fmt.name}: quantize and verify")
                artifacts.append(_quantize_verified(handle, fmt.name, precision, run_dir, plan, reference, heads, config,
                                                    policy, fp32_entry, ranked_layers, step))

    artifacts.sort(key=lambda a: config.formats.index(a["format"]))  # the order asked for
    if ahead is not None:
        ahead.close()  # it has answered everything asked of it
    if bench is not None:  # last: the second process has ended, so nothing else runs on the cores meanwhile
        step("timing the files")
        time_artifacts(run_dir, artifacts, bench)
    step("stream evaluation")
    extra = {
        "streams": stream_report(handle, plan, run_dir, artifacts, config.seed),
        "command": "quantize",
        "config": config.model_dump(),
        "preflight": preflight,
        "notes": notes,
        "sensitivity": sensitivity or None,
        "timings": clock.record(),
    }
    report = finish_report(run_dir, handle, plan, reference, artifacts, policy, extra, candidate=is_compressed,
                           refused=refusals.records(artifacts))
    return QuantizeResult(run_dir, report, preflight)


def converts_ahead(config: QuantizeConfig) -> bool:
    """Whether a run with ``config`` converts TFLite/.pte files in a second process while ONNX work goes on (the CLI
    starts that process before it loads the model: compress.export.ahead.prewarm)."""
    return "onnx" in config.formats and any(registry.get(name).converted_ahead for name in config.formats) and not config.exclude


def _convert_ahead(handle: ModelHandle, config: QuantizeConfig, plan: DataPlan, waiting):
    """Start the TFLite/.pte conversions the run will ask for in a second process (compress.export.ahead), when ONNX
    work can overlap them; None when it cannot help. ``waiting``: see ``convert_ahead``."""
    from compress.export.ahead import Job, convert_ahead
    from compress.export.pt2e import eval_mode, export_batch

    if not converts_ahead(config) or plan.calibration is None or handle.module is None or handle.source_format == "torchscript":
        return None
    converted = [name for name in config.formats if registry.get(name).converted_ahead]
    precisions = (["fp32"] if config.include_fp32 else []) + [p for p in config.precisions if p == "int8"]  # as asked for
    jobs = [Job(name, precision, plan.calibration if precision == "int8" else None, config.calibration, config.per_channel)
            for name in converted for precision in precisions]
    example = handle.input_spec.example_inputs(batch=export_batch(handle), seed=0)
    program = handle.source_path if handle.source_format == "exported_program" else None
    return convert_ahead(eval_mode(handle.module), example, jobs, program, waiting)


def time_artifacts(run_dir: Path, artifacts: list[dict], bench: dict) -> None:
    """Time every verified file (compress.benchmark.benchmark_artifact with ``bench``) into its ``latency``."""
    from compress.benchmark import benchmark_artifact

    for entry in artifacts:
        if not is_failed(entry):
            entry["latency"].append(benchmark_artifact(Path(run_dir) / entry["path"], **bench))


def _quantize_verified(handle, fmt, precision, run_dir, plan, reference: Reference, heads, config, policy: GatePolicy,
                       fp32: dict | None, ranked_layers: Callable[[], list[str]], step) -> dict:
    """Quantize and verify; a static int8 file that fails its quality gates is repaired (compress.repair)."""
    from compress.repair import RepairStep, repair, should_repair

    def attempt(change: RepairStep) -> dict:
        exclude = [*config.exclude, *change.keep_float]
        result = _quantize_one(handle, fmt, change.precision or precision, run_dir, staged(run_dir, registry.get(fmt).filename(precision)),
                               plan, config.model_copy(update=change.update), exclude, reference)
        techniques = list(result.techniques) + [f"keep-float:{layer}" for layer in exclude]
        return verify_artifact(run_dir, result.path.name, result.precision if not exclude else "mixed", techniques, plan,
                               reference, heads, bench=None, notes=list(result.notes), float_ops=list(result.float_ops))

    entry = attempt(RepairStep("as configured"))
    skipped = should_repair(entry, precision, policy, fp32) if config.auto_fallback else "off"
    if skipped is None:
        entry = repair(attempt, entry, config, fmt, policy, ranked_layers, step=lambda message: step(f"{precision} {fmt}: {message}"))
    elif skipped.startswith("the fp32"):
        entry["notes"].append(f"not repaired: {skipped}")
    entry["name"] = f"{precision}-{fmt}"
    return entry


def analyze(handle: ModelHandle, plan: DataPlan, config: QuantizeConfig, run_dir: Path) -> list[dict]:
    """Per-layer sensitivity on the ONNX graph (the run's fp32 file, else one exported to a temporary folder)."""
    import tempfile

    from compress.export.onnx_quantize import analyze_sensitivity

    onnx = registry.get("onnx")
    eval_data = plan.test if plan.test is not None else plan.calibration
    fp32 = located(run_dir, onnx.filename("fp32"))
    with tempfile.TemporaryDirectory(prefix="compress-analyze-") as work:
        if not fp32.exists():
            fp32 = Path(work) / fp32.name
            onnx.export_fp32(handle, fp32)
        return analyze_sensitivity(fp32, plan.calibration, eval_data.take(256, config.seed), config.calibration,
                                   config.per_channel, None)
