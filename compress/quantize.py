"""`compress quantize`: post-training quantization to ONNX and TFLite, verified in the real runtimes.

One config object serves the CLI, the Python API and recipes.

Example:
    >>> from compress.model import load_model
    >>> result = quantize(load_model("mnist_cnn.pt"), QuantizeConfig(formats=["onnx"]), out_dir="runs/mnist")
    >>> result.report["artifacts"][1]["verified_in"]
    ['onnxruntime']
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compress.dataplan import DataPlan, plan_data
from compress.errors import UsageError
from compress.model import ModelHandle
from compress.gates import GatePolicy, is_compressed, is_failed
from compress.io import make_run_dir
from compress.pipeline import Reference, finish_report, heads_for, measure_reference, verify_artifact
from compress.limits import MAX_LAYERS, MAX_RUNS, MAX_SAMPLES, MAX_THREADS
from compress.rundir import holds_run_dir, located, staged

PRECISIONS = ("int8", "int8-dynamic", "fp16", "int8-weight", "int4-weight")
DYNAMIC_OP_TYPES = ("Conv", "Gemm", "MatMul")  # the same as compress.export.onnx_quantize.DYNAMIC_OP_TYPES
Format = Literal["onnx", "tflite"]


def check_dynamic_op_types(value: list[str]) -> list[str]:
    """The op types an int8 run may quantize dynamically, deduplicated; anything else is a ValueError."""
    unknown = [op for op in value if op not in DYNAMIC_OP_TYPES]
    if unknown:
        raise ValueError(f"op type {unknown[0]!r} cannot be quantized dynamically; choose from {', '.join(DYNAMIC_OP_TYPES)}")
    return list(dict.fromkeys(value))


class QuantizeConfig(BaseModel):
    """Post-training quantization settings (the same object for CLI, API and recipe stages)."""

    model_config = ConfigDict(extra="forbid")

    formats: list[Format] = Field(default_factory=lambda: ["onnx", "tflite"], description="Artifact formats to produce.")
    precisions: list[str] = Field(default_factory=lambda: ["int8"], description=f"Any of {', '.join(PRECISIONS)}.")
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    calib_samples: int = Field(256, ge=1, le=MAX_SAMPLES, description=f"Calibration samples drawn from train+val (at most {MAX_SAMPLES:,}).")
    per_channel: bool = True
    exclude: list[str] = Field(default_factory=list, description="Layers kept in float (torch module or ONNX node names).")
    dynamic_op_types: list[str] = Field(default_factory=list, description=(
        f"int8, ONNX only: op types ({', '.join(DYNAMIC_OP_TYPES)}) quantized dynamically, the rest static."))
    max_degradation: float | None = Field(None, ge=0, description="Gate: metric loss allowed (fraction, 0.005 = 0.5 pt).")
    auto_fallback: bool = Field(False, description="Keep the most sensitive layers in float until max_degradation holds.")
    max_fallback_layers: int = Field(4, ge=1, le=MAX_LAYERS, description=f"At most this many layers fall back to float (at most {MAX_LAYERS:,}).")
    analyze: bool = Field(False, description="Rank layers by how much quantizing each alone hurts fidelity.")
    include_fp32: bool = Field(True, description="Also export and verify fp32 baselines (used for the speed comparison).")
    bench: bool = True
    bench_runs: int = Field(100, ge=1, le=MAX_RUNS, description=f"Timed runs per artifact (at most {MAX_RUNS:,}).")
    bench_warmup: int = Field(10, ge=0, le=MAX_RUNS, description=f"Untimed warm-up runs (at most {MAX_RUNS:,}).")
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description=f"Runtime threads (at most {MAX_THREADS:,}; default: the runtime's own).")
    seed: int = 0

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
        if not value:
            raise ValueError("give at least one precision")
        return value

    @field_validator("dynamic_op_types")
    @classmethod
    def _dynamic_op_types(cls, value: list[str]) -> list[str]:
        return check_dynamic_op_types(value)

    @field_validator("formats")
    @classmethod
    def _some_format(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one format (onnx, tflite)")
        return list(dict.fromkeys(value))


class ExportConfig(BaseModel):
    """Plain export (no quantization): fp32 and optionally fp16 files, verified like every artifact."""

    model_config = ConfigDict(extra="forbid")

    formats: list[Format] = Field(default_factory=lambda: ["onnx", "tflite"])
    precisions: list[Literal["fp32", "fp16"]] = Field(default_factory=lambda: ["fp32"])


@dataclass
class QuantizeResult:
    run_dir: Path
    report: dict
    preflight: list[dict] = field(default_factory=list)


Step = Callable[[str], None]


def _filename(precision: str, fmt: str) -> str:
    return f"model.{precision}.{fmt}"


def _finding_dict(finding) -> dict:
    return {k: getattr(finding, k) for k in ("format", "op", "node", "layer", "severity", "message", "suggestion")}


def run_preflight(handle: ModelHandle, config: QuantizeConfig, fp32_onnx: Path | None) -> list[dict]:
    """Ops each path cannot quantize or run, found before calibrating. Errors stop the run (exit 2)."""
    findings = []
    for precision in config.precisions:
        if fp32_onnx is not None:
            from compress.export.onnx_preflight import onnx_preflight

            findings += [_finding_dict(f) for f in onnx_preflight(fp32_onnx, precision)]
        if "tflite" in config.formats and handle.module is not None:
            from compress.export.tflite_preflight import tflite_preflight

            findings += [_finding_dict(f) for f in tflite_preflight(handle, precision)]
    errors = [f for f in findings if f["severity"] == "error"]
    if errors:
        first = errors[0]
        raise UsageError(f"{first['format']}: {first['message']} ({first['suggestion']})")
    return findings


TFLITE_NEEDS_EXPORT = ("tflite needs a torch.export-able model; TorchScript cannot be converted: save a .pt2 with "
                       "torch.export.save, or use --format onnx")


def refuse_unconvertible(handle: ModelHandle, config: QuantizeConfig) -> tuple[QuantizeConfig, list[dict]]:
    """Formats the source cannot reach, found before any work: refused (exit 2) when nothing else is asked for,
    else dropped with an error finding while the other formats go on."""
    if handle.module is None:
        reason = f"{handle.source_path} is an ONNX model: it can only be quantized to ONNX (use --format onnx)"
    elif handle.source_format == "torchscript":
        reason = TFLITE_NEEDS_EXPORT
    else:
        return config, []
    if "tflite" not in config.formats:
        return config, []
    if config.formats == ["tflite"]:
        raise UsageError(reason)
    finding = {"format": "tflite", "op": None, "node": None, "layer": None, "severity": "error",
               "message": f"not produced: {reason}", "suggestion": "the other formats go on"}
    return config.model_copy(update={"formats": [f for f in config.formats if f != "tflite"]}), [finding]


def stream_report(handle: ModelHandle, plan: DataPlan, run_dir: Path, artifacts: list[dict], seed: int = 0) -> dict | None:
    """report.json ``streams``: every artifact run over one stream with its own state fed back (stateful models)."""
    from compress.runtimes import open_runner
    from compress.streams import evaluate_stream

    if not handle.input_spec.state:
        return None
    runners = {a["name"]: open_runner(Path(run_dir) / a["path"], spec=plan.spec) for a in artifacts}
    return evaluate_stream(handle, plan, runners, seed=seed)


def _quantize_one(handle: ModelHandle, fmt: str, precision: str, run_dir: Path, plan: DataPlan, config: QuantizeConfig, exclude: list[str]):
    out = staged(run_dir, _filename(precision, fmt))
    if fmt == "onnx":
        from compress.export.onnx_quantize import quantize_onnx

        return quantize_onnx(located(run_dir, _filename("fp32", "onnx")), out, precision, plan.calibration, method=config.calibration,
                             per_channel=config.per_channel, exclude=exclude, seed=config.seed,
                             dynamic_op_types=config.dynamic_op_types if precision == "int8" else ())
    from compress.export.tflite import export_tflite

    result = export_tflite(handle, out, precision, plan.calibration, method=config.calibration,
                           per_channel=config.per_channel, exclude=exclude, seed=config.seed)
    if config.dynamic_op_types and precision == "int8":
        result.notes.append(f"dynamic_op_types ({', '.join(config.dynamic_op_types)}) applies to ONNX only: "
                            "this file is static int8 throughout")
    return result


@holds_run_dir("quantize")
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
    config = config or QuantizeConfig()
    step = step or (lambda message: None)
    run_dir = Path(out_dir)
    config, refused = refuse_unconvertible(handle, config)
    make_run_dir(run_dir)

    step("loading data")
    plan = plan_data(handle, data, config.calib_samples, config.seed)
    heads = heads_for(handle, plan)
    notes: list[str] = []
    if plan.synthetic:
        notes.append("NO DATA: calibrated on random inputs; no accuracy claim is made (top-1 and SQNR marked ~ compare each "
                     "file with fp32 torch on the same random inputs). Pass --data for real numbers.")

    fp32_onnx = None
    if "onnx" in config.formats:
        step("exporting fp32 ONNX")
        fp32_onnx = staged(run_dir, _filename("fp32", "onnx"))
        if handle.module is None:
            shutil.copyfile(handle.onnx_path, fp32_onnx)
        else:
            from compress.export.onnx import export_onnx

            export_onnx(handle, fp32_onnx)
    step("pre-flight")
    preflight = refused + run_preflight(handle, config, fp32_onnx)

    if reference is None:
        step("measuring the reference")
        reference = measure_reference(handle, plan, size_bytes=fp32_onnx.stat().st_size if fp32_onnx else None)
    bench = {"runs": config.bench_runs, "warmup": config.bench_warmup, "threads": config.threads} if config.bench else None

    artifacts: list[dict] = []
    sensitivity = None
    if config.analyze or config.auto_fallback:
        step("sensitivity analysis")
        sensitivity = analyze(handle, plan, config, run_dir)

    for fmt in config.formats:
        if config.include_fp32:
            step(f"fp32 {fmt}: export and verify")
            if fmt == "tflite":
                from compress.export.tflite import export_tflite

                export_tflite(handle, staged(run_dir, _filename("fp32", "tflite")), "fp32", None)
            artifacts.append(verify_artifact(run_dir, _filename("fp32", fmt), "fp32", ["export:fp32"], plan, reference, heads, bench=bench))
        for precision in config.precisions:
            step(f"{precision} {fmt}: quantize, verify, time")
            artifacts.append(_quantize_verified(handle, fmt, precision, run_dir, plan, reference, heads, config, bench, sensitivity, step))

    from compress.advice import explain_speed

    explain_speed(artifacts)
    step("stream evaluation")
    extra = {
        "streams": stream_report(handle, plan, run_dir, artifacts, config.seed),
        "command": "quantize",
        "config": config.model_dump(),
        "preflight": preflight,
        "notes": notes,
        "sensitivity": sensitivity,
    }
    policy = policy or GatePolicy(max_degradation=config.max_degradation)
    report = finish_report(run_dir, handle, plan, reference, artifacts, policy, extra, candidate=is_compressed)
    return QuantizeResult(run_dir, report, preflight)


def _quantize_verified(handle, fmt, precision, run_dir, plan, reference: Reference, heads, config, bench, sensitivity, step) -> dict:
    """Quantize, verify; with auto_fallback keep the most sensitive layers in float until the gate holds."""
    exclude = list(config.exclude)
    ranked = [row["layer"] for row in (sensitivity or []) if row["layer"] not in exclude]
    while True:
        result = _quantize_one(handle, fmt, precision, run_dir, plan, config, exclude)
        techniques = list(result.techniques) + [f"keep-float:{layer}" for layer in exclude]
        entry = verify_artifact(run_dir, result.path.name, result.precision if not exclude else "mixed", techniques, plan,
                                reference, heads, bench=None, notes=list(result.notes), float_ops=list(result.float_ops))
        loss = entry["metrics"]["degradation"]
        needs_fallback = (config.auto_fallback and config.max_degradation is not None and loss is not None
                          and loss > config.max_degradation and ranked and len(exclude) - len(config.exclude) < config.max_fallback_layers)
        if not needs_fallback:
            break
        exclude.append(ranked.pop(0))
        step(f"{precision} {fmt}: degradation {loss:.4f} > {config.max_degradation}; keeping {exclude[-1]} in float")
    if exclude != list(config.exclude):
        entry["notes"].append(f"auto-fallback kept in float: {', '.join(exclude[len(config.exclude):])}")
    entry["name"] = f"{precision}-{fmt}"
    if bench is not None and not is_failed(entry):
        from compress.benchmark import benchmark_artifact

        entry["latency"].append(benchmark_artifact(run_dir / entry["path"], **bench))
    return entry


def analyze(handle: ModelHandle, plan: DataPlan, config: QuantizeConfig, run_dir: Path) -> list[dict]:
    """Per-layer sensitivity on the ONNX graph (the run's fp32 file, else one exported to a temporary folder)."""
    import tempfile

    from compress.export.onnx_quantize import analyze_sensitivity

    eval_data = plan.test if plan.test is not None else plan.calibration
    fp32 = located(run_dir, _filename("fp32", "onnx"))
    with tempfile.TemporaryDirectory(prefix="compress-analyze-") as work:
        if not fp32.exists():
            fp32 = Path(work) / fp32.name
            if handle.module is None:
                shutil.copyfile(handle.onnx_path, fp32)
            else:
                from compress.export.onnx import export_onnx

                export_onnx(handle, fp32)
        return analyze_sensitivity(fp32, plan.calibration, eval_data.take(256, config.seed), config.calibration,
                                   config.per_channel, None)
