"""Verify exported artifacts in their real runtimes and assemble the run directory's report.

Every verb that produces models (quantize, prune, distill, qat, run) ends here: each artifact file is
loaded by its runtime, run on the real test split, compared with the reference, timed on the local CPU,
and written into report.json (shared/report-contract.md), report.md and report.html.

Example:
    >>> reference = measure_reference(handle, plan)
    >>> entry = verify_artifact(run_dir, "model.int8.onnx", "int8", [Technique("ptq", precision="int8", scheme="static")], plan, reference, heads)
    >>> finish_report(run_dir, handle, plan, reference, [entry], GatePolicy())
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.data import Head
from compress.data.plan import DataPlan
from compress.data.evaluate import degradation, fidelity, task_metrics
from compress.data.intervals import degradation_interval
from compress.data.labels import fit_labels
from compress.steps.gates import GatePolicy
from compress.data.outputs import OutputKind, infer_kinds, output_fidelity, output_names
from compress.catalog import artifact_files, artifact_sha256, artifact_size, format_of, technique_record
from compress.safety.io import disk_full_cause
from compress.loading.model import ModelHandle
from compress.report import new_report, write_report_files
from compress.report.model import Artifact, Gate
from compress.runtimes import open_runner, run_dataset


@dataclass
class Reference:
    """The uncompressed model measured the same way as every artifact."""

    outputs: list[np.ndarray] | None
    metrics: dict | None
    size_bytes: int
    runtime: str
    original: dict | None = None   # set when ``metrics`` are the original model's (see ``measure_reference``)
    kinds: list[OutputKind] | None = None   # each output's kind (compress.data.outputs), decided on the reference outputs
    heads: tuple[Head, ...] | None = None  # the heads that judge the outputs (compress.data.labels), None: the plan's
    labels: list[str] | None = None        # what was done with each label array, in words

    def report_dict(self) -> dict:
        entry = {"metrics": {"task": self.metrics}, "size_bytes": self.size_bytes, "runtime": self.runtime}
        if self.kinds:
            entry["outputs"] = [k.as_dict() for k in self.kinds]
        if self.labels:
            entry["labels"] = self.labels
        if self.original:
            entry["original"] = self.original
        return entry


def heads_for(handle: ModelHandle, plan: DataPlan) -> tuple[Head, ...]:
    if plan.test is not None and plan.test.heads:
        return plan.test.heads
    return handle.heads


def measure_reference(handle: ModelHandle, plan: DataPlan, size_bytes: int | None = None) -> Reference:
    """Eager PyTorch outputs on the test split (ONNX sources: onnxruntime on the source file).

    Fidelity is always against these outputs; the task metric that degradation subtracts from is the original
    model's when the handle carries one measured on the same split (a ``.pt2`` written by `compress prune`).
    """
    if handle.module is None:
        runner = open_runner(handle.onnx_path, spec=handle.input_spec)
    else:
        from compress.backends.pytorch.session import TorchRunner

        runner = TorchRunner.from_module(handle.module, handle.input_spec)
    if plan.test is None:  # no data: outputs on the random probe, for fidelity only (kinds by shape and values)
        outputs = run_dataset(runner, plan.probe) if plan.probe is not None else None
        kinds = output_kinds(handle, handle.heads, outputs, getattr(runner, "output_names", None), False) if outputs else None
        return Reference(outputs, None, size_bytes or Path(handle.source_path).stat().st_size, runner.name, kinds=kinds)
    outputs = run_dataset(runner, plan.test)
    names = getattr(runner, "output_names", None) or output_names(handle.heads, handle.input_spec.names, len(outputs))
    heads, labels = fit_labels(heads_for(handle, plan), outputs, plan.test.y, names)
    metrics = task_metrics(heads, outputs, plan.test.y)
    size = size_bytes or Path(handle.source_path).stat().st_size
    kinds = output_kinds(handle, heads, outputs, names, plan.test.labeled)
    if _same_test_split(handle.original, plan):  # a chained .pt2: degradation against the model before the passes
        return Reference(outputs, handle.original["metrics"], size, runner.name, original=handle.original, kinds=kinds,
                         heads=heads, labels=labels)
    return Reference(outputs, metrics, size, runner.name, kinds=kinds, heads=heads, labels=labels)


def output_kinds(handle: ModelHandle, heads, outputs: list[np.ndarray], names: list[str] | None, labelled: bool) -> list[OutputKind]:
    """Each reference output's kind: ``handle.output_kinds`` (declared) first, then inferred (compress.data.outputs)."""
    from compress.errors import UsageError

    names = names or output_names(handle.heads, handle.input_spec.names, len(outputs))  # the exported files' names
    spec = handle.input_spec
    states = [tuple(t.sample_shape) for t in spec.tensors if t.dtype.startswith("float")]
    try:
        return infer_kinds(outputs, heads, handle.output_kinds, names, labelled, states, {index for _, index in spec.state})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def original_record(handle: ModelHandle, plan: DataPlan, reference: Reference) -> dict | None:
    """What a saved intermediate model remembers of the model before the first pass (see ``save_program``)."""
    if handle.original or reference.metrics is None or plan.name is None:
        return handle.original
    return {"source": handle.source_path, "sha256": handle.source_sha256, "metrics": reference.metrics,
            "dataset": {"name": plan.name, "split_seed": plan.split_seed}}


def _same_test_split(original: dict | None, plan: DataPlan) -> bool:
    """Whether ``original``'s recorded metric was measured on this run's test split (same dataset and split seed)."""
    return bool(original and original.get("metrics") and original.get("dataset") and plan.test is not None
                and original["dataset"].get("name") == plan.name and original["dataset"].get("split_seed") == plan.split_seed)


def combined_fidelity(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Kind-blind fidelity (target parity): the first output's; the others (several heads) under ``outputs``."""
    per_output = [fidelity(r, c) for r, c in zip(reference, candidate)]
    result = dict(per_output[0])
    if len(per_output) > 1:
        result["outputs"] = per_output
        result["sqnr_db"] = min(f["sqnr_db"] for f in per_output)
        result["max_abs_error"] = max(f["max_abs_error"] for f in per_output)
    return result


def evaluate_artifact(path: Path, plan: DataPlan, reference: Reference, heads) -> tuple[dict, str]:
    """Run ``path`` in its runtime on the test split: task metric, degradation and fidelity."""
    runner = open_runner(path, spec=plan.spec)
    if plan.test is None:  # no real data: prove it loads and runs, claim nothing about accuracy
        runner.run(next(plan.calibration.batches(1))[0])
        metrics = {"task": None, "degradation": None, "fidelity": None}
        if reference.outputs is not None and plan.probe is not None:  # vs fp32 torch on the same random inputs; not gated
            metrics["random_input_fidelity"] = combined_fidelity(reference.outputs, run_dataset(runner, plan.probe))
        return metrics, runner.name
    outputs = run_dataset(runner, plan.test)
    task = task_metrics(reference.heads if reference.heads is not None else heads, outputs, plan.test.y)
    return {
        "task": task,
        "degradation": degradation(reference.metrics, task),
        "degradation_interval": degradation_interval(reference.heads if reference.heads is not None else heads, reference.outputs,
                                                     outputs, plan.test.y, reference.metrics if reference.original else None),
        "fidelity": output_fidelity(reference.kinds, reference.outputs, outputs),
    }, runner.name


def verify_artifact(
    run_dir: Path,
    filename: str,
    precision: str,
    techniques: list,
    plan: DataPlan,
    reference: Reference,
    heads,
    name: str | None = None,
    bench: dict | None = None,
    notes: list[str] | None = None,
    float_ops: list[dict] | None = None,
    fmt: str | None = None,
    holds_integer_ops: bool | None = None,
) -> Artifact:
    """One report.json artifact entry (compress.report.model.Artifact), measured on the real file. ``bench``: kwargs for benchmark_artifact or None.
    ``fmt``: the file's format name when the caller knows it (else found from its name). ``holds_integer_ops``: what
    the quantizer found (False: nothing was quantized; None: not checked, left out of the entry).

    The one place where a file gets its final name: writers put it at ``staged(run_dir, filename)``; it is verified
    there and renamed into ``run_dir`` only if it loads and runs. A file that fails is moved to ``failed/`` and comes
    back as a failed entry (``status: failed`` with the reason; see ``compress.steps.gates.verification_gate``).
    """
    from compress.safety.rundir import fail, publish, staged

    run_dir = Path(run_dir)
    path = staged(run_dir, filename)
    files = [p.name for p in artifact_files(path)]  # a multi-file artifact moves as one
    for part in files:
        if not staged(run_dir, part).exists():  # written straight to its final name: verify it all the same
            os.replace(run_dir / part, staged(run_dir, part))
    fmt = fmt or format_of(path).name
    entry = Artifact(name=name or f"{precision}-{fmt}", path=filename, format=fmt, precision=precision,
                     techniques=[technique_record(t) for t in techniques], size_bytes=artifact_size(path),
                     sha256=artifact_sha256(path), verified_in=[], metrics={"task": None, "degradation": None, "fidelity": None},
                     latency=[], float_ops=float_ops or [], notes=notes or [])
    if holds_integer_ops is not None:
        entry.holds_integer_ops = holds_integer_ops
    try:
        metrics, runtime = evaluate_artifact(path, plan, reference, heads)
    except Exception as exc:
        cause = disk_full_cause(exc, run_dir)
        if cause is not None:
            raise cause from exc
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        failed = [fail(run_dir, part) for part in files][0]
        entry.path, entry.status, entry.failure = str(failed.relative_to(run_dir)), "failed", reason
        entry.notes = [*entry.notes, f"FAILED verification, kept in {entry.path} for debugging: {reason}"]
        return entry
    final = [publish(run_dir, part) for part in files][0]
    entry.verified_in, entry.metrics = [runtime], metrics
    if bench is not None:
        from compress.steps.benchmark import benchmark_artifact

        entry.latency = [*entry.latency, benchmark_artifact(final, **bench)]
    return entry


def finish_report(run_dir: Path, handle: ModelHandle, plan: DataPlan, reference: Reference, artifacts: list[Artifact],
                  policy: GatePolicy | None, extra: dict | None = None, candidate=None, refused: list[dict] | None = None) -> dict:
    """Note each artifact's speed against fp32 (compress.steps.advice.explain_speed), judge the artifacts by ``policy``
    (compress.steps.gates: gates, verdict, recommendation), then build the report (compress.report.model.Report) and
    write report.json (its serialisation), report.md and report.html; return report.json's content. ``candidate``: which
    artifacts the gates judge (default compress.steps.gates.is_candidate). ``refused``: formats asked for and not produced (``format``,
    ``precisions``, ``reason``): listed, and each one a failed ``produced`` gate."""
    from compress.steps.advice import check_int8_gains, explain_speed
    from compress.steps.gates import is_candidate, is_failed, judge, verification_gate
    from compress.report.model import Refused
    from compress.zoo.checkpoint import library_versions

    for artifact in artifacts:  # labels prepended later (a recipe's earlier passes) become records too
        artifact.techniques = [technique_record(t) if isinstance(t, str) else t for t in artifact.techniques]
    check_int8_gains(artifacts)  # an "int8" file that is fp32, or no smaller: said, and never recommended as such
    explain_speed(artifacts)  # the one place a run's speed notes are written (`compress bench` rewrites them)
    report = new_report(handle.source_dict(), plan.report_dataset(), reference.report_dict())
    report.environment = library_versions()
    extra = dict(extra or {})
    remeasured = extra.pop("remeasured", None)
    for section, value in extra.items():  # a verb's own sections (command, config, prune, timings...)
        setattr(report, section, value)
    gates, report.verdict, report.recommended = judge(artifacts, policy or GatePolicy(), candidate or is_candidate)
    if remeasured and report.recommended:  # the pick's files were re-timed side by side (compress.steps.remeasure)
        from compress.steps.remeasure import annotated

        report.recommended = annotated(report.recommended, remeasured)
    report.artifacts = artifacts
    report.gates = [produced_gate(r) for r in refused or []] + [verification_gate(a) for a in artifacts if is_failed(a)] + gates
    report.passed = all(g.passed for g in report.gates)
    report.verdict.notes = (reference.labels or []) + report.verdict.notes
    if refused:
        report.refused = [Refused.model_validate(r) for r in refused]
        report.verdict.notes += [f"{r.format} not produced ({', '.join(r.precisions)}): {r.reason}" for r in report.refused]
    return write_report_files(run_dir, report)


def produced_gate(refusal: dict) -> Gate:
    """The gate a format asked for and not produced fails (``refusal``: a report.json ``refused`` entry).

    Example:
        >>> produced_gate({"format": "pte", "precisions": ["fp32", "int8"], "reason": "ExecuTorch could not lower ..."}).passed
        False
    """
    return Gate(name="produced", artifact=refusal["format"], limit=1, value=0, passed=False, judged_by="runtime",
                reason=f"not produced ({', '.join(refusal['precisions'])}): {refusal['reason']}")
