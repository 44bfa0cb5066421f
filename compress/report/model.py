"""report.json v2 as typed models; compress/report/schema.json is generated from them (never edited by hand).

v2 keeps every v1 field (shared/report-contract.md) and adds: per-output fidelity by kind (``fidelity.outputs``,
``fidelity.worst``; the flat ``top1_agreement``/``sqnr_db``/``max_abs_error`` describe the worst output), gates that
say what they judged by (``judged_by``, ``reason``), the run's ``verdict`` and the ``recommended`` artifact with reasons.
Every object allows more fields: a verb's own sections (``prune``, ``stages``...) ride along.

Example:
    $ python -m compress.report.model          # regenerate compress/report/schema.json after changing a model
    >>> report_json_schema()["properties"]["schema_version"]
    {'const': 2, 'type': 'integer'}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from compress.catalog import PRECISIONS, RUNTIME_MODULES, SOURCE_FORMATS, formats, schema_choices

SCHEMA_VERSION = 2


def _format_names():
    return [f.name for f in formats()]


def _precision_names():
    return list(PRECISIONS)


def _runtime_names():
    return list(RUNTIME_MODULES)
SCHEMA_PATH = Path(__file__).with_name("schema.json")
OutputKindName = Literal["classes", "probabilities", "sequence", "embedding", "regression", "state"]


def as_given(given, parsed):
    """``parsed`` with every whole number that was given as an int kept an int (a float field parses 1 as 1.0), so a
    report read and written back through the models says ``"limit": 1`` where it said so.

    Example:
        >>> as_given({"limit": 1, "ratio": [1, 0.5]}, {"limit": 1.0, "ratio": [1.0, 0.5]})
        {'limit': 1, 'ratio': [1, 0.5]}
    """
    if type(given) is int and type(parsed) is float:
        return given if parsed == given else parsed
    if type(given) in (list, tuple) and type(parsed) is list and len(given) == len(parsed):
        return [as_given(g, p) for g, p in zip(given, parsed)]
    if type(given) is dict and type(parsed) is dict and given.keys() == parsed.keys():
        return {key: as_given(given[key], value) for key, value in parsed.items()}
    return parsed


class Open(BaseModel):
    """A report object: more fields allowed (a verb's own sections ride along); numbers keep the type they were given."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @field_validator("*", mode="wrap")
    @classmethod
    def _keep_integers(cls, value, parse):
        return as_given(value, parse(value))

    @field_serializer("*", mode="wrap")
    def _write_integers(self, value, write):
        return as_given(value, write(value))


class Tool(Open):
    name: Literal["compress"]
    version: str


class Source(Open):
    path: str
    format: str = Field(**schema_choices(lambda: SOURCE_FORMATS))
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class DatasetInfo(Open):
    name: str
    split: str
    samples: int = Field(ge=0)
    split_seed: int | None = Field(None, description="seed of the train/val/test split")
    source: str | None = Field(None, description="the --data given: a built-in name, package.module:function, or the "
                               "absolute path of a .npz / image folder (verify reuses it)")
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$", description="of the data file's (or folder's) bytes "
                               "when the source is a path: verify warns when it changed")


class Task(Open):
    """A task metric; accuracy-like values are fractions in [0, 1]."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, json_schema_extra={
        "if": {"properties": {"name": {"enum": ["accuracy", "top1_agreement"]}}},
        "then": {"properties": {"value": {"minimum": 0, "maximum": 1}}}})
    name: str
    value: float | None = Field(description="null when not finite (a note names it)")
    higher_is_better: bool


class OutputInfo(Open):
    """One model output: its kind and how it was decided (declared, head, shape, values, state-input)."""

    name: str
    kind: OutputKindName
    kind_from: str
    labelled: bool
    kind_reason: str | None = Field(None, description="How the kind was decided, in words (override: --output-kind NAME=KIND).")


class Interval(Open):
    """A figure's 95 % confidence interval from per-sample outcomes (compress.data.intervals)."""

    low: float | None
    high: float | None
    level: float = Field(gt=0, lt=1)
    samples: int = Field(ge=0)
    method: Literal["wilson", "paired-wilson", "newcombe-unpaired", "bootstrap"]


class OutputFidelity(OutputInfo):
    measures: dict[str, float | None] = Field(description="Only the measures that mean something for the kind.")
    intervals: dict[str, Interval] | None = Field(None, description="The floor measures' 95 % intervals.")


class Worst(Open):
    output: str
    kind: OutputKindName
    measure: str
    value: float | None


class Fidelity(Open):
    """The headline (flat keys, the worst output) plus every output measured by its kind."""

    top1_agreement: float | None = Field(ge=0, le=1)
    sqnr_db: float | None = Field(description="null when not finite (a note names it)")
    max_abs_error: float | None = Field(ge=0)
    cosine: float | None = None
    worst: Worst | None = None
    outputs: list[OutputFidelity] = Field(default_factory=list)


class ReferenceMetrics(Open):
    task: Task | None = None


class Reference(Open):
    metrics: ReferenceMetrics
    size_bytes: int = Field(ge=0)
    outputs: list[OutputInfo] | None = None
    labels: list[str] | None = Field(None, description="What was done with each label array (y): used for which output, or why not.")


class LMQuality(Open):
    """A decoder language model measured in its runtime against the float reference on held-out text
    (compress.lm.quality): perplexity, its ratio's bootstrap interval, top-1 and greedy agreement, a sample."""

    windows: int = Field(ge=1)
    window_length: int = Field(ge=1)
    perplexity: float | None = Field(description="null when not finite (a note names it)")
    reference_perplexity: float | None
    perplexity_ratio: float | None = Field(description="exp(mean NLL - reference mean NLL); null when not finite")
    perplexity_increase: float | None = Field(description="perplexity_ratio - 1: what the gate judges")
    ratio_interval: list[float | None] = Field(min_length=2, max_length=2, description="bootstrap 95 % over windows")
    top1_agreement: float = Field(ge=0, le=1, description="teacher-forced next-token argmax equal to the reference's")
    greedy_agreement: float = Field(ge=0, le=1, description="share of greedy tokens equal to the reference's before the first divergence")
    greedy_tokens: int = Field(ge=0)
    greedy_prompts: int = Field(ge=0)
    sample_prompt: str
    sample_text: str | None = Field(description="the file's greedy continuation of sample_prompt")
    reference_sample_text: str | None
    generation_ran: bool = Field(description="false: no verdict is given")
    verdict: Literal["pass", "fail", "no verdict"]


class ArtifactMetrics(Open):
    task: Task | None
    degradation: float | None
    fidelity: Fidelity | None
    perplexity: LMQuality | None = Field(None, description="decoder language models: judged by this instead of fidelity")
    degradation_interval: Interval | None = Field(None, description="95 % interval of the metric loss (paired on the test samples)")


class LayerChoice(Open):
    """How one layer of a decoder language model was stored (compress.lm.schemes.LayerChoice)."""

    name: str
    kind: Literal["linear", "embedding", "head"]
    precision: str
    block_size: int | None
    symmetric: bool | None
    reason: str


class TokenSpeed(Open):
    """A decoder language model timed as a user meets it (compress.lm.speed); keys of the per-thread maps are thread counts."""

    runtime: str
    prompt_tokens: int = Field(ge=1)
    new_tokens: int = Field(ge=1)
    ttft_s: dict[str, float] = Field(description="time to first token (prefill of the prompt), per thread count")
    decode_tokens_per_s: dict[str, float] = Field(description="decode rate per thread count")
    peak_rss_bytes: dict[str, int] = Field(description="peak resident memory of loading and generating, per thread count")
    kv_cache_bytes: int = Field(ge=0)
    kv_context: int = Field(ge=1)
    roofline: list[dict] = Field(description="decode tokens/s estimates per named ARM core (label: estimate)")


class MeasuredOn(Open):
    host: str
    node: str = Field(description="the Ray node id inside a Ray worker, else the host name")
    window: list[float] = Field(min_length=2, max_length=2, description="start and end, unix seconds")
    wait_s: float = Field(ge=0, description="how long the timing queued behind another one on this host")


class TimingConditions(Open):
    """How a latency was taken (compress.steps.benchmark.describe_conditions says it in one line)."""

    process: Literal["in-process", "child process", "device", "emulator"] = Field(
        description="where the timed loop ran: in the measuring process, a child process on this machine, a remote device, an emulator")
    inputs: str = Field(description="what was fed: 'random' (matching the model's inputs), 'test sample', 'given arrays'")
    threads: int | None = Field(ge=1, description="runtime threads; null: the runtime's default")
    spinning: Literal["on", "off", "runtime default"] = Field(
        description="onnxruntime's idle worker threads spin-wait (on) or sleep (off); other runtimes: their default")
    runs: int = Field(ge=0, description="timed runs taken")
    warmup: int = Field(ge=0, description="untimed runs before them")
    max_runs: int | None = Field(None, ge=1, description="the cap (adaptive) or exact count of timed runs; null with a time budget")
    seconds: float | None = Field(None, gt=0, description="the time budget of the timed runs, if one was given")
    min_runs: int | None = Field(None, ge=1, description="adaptive timing: runs before its interval is first checked; null: fixed count")
    target_half_width: float | None = Field(None, gt=0, description="adaptive timing stops once the median's 95 % CI is within ± this fraction of it")
    stopped: Literal["ci", "runs", "seconds"] | None = Field(
        None, description="why timing ended: ci (the median known to ±target_half_width), runs (count reached), seconds (budget spent)")
    order: Literal["alone", "interleaved", "interleaved-warm"] | None = Field(
        None, description="alone (one file at a time, under the host's timing lock); interleaved round-robin with other "
                          "variants, one run per visit (interleaved) or each timed run right after an untimed one of the "
                          "same file (interleaved-warm)")


class Latency(Open):
    target: str
    runtime: str
    device: str
    batch: int = Field(ge=1)
    threads: int | None
    runs: int = Field(ge=0, description="0 only for a skipped entry")
    warmup: int = Field(ge=0)
    p50_ms: float | None = Field(ge=0, description="null when skipped, or when the timing tool reports no percentiles")
    p90_ms: float | None = Field(ge=0)
    p99_ms: float | None = Field(ge=0)
    mean_ms: float | None = Field(ge=0, description="null only for a skipped entry")
    emulated: bool = Field(description="true: measured under emulation (qemu); never a device latency")
    skipped: str | None = Field(None, description="why the target could not run here")
    measured_on: MeasuredOn | None = Field(None, description="where and when the timing ran, under the host's timing lock")
    remeasured_from: dict | None = Field(None, description="a re-measured entry: the session, p50 and interval of the figure it replaced")
    conditions: TimingConditions | None = Field(None, description="how the timing was taken; null in older reports and skipped entries")


class Technique(Open):
    """One technique applied to an artifact (compress.catalog.Technique.as_dict): ``label`` is its one-line form, the other
    fields spell it out (precision, scheme, calibration, per_channel...)."""

    kind: str
    label: str


class RepairGate(Open):
    gate: str
    value: float | None
    limit: float | None
    passed: bool
    reason: str


class RepairStepRecord(Open):
    step: str = Field(description="what was tried: 'as configured', 'dynamic int8 for MatMul, Gemm', 'keep float: proj', ...")
    techniques: list[Technique]
    size_bytes: int = Field(ge=0)
    passed: bool
    gates: list[RepairGate] = Field(description="every quality gate (labels or fidelity) of this attempt")


class RepairSkip(Open):
    step: str
    why: str = Field(description="why the step cannot change the file (compress.steps.repair_plan)")


class RepairBudgetRecord(Open):
    seconds: float = Field(gt=0, description="what all repairs of the run may take (--repair-budget)")
    spent_s: float = Field(ge=0, description="what the run's repairs had taken when this one ended")
    ran_out: bool
    not_tried: list[str] = Field(description="the steps left when the budget ran out, in the order they would have run")


class Repair(Open):
    steps: list[RepairStepRecord] = Field(description="the file as configured first, then each step tried, in order")
    kept: str | None = Field(description="the step whose file was kept; null: none passed, the file as configured stays")
    summary: str
    skipped: list[RepairSkip] = Field(default_factory=list, description="steps not run because they cannot change the file")
    budget: RepairBudgetRecord | None = Field(None, description="the run's repair time budget (absent in reports before it)")


class SpeedFinding(Open):
    """An artifact's speed against its format's fp32 file at batch 1 (compress.steps.advice.explain_speed); ``note``
    says it in words (the artifact's speed note is derived from this, never parsed back).

    Example:
        >>> SpeedFinding(verdict="same", ms=1.01, fp32_ms=1.0).note
        'same speed as fp32 on this CPU (1.010 ms vs 1.000 ms at batch 1; the 95 % intervals overlap, so no difference is shown): the smaller file wins'
    """

    verdict: Literal["faster", "same", "slower", "not compared"] = Field(
        description="faster/slower: the medians' 95 % intervals separate; not compared: timed in different sessions")
    ms: float | None = Field(description="this file's p50 (ms)")
    fp32_ms: float | None = Field(description="the fp32 file's p50 (ms)")
    session: str | None = Field(None, description="not compared: this file's timing session")
    fp32_session: str | None = Field(None, description="not compared: the fp32 file's timing session")
    why: str | None = Field(None, description="slower: the likely causes, in words")

    @property
    def note(self) -> str:
        if self.verdict == "not compared":
            return (f"speed not compared with fp32: timed in session {self.session}, fp32 in {self.fp32_session}; "
                    "`compress bench` on both times them together")
        figures = f"{self.ms:.3f} ms vs {self.fp32_ms:.3f} ms at batch 1"
        if self.verdict == "faster":
            return f"{self.fp32_ms / self.ms:.2f}x faster than fp32 on this CPU ({figures}; the 95 % intervals do not overlap)"
        if self.verdict == "same":
            return (f"same speed as fp32 on this CPU ({figures}; the 95 % intervals overlap, so no difference is shown): "
                    "the smaller file wins")
        return f"not faster than fp32 on this CPU ({figures}; slower beyond the 95 % intervals): {self.why}"


class GainFinding(Open):
    """A quantized file that gains nothing over its format's fp32 file (compress.steps.advice.check_int8_gains): it is
    all float (listed as fp32 from then on), or no smaller; ``note`` says it (derived, never parsed back).

    Example:
        >>> GainFinding(finding="no size gain", fp32="fp32-onnx", size_bytes=99, fp32_size_bytes=100).headline
        'gains nothing in size: 0.990x the fp32 file (99 vs 100 bytes)'
    """

    finding: Literal["all float", "no size gain"]
    fp32: str = Field(description="the fp32 artifact it was compared with")
    size_bytes: int = Field(ge=0)
    fp32_size_bytes: int = Field(ge=0)
    cause: str | None = Field(None, description="all float: 'repair kept everything float' or 'nothing was quantized'")
    same_bytes: bool = Field(False, description="all float: the very bytes of the fp32 file")
    listed_as: str | None = Field(None, description="all float: the precision it was made as")

    @property
    def headline(self) -> str:
        if self.finding == "all float":
            what = f"this is the fp32 file (same bytes as {self.fp32})" if self.same_bytes else "this is an fp32 file (no integer weights)"
            return f"{self.cause}: {what}"
        return (f"gains nothing in size: {self.size_bytes / max(self.fp32_size_bytes, 1):.3f}x the fp32 file "
                f"({self.size_bytes:,} vs {self.fp32_size_bytes:,} bytes)")

    @property
    def note(self) -> str:
        if self.finding == "all float":
            return f"{self.headline}; listed as precision fp32, never recommended as {self.listed_as}"
        return f"{self.headline}; not recommended for size"


def unset(model: BaseModel, field: str) -> None:
    """``model.field`` back to its default and left out of report.json again (as if never set).

    Example:
        >>> unset(artifact, "speedup_vs_fp32")
    """
    setattr(model, field, type(model).model_fields[field].get_default(call_default_factory=True))
    model.model_fields_set.discard(field)


class Artifact(Open):
    name: str
    path: str
    format: str = Field(**schema_choices(_format_names))
    precision: str = Field(**schema_choices(_precision_names))
    techniques: list[Technique | str] = Field(description="Records (kind, label, precision, scheme...); earlier v2 reports hold the labels alone.")
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    verified_in: list[Annotated[str, Field(**schema_choices(_runtime_names))]]
    metrics: ArtifactMetrics
    latency: list[Latency]
    repair: Repair | None = Field(None, description="present when a static int8 file failed its quality gates (compress.steps.repair), "
                                  "or an int4/8da4w language model its perplexity gate (compress.steps.lm_verify)")
    layers: list[LayerChoice] | None = Field(None, description="decoder language models: every layer's precision and why")
    tokens: TokenSpeed | None = Field(None, description="decoder language models: token metrics in place of batch latency")
    float_ops: list[dict] = Field(default_factory=list, description="ops left in float in a quantized file ({op, ...})")
    notes: list[str] = Field(default_factory=list, description="what a user should know about this file, in words")
    status: Literal["failed"] | None = Field(None, description="failed: it did not load or run; kept under failed/")
    failure: str | None = Field(None, description="why verification failed")
    compressed_size_bytes: int | None = Field(None, ge=0, description="zip-compressed size (prune: what sparsity saves in a download)")
    holds_integer_ops: bool | None = Field(None, description="false: its quantizer left no integer op in it (nothing was "
                                           "quantized: an fp32 file); absent where not checked")
    speedup_vs_fp32: float | None = Field(None, description="fp32 p50 / this p50 at batch 1, same timing session")
    speed: SpeedFinding | None = Field(None, description="its speed against fp32; the speed note is derived from it")
    gain: GainFinding | None = Field(None, description="set when it gains nothing over fp32; the note is derived from it")


class Gate(Open):
    name: str
    artifact: str | None
    limit: float
    value: float | None
    passed: bool
    judged_by: Literal["runtime", "labels", "fidelity", "perplexity", "size", "latency"]
    reason: str
    outcome: Literal["passed", "failed", "undecided"] | None = Field(None, description="undecided: the figure's 95 % interval "
                                                                      "straddles the limit (not passed: exit 1, never recommended)")
    interval: Interval | None = None
    samples_needed: int | None = Field(None, description="undecided: about how many test samples would resolve the gate")


class Verdict(Open):
    """What was judged and why: gates on/off, by labels and/or fidelity, the failures in words."""

    gates: Literal["on", "off"]
    judged_by: list[str]
    summary: str
    notes: list[str] = Field(default_factory=list)


class Recommendation(Open):
    artifact: str
    why: str


class Excluded(Open):
    artifact: str
    why: str


class Remeasured(Open):
    """An undecided pick's files re-timed side by side (compress.steps.remeasure)."""

    session: str = Field(description="the session of the new figures: the one they replace, then '/remeasure'")
    replaced_session: str | None
    files: list[str] = Field(description="the artifacts re-timed: every local file the undecided session timed")
    passes: int = Field(ge=1, description="interleaved passes run (bounded)")
    runs_per_file: int = Field(ge=1, description="timed runs of each file, all passes pooled")
    seconds: float = Field(ge=0)
    decided: bool = Field(description="false: still undecided with the new figures")
    stopped: Literal["decided", "passes", "seconds"]
    changed: dict[str, str | None] | None = Field(description="the local pick before and after (from, to); null: the same")


class Recommended(Open):
    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)
    local_cpu: Recommendation | None = Field(alias="local-cpu")
    by_format: dict[str, Recommendation | None]
    excluded: list[Excluded] = Field(default_factory=list, description="Artifacts never recommended, with the reason.")
    remeasured: Remeasured | None = Field(None, description="present when the pick was undecided and its files were re-timed")


class PhaseTime(Open):
    wall_s: float = Field(ge=0, description="wall-clock seconds")
    cpu_s: float = Field(ge=0, description="CPU seconds of the whole process (all threads) and its finished child processes")


class Phase(PhaseTime):
    phase: str


class Timings(Open):
    """Where the run's time went (compress.steps.phases): one row per progress step, in order; not deterministic."""

    phases: list[Phase]
    total: PhaseTime = Field(description="from the verb's start to writing the report; at least the phases' sum")


class Refused(Open):
    """A format asked for and not produced (its conversion or pre-flight failed); the other formats went on."""

    format: str = Field(**schema_choices(_format_names))
    precisions: list[str] = Field(description="The precisions of this format that have no file in the run.")
    reason: str


class Report(Open):
    """The run directory's report.json (schema_version 2)."""

    schema_version: Literal[2]
    tool: Tool
    created: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
    source: Source
    dataset: DatasetInfo | None
    reference: Reference
    artifacts: list[Artifact]
    gates: list[Gate]
    passed: bool
    verdict: Verdict
    recommended: Recommended | None = None
    timings: Timings | None = None
    refused: list[Refused] = Field(default_factory=list, description="Formats asked for and not produced, with the "
                                   "reason; each also fails a 'produced' gate, so the run exits 1.")


def report_json_schema() -> dict:
    """The JSON Schema of report.json v2, as shipped in compress/report/schema.json."""
    schema = Report.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://github.com/compress/compress/report.schema.json",
            **schema, "title": "compress report.json",
            "description": "The run directory's report (schema_version 2; v1 fields kept). Generated from compress/report/model.py."}


if __name__ == "__main__":
    SCHEMA_PATH.write_text(json.dumps(report_json_schema(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
