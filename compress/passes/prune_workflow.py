"""`compress prune` as a Python API: prune, fine-tune, export dense and pruned files, verify each, write the run.

Example:
    >>> report = run_prune(load_model("mnist_cnn.pt"), PruneConfig(method="l1-structured", sparsity=0.5), out_dir="runs/p")
    >>> report["prune"]["parameters_after"] < report["prune"]["parameters_before"]
    True
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.catalog import technique_label
from compress.passes.workflow_common import FORMATS, compare_latency, export_verified, load_splits
from compress.steps.phases import PhaseClock
from compress.safety.rundir import holds_run_dir

if TYPE_CHECKING:
    from compress.report.model import Artifact


@holds_run_dir("prune")
def run_prune(handle, config, data=None, out_dir: str | Path = "runs/prune", formats: tuple[str, ...] = FORMATS,
              int8: bool = True, bench: dict | None = None, policy=None,
              on_epoch=None, step=None) -> dict:
    """Prune ``handle`` (compress.passes.prune), export dense and pruned files, verify them, write the run directory.

    Artifacts: ``dense-fp32-*`` (the unpruned model, for size and latency side by side), ``fp32-*`` and ``int8-*``
    (the pruned model, int8 by the same PTQ as `compress quantize`), plus ``model.pt2`` for chaining. ``policy``: the
    compress.steps.gates.GatePolicy judging them (default gates when None). Returns the report.
    """
    from compress.build import FP32, ArtifactSpec, BuildContext, build
    from compress.loading.model import save_program
    from compress.passes.prune import apply, check_prunable
    from compress.passes.quantize import QuantizeConfig
    from compress.steps.pipeline import finish_report, original_record

    clock = PhaseClock()
    step = clock.wrap(step)
    check_prunable(handle)
    run_dir = Path(out_dir)  # created and locked by holds_run_dir
    splits, plan, heads = load_splits(clock, handle, data, config.seed)
    clock.begin("pruning and fine-tuning")
    pruned = apply(handle, config, splits, on_epoch)
    # the dense fp32 files: the latency baseline, and the first one's size is the reference's
    dense = [ArtifactSpec(fmt, "fp32", f"dense-fp32-{fmt}", f"dense.fp32.{fmt}", FP32, notes=("the unpruned model, for comparison",),
                          phase=f"dense fp32 {fmt}: export and verify") for fmt in formats]
    built = build(handle, dense, BuildContext(run_dir, plan, heads, QuantizeConfig(seed=config.seed), bench=bench,
                                              compressed_size=True, step=step))
    artifacts, reference = built.artifacts, built.reference
    step("saving model.pt2 (for chaining)")
    save_program(pruned, run_dir / "model.pt2", original=original_record(handle, plan, reference))
    artifacts += export_verified(pruned, run_dir, "model", list(formats), int8, plan, reference, heads, bench, seed=config.seed, step=step)
    summary = pruned.metrics["prune"]
    _size_notes(artifacts, config)
    compare_latency(artifacts, "dense-")
    extra = {"command": "prune", "config": config.model_dump(mode="json"), "prune": summary,
             "chain": {"model": "model.pt2", "techniques": [technique_label(t) for t in pruned.techniques]}, "timings": clock.record()}
    return finish_report(run_dir, handle, plan, reference, artifacts, policy, extra)


def _size_notes(artifacts: list[Artifact], config) -> None:
    """Say what shrank: the file itself (structured) or only its compressed download (zeros in a dense file)."""
    dense = {a.format: a for a in artifacts if a.name.startswith("dense-")}
    for artifact in artifacts:
        base = dense.get(artifact.format)
        if base is None or artifact is base:
            continue
        ratio = artifact.size_bytes / base.size_bytes
        zipped = artifact.compressed_size_bytes / base.compressed_size_bytes
        if config.structured:
            note = f"{ratio:.2f}x the dense fp32 file ({artifact.size_bytes:,} vs {base.size_bytes:,} bytes): channels were removed"
        else:
            note = (f"dense file {ratio:.2f}x the unpruned one: zeros are still stored; compressed (deflate, "
                    f"as in an APK or a zip download) {artifact.compressed_size_bytes:,} bytes = {zipped:.2f}x "
                    f"the unpruned file's {base.compressed_size_bytes:,}")
        artifact.notes = [*artifact.notes, note]
