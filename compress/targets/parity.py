"""Parity: the same real inputs through one artifact on several targets, each compared with the PyTorch reference.

Each target runs the artifact with the device runner on the test split (or a deterministic subset of it) and returns
the outputs; they are compared with the reference model's outputs (top-1 agreement, SQNR, max abs error) and with the
first target's outputs (does the file behave on ARM as it did on the workstation?). A target fails when it misses a
tolerance; the result names it.

Example:
    >>> result = verify_on_targets("runs/mnist/model.int8.tflite", ["local", "qemu-arm64"])
    >>> [(t["target"], t["fidelity"]["top1_agreement"], t["passed"]) for t in result["targets"]]
    [('local-cpu', 0.994, True), ('qemu-arm64', 0.994, True)]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compress.errors import UsageError
from compress.recipe.trust import Trust
from compress.targets.run_record import run_record


@dataclass
class Tolerance:
    """What a target must reach. ``None`` switches a check off."""

    min_top1: float | None = 0.95             # agreement of the arg-max with the reference
    min_sqnr_db: float | None = 10.0          # output SQNR against the reference
    max_abs_error: float | None = None        # largest output difference from the reference
    min_agreement: float | None = 0.99        # top-1 agreement with the first target's outputs


def reference_outputs(reference: str, data, samples: int, seed: int = 0):
    """The reference model's outputs on (a deterministic subset of) the real test split, and that subset. Without
    ``data``, the built-in dataset the reference file names (compress.loading.model loads no other)."""
    from compress.data.plan import plan_data
    from compress.loading.model import load_model
    from compress.runtimes import open_runner, run_dataset

    handle = load_model(reference)
    plan = plan_data(handle, data, seed=seed)
    if plan.test is None:
        raise UsageError(f"verify needs real inputs: pass --data (the reference {reference} names no dataset)")
    subset = plan.test.take(samples, seed)
    if handle.module is None:
        runner = open_runner(handle.onnx_path)
    else:
        from compress.backends.pytorch.session import TorchRunner

        runner = TorchRunner.from_module(handle.module, handle.input_spec)
    return run_dataset(runner, subset), subset, runner.name


def _top1(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.ndim != 2 or a.shape[1] < 2:
        return None
    return round(float(np.mean(a.argmax(1) == b.argmax(1))), 6)


def judge(fidelity: dict, agreement: dict | None, tolerance: Tolerance) -> list[str]:
    """The tolerances a target missed, as plain phrases (empty: it passed)."""
    failures = []
    top1, sqnr, error = fidelity.get("top1_agreement"), fidelity.get("sqnr_db"), fidelity.get("max_abs_error")
    if tolerance.min_top1 is not None and top1 is not None and top1 < tolerance.min_top1:
        failures.append(f"top-1 agreement with the reference {top1:.4f} < {tolerance.min_top1}")
    if tolerance.min_sqnr_db is not None and sqnr is not None and sqnr < tolerance.min_sqnr_db:
        failures.append(f"SQNR {sqnr:.1f} dB < {tolerance.min_sqnr_db} dB")
    if tolerance.max_abs_error is not None and error is not None and error > tolerance.max_abs_error:
        failures.append(f"max abs error {error:.4g} > {tolerance.max_abs_error}")
    if agreement and tolerance.min_agreement is not None and agreement["top1_agreement"] is not None \
            and agreement["top1_agreement"] < tolerance.min_agreement:
        failures.append(f"top-1 agreement with {agreement['target']} {agreement['top1_agreement']:.4f} < {tolerance.min_agreement}")
    return failures


def verify_on_targets(
    artifact: str | Path,
    targets: list[str],
    reference: str | Path | None = None,
    data=None,
    samples: int = 256,
    threads: int | None = None,
    tolerance: Tolerance | None = None,
    trust: Trust = Trust(),
    **target_options,
) -> dict:
    """Run ``artifact`` on every target with the same real inputs; compare each with the reference and the first target.

    The report.json of the artifact's run (compress.targets.run_record) must still list the file's sha256 (else
    UsageError); ``reference``/``data`` default to it (``source.path``, ``dataset.source``; a warning in
    ``reference.warnings``/``data.warnings`` when that file changed since the run; code it names only as ``trust``
    allows). A verdict the run reached stays: ``run.failures`` names it and ``passed`` is false; a file the run could
    not verify is not run again. ``run`` is None when no report lists the file.
    Returns ``{"artifact", "reference", "data", "tolerance", "targets": [...], "run", "passed"}``; never raises on a
    mismatch.
    """
    from compress.runtimes.base import runtime_for
    from compress.targets.base import open_target

    artifact = Path(artifact)
    if not artifact.is_file():
        raise UsageError(f"artifact {artifact} not found; check the path")
    if not targets:
        raise UsageError("give at least one target, e.g. --targets local,qemu-arm64")
    if samples < 1:
        raise UsageError("--samples must be at least 1")
    runtime = runtime_for(artifact)
    record = run_record(artifact)
    if record is not None:
        record.check_unchanged()
    tolerance = tolerance or Tolerance()
    run = None if record is None or record.entry is None else {"report": str(record.report_path), "failures": record.failures()}
    if record is not None and record.failed_verification:  # kept under failed/ for debugging: nothing to measure
        return {"artifact": str(artifact), "runtime": runtime, "reference": None, "data": None,
                "tolerance": asdict(tolerance), "targets": [], "run": run, "passed": False}
    reference = reference or (record.reference() if record else None)
    if reference is None:
        raise UsageError(f"no reference model: pass --reference (no report.json next to {artifact.name} names its source)")
    if not Path(reference).is_file():
        raise UsageError(f"reference model {reference} not found; pass --reference")
    data_warning, reference_warning = None, record.reference_warning(str(reference)) if record else None
    if data is None and record is not None:
        data, data_warning = record.data(trust)
    opened = [open_target(t, strict=False, **target_options) for t in targets]  # bad names fail before any work
    seed = (record.split_seed() if record else None) or 0
    expected, subset, reference_runtime = reference_outputs(str(reference), data, samples, seed=seed)
    rows = _target_rows(artifact, runtime, opened, expected, subset, threads, tolerance)
    return {
        "artifact": str(artifact), "runtime": runtime,
        "reference": {"path": str(reference), "runtime": reference_runtime, "warnings": [reference_warning] if reference_warning else []},
        "data": {"name": subset.name, "split": subset.split_name, "samples": subset.size, "fingerprint": subset.fingerprint(),
                 "source": str(data) if data else None, "warnings": [data_warning] if data_warning else []},
        "tolerance": asdict(tolerance), "targets": rows, "run": run,
        "passed": all(r["passed"] for r in rows) and not (run and run["failures"]),
    }


def _target_rows(artifact: Path, runtime: str, opened: list, expected: list, subset, threads: int | None,
                 tolerance: Tolerance) -> list[dict]:
    """One parity row per opened target: fidelity vs the reference, agreement with the first target, the verdict."""
    from compress.data.evaluate import significant
    from compress.steps.pipeline import combined_fidelity
    from compress.targets.base import RunRequest

    rows, first = [], None
    for target in opened:
        result = target.run(RunRequest(artifact, runtime=runtime, threads=threads, inputs=subset.x, want_outputs=True))
        outputs = [np.asarray(o) for o in result.outputs]
        fidelity = combined_fidelity(expected, outputs)
        agreement = None
        if first is not None:
            diff = max(np.max(np.abs(a.astype(np.float64) - b)) for a, b in zip(first[1], outputs))
            agreement = {"target": first[0], "top1_agreement": _top1(first[1][0], outputs[0]), "max_abs_diff": significant(diff)}
        else:
            first = (target.name, outputs)
        failures = judge(fidelity, agreement, tolerance)
        environment = result.report.get("environment", {})
        rows.append({"target": target.name, "device": target.describe(result.report), "emulated": target.emulated,
                     "runtime": runtime, "runtime_version": environment.get("runtime_version"), "fidelity": fidelity,
                     "agreement_with_first": agreement, "passed": not failures, "failures": failures,
                     "warnings": list(getattr(target, "notes", []))})
    return rows


def record_parity(artifact: str | Path, result: dict) -> Path | None:
    """Add each target's parity row to ``artifact``'s ``parity`` list in the report.json next to it (same target replaced)."""
    from compress.steps.recording import record_in_report

    saved = None
    for row in result["targets"]:
        entry = {**row, "data": result["data"], "reference": result["reference"]["path"]}
        saved = record_in_report(artifact, "parity", entry, ("target",)) or saved
    return saved
