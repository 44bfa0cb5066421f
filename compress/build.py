"""One build path: artifact specs in, verified report entries out (quantize, prune, distill, qat, recipes, tune).

``build(handle, specs, context)`` takes each :class:`ArtifactSpec` through the same steps: export fp32 → pre-flight →
conversion (the fp32 exporter, the format's quantizer, or a converted graph's writer) → verification in the file's
runtime → repair of a static int8 file that fails its gates → timing. The second process that converts TFLite/.pte
beside the ONNX work (compress.steps.ahead) is an execution option of the build, not a route of its own.

Example:
    >>> specs = [ArtifactSpec("onnx", "fp32", "fp32-onnx", "model.fp32.onnx", FP32),
    ...          ArtifactSpec("onnx", "int8", "int8-onnx", "model.int8.onnx")]
    >>> built = build(handle, specs, BuildContext(run_dir, plan, heads, QuantizeConfig(), reference=reference))
    >>> [entry.name for entry in built.artifacts]
    ['fp32-onnx', 'int8-onnx']
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from compress.catalog import FP32_EXPORT, Technique

if TYPE_CHECKING:  # the report models load with pydantic: never at CLI start-up
    from compress.report.model import Artifact

FP32 = "fp32 export"                # the format's fp32 exporter
QUANTIZER = "quantizer"             # the format's quantizer for the spec's precision (repaired when allowed)
GRAPH = "converted graph writer"    # an int8 file written from a converted (QAT or PT2E PTQ) graph as it is
DECODER = "decoder exporter"        # a decoder language model with its KV cache (the format's export_decoder)

AHEAD_PHASE = "second process: TFLite/.pte conversions"  # wall: the wait for it; CPU: all of its work


@dataclass(frozen=True)
class ArtifactSpec:
    """One file to build: its format, the precision asked for, its report ``name`` and ``filename`` in the run
    directory, and how it is produced (``source``: FP32, QUANTIZER or GRAPH).

    ``techniques``: labels before the file's own (the passes the model went through; for GRAPH, all of them);
    ``notes``: notes of the entry; ``phase``: the progress step announced before it (None: none).
    DECODER only: ``decoder`` (a DecoderOptions: context length, block size, algorithm, the source's GGUF grids).
    GRAPH only: ``graph`` (the converted model written by write_int8), ``float_handle``
    (the model before quantization, naming the layers left in float) and ``exact_precision`` (report ``precision``
    as given even when weights stayed float; otherwise such a file is ``mixed``).

    Example:
        >>> ArtifactSpec("tflite", "int8", "int8-tflite", "model.int8.tflite", phase="int8 tflite: quantize and verify")
    """

    format: str
    precision: str
    name: str
    filename: str
    source: str = QUANTIZER
    techniques: tuple = ()
    notes: tuple = ()
    phase: str | None = None
    graph: Any = None
    float_handle: Any = None
    exact_precision: bool = False
    decoder: Any = None


@dataclass(frozen=True)
class DecoderOptions:
    """How a decoder language model's files are written: KV-cache positions, int4 block size, the accuracy algorithm
    (rtn, gptq, awq, smoothquant) and the source's GGUF grids (a grid-aware conversion where the target holds them).

    Example:
        >>> DecoderOptions(max_context=512, block_size=32, algorithm="gptq")
    """

    max_context: int = 512
    block_size: int = 32
    algorithm: str = "rtn"
    grids: Any = None
    layers: Any = None  # a compress.lm.layer_request.LayerRequest: layers kept higher, the embedding's grid


@dataclass
class BuildContext:
    """How a build runs: where, on what data, with which quantizer settings, and which optional steps.

    ``config``: the quantizer settings (a compress.passes.quantize.QuantizeConfig: calibration, per-channel, exclude, seed,
    dynamic op types, auto-fallback). ``reference``: what files are measured against; None: measured during the build
    (after the pre-flight with the first fp32 file's size, or else before the first verification, with its size when it
    is an fp32 export).
    ``preflight``: export the fp32 files quantizers read first, then check every format before verifying anything,
    refusing a format that cannot be made while the others go on (``refusals``). ``second_process``: convert
    TFLite/.pte in a second process meanwhile (compress.steps.ahead). ``repair``: repair failing static int8 files
    (compress.steps.repair; ``policy`` and ``ranked_layers`` judge and rank). ``bench``: benchmark_artifact kwargs (None: not
    timed); ``time_last``: time every file after all are built, in a phase of its own, else each right after its
    verification. ``rank_first``: rank the layers before building anything (--analyze). ``compressed_size``: add ``compressed_size_bytes`` to each entry. ``output_kinds``: give the
    quantizers the reference's output kinds. ``step``: progress callback; ``clock``: the run's compress.steps.phases.PhaseClock.
    """

    run_dir: Path
    plan: Any
    heads: Any
    config: Any
    reference: Any = None
    policy: Any = None
    preflight: bool = False
    second_process: bool = False
    repair: bool = False
    bench: dict | None = None
    time_last: bool = False
    compressed_size: bool = False
    output_kinds: bool = False
    ranked_layers: Callable[[], list[str]] = list
    rank_first: bool = False
    refusals: Refusals | None = None
    step: Callable[[str], None] = lambda message: None
    clock: Any = None
    repair_budget: Any = None  # a compress.steps.repair_budget.RepairBudget shared by the run's repairs (None: one per build)


@dataclass
class Built:
    """What ``build`` made: the report entries (in the order of their formats' first spec), the pre-flight findings
    and the reference the files were measured against."""

    artifacts: list[Artifact]
    preflight: list[dict]
    reference: Any


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
        from compress.errors import GateFailed
        from compress.safety.io import DiskFull, disk_full_cause

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
        from compress.errors import CompressError, first_line

        if all(other in self.reasons for other in self.formats if other != name):
            raise error
        reason = str(error) if isinstance(error, CompressError) else f"{type(error).__name__}: {first_line(error)}"
        self.reasons[name] = reason.removeprefix(f"{name}: ")

    def records(self, artifacts: list[Artifact]) -> list[dict]:
        """report.json ``refused``: each refused format, the precisions it has no file of (``artifacts``: the run's)."""
        made = {(a.format, a.precision) for a in artifacts}
        return [{"format": name, "precisions": [p for p in self.precisions if (name, p) not in made], "reason": reason}
                for name, reason in self.reasons.items()]


def build(handle, specs: list[ArtifactSpec], context: BuildContext) -> Built:
    """Produce, verify, repair and time every spec of ``handle`` (see the module docstring); a format that fails is
    refused when ``context.refusals`` is given, else its error propagates."""
    from compress import catalog as registry
    from compress.safety.rundir import staged

    step, run_dir = context.step, Path(context.run_dir)
    refusals = context.refusals or Refusals([], [], run_dir)
    producing = refusals.producing if context.refusals is not None else lambda name: contextlib.nullcontext()
    formats = list(dict.fromkeys(spec.format for spec in specs))
    ahead = _convert_ahead(handle, formats, context) if context.second_process else None
    later = ahead.formats if ahead is not None else []  # converted there: checked and verified last
    fp32: dict[str, Path] = {}  # exported up front: the files a format quantizes from
    preflight: list[dict] = []
    reference = context.reference
    if context.preflight:
        for fmt in map(registry.get, formats):
            if fmt.quantizes_fp32_file:
                step(f"exporting fp32 {fmt.name}")
                with producing(fmt.name):
                    fmt.export_fp32(handle, staged(run_dir, fmt.filename("fp32")))
                    fp32[fmt.name] = staged(run_dir, fmt.filename("fp32"))
        step("pre-flight")
        preflight += _preflight(handle, context, specs, fp32, refusals, [f for f in formats if f not in later and refusals.wanted(f)])
        if reference is None:
            from compress.steps.pipeline import measure_reference

            step("measuring the reference")
            first = next(iter(fp32.values()), None)
            reference = measure_reference(handle, context.plan, size_bytes=registry.artifact_size(first) if first else None)
    if context.rank_first:
        context.ranked_layers()

    artifacts: list[Artifact] = []

    def make(spec: ArtifactSpec) -> None:
        nonlocal reference
        if spec.phase is not None:
            step(spec.phase)
        if spec.source == FP32 and spec.format not in fp32:
            registry.get(spec.format).export_fp32(handle, staged(run_dir, spec.filename))
        if reference is None:  # measured once, with the size of the fp32 file just exported
            from compress.steps.pipeline import measure_reference

            size = staged(run_dir, spec.filename).stat().st_size if spec.source == FP32 else None
            reference = measure_reference(handle, context.plan, size_bytes=size)
        artifacts.append(_produce_verified(handle, spec, specs, artifacts, context, reference))

    for name in sorted(filter(refusals.wanted, formats), key=later.__contains__):
        with producing(name):  # a format that cannot be made is refused; the others go on
            for spec in (s for s in specs if s.format == name and s.source == FP32):
                make(spec)
            if name in later:  # converted beside the work above (its fp32 file first): checked before it quantizes
                step("pre-flight")
                preflight += _preflight(handle, context, specs, fp32, refusals, [name])
                if not refusals.wanted(name):
                    continue
            for spec in (s for s in specs if s.format == name and s.source != FP32):
                make(spec)

    artifacts.sort(key=lambda a: formats.index(a.format))  # the order asked for
    if ahead is not None:
        ahead.close()  # it has answered everything asked of it
    if context.bench is not None and context.time_last:  # the second process has ended: nothing else runs on the cores
        step("timing the files")
        time_artifacts(run_dir, artifacts, context.bench)
    return Built(artifacts, preflight, reference)


def time_artifacts(run_dir: Path, artifacts: list[Artifact], bench: dict) -> None:
    """Time every verified file (compress.steps.benchmark.benchmark_artifact with ``bench``) into its ``latency``."""
    from compress.steps.benchmark import benchmark_artifact
    from compress.steps.gates import is_failed

    for entry in artifacts:
        if not is_failed(entry):
            entry.latency = [*entry.latency, benchmark_artifact(Path(run_dir) / entry.path, **bench)]


def _verify(spec: ArtifactSpec, context: BuildContext, reference, filename: str, precision: str, techniques: list,
            notes=(), float_ops=(), name: str | None = None, holds_integer_ops: bool | None = None) -> Artifact:
    from compress.steps.pipeline import verify_artifact

    entry = verify_artifact(context.run_dir, filename, precision, [*spec.techniques, *techniques], context.plan, reference,
                            context.heads, name=name, bench=None if context.time_last else context.bench,
                            notes=[*spec.notes, *notes], float_ops=list(float_ops), fmt=spec.format,
                            holds_integer_ops=holds_integer_ops)
    if context.compressed_size:
        from compress.passes.prune import compressed_size

        entry.compressed_size_bytes = compressed_size(Path(context.run_dir) / entry.path)
    return entry


def _produce_verified(handle, spec: ArtifactSpec, specs: list[ArtifactSpec], artifacts: list[Artifact], context: BuildContext,
                      reference) -> Artifact:
    """``spec``'s file, written by its source and verified; a static int8 file failing its gates is repaired."""
    from compress.safety.rundir import staged

    if spec.source == FP32:
        return _verify(spec, context, reference, spec.filename, "fp32", [FP32_EXPORT], name=spec.name)
    if spec.source == DECODER:
        return _decoder_file(handle, spec, context, reference)
    if spec.source == GRAPH:

        path = staged(context.run_dir, spec.filename)
        floats = write_int8(spec.graph, spec.format, path, spec.float_handle)
        precision = spec.precision if spec.exact_precision or not has_float_weights(floats) else "mixed"
        return _verify(spec, context, reference, path.name, precision, [], float_ops=floats, name=spec.name)
    return _quantized(handle, spec, specs, artifacts, context, reference)


def _decoder_file(lm, spec: ArtifactSpec, context: BuildContext, reference) -> Artifact:
    """``spec``'s decoder LM file (``lm``: a compress.lm.model.LanguageModel), written by its format's
    ``export_decoder`` after the options' algorithm, verified on text (compress.steps.lm_verify); with
    ``context.repair``, an int4/8da4w file failing its perplexity gate is repaired."""
    from compress import catalog as registry
    from compress.safety.rundir import staged
    from compress.steps.gates import GatePolicy
    from compress.steps.lm_verify import (REPAIRED, measure_tokens, perplexity_gate_failed, repair_decoder,
                                          verify_decoder)

    options, fmt, policy = spec.decoder, registry.get(spec.format), context.policy or GatePolicy()

    asked = options.layers.plan(lm.module, spec.format, spec.precision, options.block_size, options.grids) \
        if options.layers is not None and options.layers.asks() else None  # the user's per-layer plan, every attempt

    def attempt(label: str, algorithm: str, layers) -> Artifact:
        layers = asked if layers is None else layers
        module, plan, techniques = reference.prepared(spec.precision, algorithm, options.block_size, layers, context.step)
        grids = options.grids if algorithm == "rtn" else None  # a plan keeps the source grids its layers hold
        export = fmt.export_decoder(module, staged(context.run_dir, spec.filename), spec.precision,
                                    max_context=options.max_context, block_size=options.block_size, layers=plan,
                                    grids=grids, progress=context.step)
        return verify_decoder(context.run_dir, spec.filename, spec.format, spec.precision, export, reference,
                              name=spec.name, techniques=[*spec.techniques, *techniques], notes=spec.notes,
                              max_increase=policy.max_degradation, progress=context.step)

    entry = attempt("as configured", options.algorithm, None)
    if context.repair and policy.enabled and spec.precision in REPAIRED and perplexity_gate_failed(entry, policy):
        entry = repair_decoder(attempt, entry, spec.precision, options.algorithm, policy, lm, options.block_size,
                               context.step)
    if context.bench is not None and entry.status != "failed":  # the kept file only
        entry.tokens = measure_tokens(Path(context.run_dir) / entry.path, context.bench, context.step)
    return entry


def _quantized(handle, spec: ArtifactSpec, specs: list[ArtifactSpec], artifacts: list[Artifact], context: BuildContext,
               reference) -> Artifact:
    """The format's quantizer for ``spec``; with ``context.repair``, a failing static int8 file is repaired."""
    from compress import catalog as registry
    from compress.steps.repair import RepairStep, repair, should_repair
    from compress.safety.rundir import located, staged

    config, fmt = context.config, registry.get(spec.format)
    fp32_name = next((s.filename for s in specs if s.format == spec.format and s.source == FP32), fmt.filename("fp32"))

    def attempt(change: RepairStep) -> Artifact:
        exclude = [*config.exclude, *change.keep_float]
        job = _job(handle, spec.format, change.precision or spec.precision, staged(context.run_dir, spec.filename),
                   located(context.run_dir, fp32_name), context, config.model_copy(update=change.update), exclude, reference)
        result = fmt.quantize(job)
        techniques = list(result.techniques) + [Technique("keep-float", layer=layer) for layer in exclude]
        return _verify(spec, context, reference, result.path.name, result.precision if not exclude else "mixed", techniques,
                       result.notes, result.float_ops, name=spec.name, holds_integer_ops=result.holds_integer_ops)

    entry = attempt(RepairStep("as configured"))
    if not context.repair:
        return entry
    fp32_entry = next((a for a in artifacts if a.format == spec.format and a.precision == "fp32"), None)
    skipped = should_repair(entry, spec.precision, context.policy, fp32_entry) if config.auto_fallback else "off"
    if skipped is None:
        from compress.steps.repair_budget import RepairBudget
        from compress.steps.repair_plan import graph_op_types

        if context.repair_budget is None:
            context.repair_budget = RepairBudget(config.repair_budget)
        entry = repair(attempt, entry, config, spec.format, context.policy, context.ranked_layers,
                       step=lambda message: context.step(f"{spec.precision} {spec.format}: {message}"),
                       budget=context.repair_budget, op_types=graph_op_types(located(context.run_dir, fp32_name)))
    elif skipped.startswith("the fp32"):
        entry.notes = [*entry.notes, f"not repaired: {skipped}"]
    entry.name = spec.name
    return entry


def _job(handle, name: str, precision: str, out: Path, fp32: Path | None, context: BuildContext, config, exclude: list[str],
         reference=None):
    from compress import catalog as registry

    kinds = [k.kind for k in reference.kinds] if context.output_kinds and reference is not None and reference.kinds else None
    return registry.QuantizeJob(handle, precision, out, fp32 if registry.get(name).quantizes_fp32_file else None,
                                context.plan.calibration, config.calibration, config.per_channel, exclude, config.seed,
                                list(config.dynamic_op_types), kinds)


def _finding_dict(finding) -> dict:
    return {k: getattr(finding, k) for k in ("format", "op", "node", "layer", "severity", "message", "suggestion")}


def _preflight(handle, context: BuildContext, specs: list[ArtifactSpec], fp32: dict[str, Path], refusals: Refusals,
               formats: list[str]) -> list[dict]:
    """Ops each of ``formats`` cannot quantize or run, found before its verification (``fp32``: the fp32 files exported
    so far). Each format sees the job it will quantize, with nothing excluded yet. A format with an error is refused
    (``refusals``): the others go on; with none left the run stops (exit 2)."""
    from compress import catalog as registry
    from compress.errors import UsageError
    from compress.safety.rundir import staged

    findings = []
    for name in formats:
        fmt = registry.get(name)
        if fmt.preflight is None:
            continue
        with refusals.producing(name):
            for precision in dict.fromkeys(s.precision for s in specs if s.source == QUANTIZER):
                job = _job(handle, name, precision, staged(context.run_dir, fmt.filename(precision)), fp32.get(name), context,
                           context.config, [])
                findings += [_finding_dict(f) for f in fmt.preflight(job)]
            error = next((f for f in findings if f["format"] == name and f["severity"] == "error"), None)
            if error is not None:
                raise UsageError(f"{name}: {error['message']} ({error['suggestion']})")
    return findings


def converts_ahead(config) -> bool:
    """Whether a run with ``config`` converts TFLite/.pte files in a second process while ONNX work goes on (the CLI
    starts that process before it loads the model: compress.steps.ahead.prewarm)."""
    from compress import catalog as registry

    return "onnx" in config.formats and any(registry.get(name).converted_ahead for name in config.formats) and not config.exclude


def _convert_ahead(handle, formats: list[str], context: BuildContext):
    """Start the TFLite/.pte conversions the build will ask for in a second process (compress.steps.ahead), when ONNX
    work can overlap them; None when it cannot help."""
    from compress import catalog as registry
    from compress.steps.ahead import Job, convert_ahead
    from compress.backends.pt2e import eval_mode, export_batch

    config, plan = context.config, context.plan
    if not converts_ahead(config) or plan.calibration is None or handle.module is None or handle.source_format == "torchscript":
        return None

    @contextlib.contextmanager
    def waiting() -> Iterator[None]:
        """A wait for the second process is its own phase; then the interrupted one goes on."""
        interrupted = context.clock.running if context.clock is not None else None
        context.step(AHEAD_PHASE)
        yield
        if interrupted:
            context.step(interrupted)

    converted = [name for name in formats if registry.get(name).converted_ahead]
    precisions = (["fp32"] if config.include_fp32 else []) + [p for p in config.precisions if p == "int8"]  # as asked for
    jobs = [Job(name, precision, plan.calibration if precision == "int8" else None, config.calibration, config.per_channel)
            for name in converted for precision in precisions]
    example = handle.input_spec.example_inputs(batch=export_batch(handle), seed=0)
    program = handle.source_path if handle.source_format == "exported_program" else None
    return convert_ahead(eval_mode(handle.module), example, jobs, program, waiting)


def write_int8(converted, fmt: str, path: Path, float_handle=None) -> list[dict]:
    """Write the converted graph ``converted`` as an int8 ``fmt`` file (its format's ``write_qat``) at ``path``; return the
    weighted ops it left in float (``float_handle``, the model before quantization, names their layers)."""
    from compress.catalog import get

    return get(fmt).write_qat(converted, path, float_handle)


def has_float_weights(float_ops: list[dict]) -> bool:
    """Whether a weighted op kept float weights (float softmax/exp between Q/DQ pairs do not make a file "mixed")."""
    from compress.backends.onnx.quantize import WEIGHTED_OPS
    from compress.backends.tflite.export import WEIGHT_OPERANDS

    return any(op["op"] in WEIGHTED_OPS or op["op"] in WEIGHT_OPERANDS for op in float_ops)
