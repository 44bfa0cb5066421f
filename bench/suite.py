"""Run one seed model through every baseline and through compress; time all variants interleaved.

One timing method behind every figure: all variants, compress's files included, are timed in this process,
interleaved round-robin on the first test samples (``timing_conditions`` records how), with compress's statistics
(compress.steps.benchmark.summarize). compress's recommendation is re-judged on those same records, so the line that
quotes it and the table agree.

Example:
    >>> rows = bench_model("mnist_cnn", runs=50, workdir=Path("/tmp/b"))
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from bench import baselines, peers
from compress.steps.benchmark import interleaved_samples, summarize
from compress.data import load_dataset
from compress.data.evaluate import degradation, task_metrics

BATCHES = (1, 32)
TIMING_WARMUP = 5
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _outputs(variant, data, batch_size: int = 64) -> list[np.ndarray]:
    chunks = [variant.run(inputs) for inputs, _ in data.batches(batch_size)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def interleaved_timing(variants: list, inputs_by_batch: dict[int, tuple], runs: int, warmup: int = TIMING_WARMUP,
                       seed: int = 0, clock=time.perf_counter, warm: bool = True) -> dict[str, dict[int, dict]]:
    """Round-robin timing (compress.steps.benchmark.interleaved_samples: shuffled per round, each timed run right after an
    untimed one of the same variant unless ``warm=False``). Returns compress.steps.benchmark.summarize statistics (p50, the
    median's 95 % CI...) per variant and batch. ``clock``: wall time, or ``time.thread_time`` for CPU time."""
    result: dict[str, dict[int, dict]] = {v.name: {} for v in variants}
    for batch, inputs in inputs_by_batch.items():
        samples = interleaved_samples({v.name: functools.partial(v.run, inputs) for v in variants}, runs, warmup, seed,
                                      clock, warm=warm)
        for name, values in samples.items():
            result[name][batch] = summarize(values, batch)
    return result


def timing_conditions(runs: int, warmup: int = TIMING_WARMUP, threads: int | None = None) -> dict:
    """How the suite times (a report.json ``latency[].conditions``; compress.steps.benchmark.describe_conditions says it)."""
    return {"process": "in-process", "order": "interleaved-warm", "inputs": "test sample", "threads": threads, "spinning": "off",
            "runs": runs, "warmup": warmup, "max_runs": runs, "stopped": "runs"}


def rejudge(report: dict, timing: dict[str, dict[int, dict]], labels: dict[str, str], conditions: dict) -> dict:
    """compress's recommendation re-made from the suite's timing: each artifact's latency becomes the suite's records
    for its variant (``labels``: artifact name -> variant name; an artifact without one has no latency, so it is not
    recommended), its speed notes follow, and the report's own policy judges again. Returns the new ``recommended``."""
    from compress.report import read_report, report_document
    from compress.steps.advice import explain_speed
    from compress.steps.gates import policy_of, recommend_judged

    for artifact in report["artifacts"]:
        stats = timing.get(labels.get(artifact["name"], ""), {})
        artifact["latency"] = [{"target": "local-cpu", "runtime": (artifact.get("verified_in") or ["?"])[0],
                                "device": "bench suite (in-process)", "batch": batch, "threads": conditions["threads"],
                                "runs": conditions["runs"], "warmup": conditions["warmup"], "emulated": False,
                                "conditions": conditions, **stats[batch]} for batch in sorted(stats)]
    model = read_report(report)
    explain_speed(model.artifacts)
    recommended = recommend_judged(model.artifacts, policy_of(model))
    report["artifacts"] = report_document(model)["artifacts"]  # the table's latencies and the notes they give
    return recommended.model_dump(by_alias=True, exclude_unset=True)


def _build(name: str, build, failures: list[dict]):
    try:
        return build()
    except Exception as exc:  # a baseline that cannot handle the model is a finding, not a crash
        failures.append({"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})
        return None


def bench_model(name: str, runs: int, workdir: Path) -> dict:
    import torch

    from compress.loading.model import load_model
    from compress.recipe import load_recipe
    from compress.recipe.run import run_recipe
    from compress.zoo import train_zoo_model

    trained = train_zoo_model(name)
    handle = load_model(trained.path)
    module = handle.module
    params = sum(p.numel() for p in module.parameters())
    splits = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])
    calibration, test = splits.calibration(256), splits.test
    names = handle.input_spec.names
    example = tuple(torch.from_numpy(a[:1]) for a in test.x)
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    failures: list[dict] = []
    fp32_path = folder / "fp32.onnx"
    builders = [
        ("fp32-torch", lambda: baselines.fp32_torch(module)),
        ("fp32-ort", lambda: baselines.fp32_onnx(module, example, names, fp32_path)),
        ("fp32-litert", lambda: baselines.fp32_litert(module, example, folder / "fp32.tflite")),
        ("ort-static-default", lambda: baselines.ort_static_default(fp32_path, calibration, names, folder / "ort-static.onnx")),
        ("ort-dynamic-default", lambda: baselines.ort_dynamic_default(fp32_path, folder / "ort-dynamic.onnx")),
        ("litert-pt2e-default", lambda: baselines.litert_pt2e_default(module, example, calibration, folder / "pt2e.tflite")),
        ("torchao-int8-dynamic", lambda: baselines.torchao_variant(module, "dynamic")),
        ("torchao-int8-weight", lambda: baselines.torchao_variant(module, "weight")),
        *((f"{peer}-int8-default", lambda peer=peer: baselines.peer_default(peer, fp32_path, calibration, folder / f"{peer}.onnx"))
          for peer in peers.PEERS if not peers.missing(peer)),
    ]
    variants = [v for n, b in builders if (v := _build(n, b, failures)) is not None]
    report = run_recipe(load_recipe(RECIPES / f"{name}.yaml"), out_dir=folder / "compress").report
    labels = {}  # every compress file is timed here, fp32 too: its recommendation is re-made from these timings
    for artifact in report["artifacts"]:
        if artifact.get("status") == "failed":
            continue
        label = f"compress-{artifact['name']}"
        bits = 32 if artifact["precision"] == "fp32" else 8
        variant = _build(label, lambda a=artifact, n=label, b=bits: baselines.file_variant(n, folder / "compress" / a["path"], b), failures)
        if variant:
            variants.append(variant)
            labels[artifact["name"]] = label

    reference = task_metrics(test.heads, _outputs(variants[0], test), test.y)
    rows = []
    for v in variants:
        metric = task_metrics(test.heads, _outputs(v, test), test.y)
        rows.append({"variant": v.name, "runtime": v.runtime, "metric": metric["value"], "metric_name": metric["name"],
                     "degradation": degradation(reference, metric), "size_bytes": v.size_bytes,
                     "size_vs_limit": round(v.size_bytes / (params * v.bits / 8), 3), "notes": v.notes})
    inputs = {b: tuple(np.ascontiguousarray(np.resize(a, (b, *a.shape[1:]))) for a in test.x) for b in BATCHES}
    timing = interleaved_timing(variants, inputs, runs)
    conditions = timing_conditions(runs)
    recommended = rejudge(report, timing, labels, conditions)
    chosen = {labels[pick["artifact"]] for pick in recommended["by_format"].values() if pick}
    notes = [f"compress recommends {pick['artifact']} for {fmt}: {pick['why']}"
             for fmt, pick in recommended["by_format"].items() if pick and pick["artifact"].startswith("fp32")]
    p50 = {v.name: {b: timing[v.name][b]["p50_ms"] for b in BATCHES} for v in variants}
    fp32_best = {b: min(p50[v.name][b] for v in variants if v.name.startswith("fp32-")) for b in BATCHES}
    for row in rows:
        for b in BATCHES:
            row[f"p50_ms_b{b}"] = p50[row["variant"]][b]
            row[f"vs_best_fp32_b{b}"] = round(p50[row["variant"]][b] / fp32_best[b], 3)
        row["variant"] += "*" if row["variant"] in chosen else ""
    return {"model": name, "parameters": params, "dataset": handle.dataset["name"], "test_samples": test.size,
            "rows": rows, "failures": failures, "notes": notes, "runs": runs, "timing": conditions}
