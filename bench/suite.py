"""Run one seed model through every baseline and through compress; time all variants interleaved.

Example:
    >>> rows = bench_model("mnist_cnn", runs=50, workdir=Path("/tmp/b"))
"""
from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import numpy as np

from bench import baselines, peers
from compress.data import load_dataset
from compress.evaluate import degradation, task_metrics

BATCHES = (1, 32)
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _outputs(variant, data, batch_size: int = 64) -> list[np.ndarray]:
    chunks = [variant.run(inputs) for inputs, _ in data.batches(batch_size)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def interleaved_p50(variants: list, inputs_by_batch: dict[int, tuple], runs: int, warmup: int = 5, seed: int = 0) -> dict[str, dict[int, float]]:
    """Round-robin timing: every run visits every variant, in a fresh shuffled order, so machine noise and what ran
    just before (a runtime's threads still spinning) hit all of them alike."""
    rng = random.Random(seed)
    result: dict[str, dict[int, float]] = {v.name: {} for v in variants}
    for batch, inputs in inputs_by_batch.items():
        samples: dict[str, list[float]] = {v.name: [] for v in variants}
        for v in variants:
            for _ in range(warmup):
                v.run(inputs)
        for _ in range(runs):
            for v in rng.sample(variants, len(variants)):
                start = time.perf_counter()
                v.run(inputs)
                samples[v.name].append((time.perf_counter() - start) * 1000)
        for name, values in samples.items():
            result[name][batch] = statistics.median(values)
    return result


def _build(name: str, build, failures: list[dict]):
    try:
        return build()
    except Exception as exc:  # a baseline that cannot handle the model is a finding, not a crash
        failures.append({"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})
        return None


def bench_model(name: str, runs: int, workdir: Path) -> dict:
    import torch

    from compress.model import load_model
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
    chosen = {pick["artifact"] for pick in report["recommended"]["by_format"].values() if pick}
    notes = [f"compress recommends {pick['artifact']} for {fmt}: {pick['why']}"
             for fmt, pick in report["recommended"]["by_format"].items() if pick and pick["artifact"].startswith("fp32")]
    for artifact in report["artifacts"]:
        if artifact["precision"] == "fp32":
            continue
        label = f"compress-{artifact['name']}{'*' if artifact['name'] in chosen else ''}"
        variant = _build(label, lambda a=artifact, n=label: baselines.file_variant(n, folder / "compress" / a["path"], 8), failures)
        if variant:
            variants.append(variant)

    reference = task_metrics(test.heads, _outputs(variants[0], test), test.y)
    rows = []
    for v in variants:
        metric = task_metrics(test.heads, _outputs(v, test), test.y)
        rows.append({"variant": v.name, "runtime": v.runtime, "metric": metric["value"], "metric_name": metric["name"],
                     "degradation": degradation(reference, metric), "size_bytes": v.size_bytes,
                     "size_vs_limit": round(v.size_bytes / (params * v.bits / 8), 3), "notes": v.notes})
    inputs = {b: tuple(np.ascontiguousarray(np.resize(a, (b, *a.shape[1:]))) for a in test.x) for b in BATCHES}
    p50 = interleaved_p50(variants, inputs, runs)
    fp32_best = {b: min(p50[v.name][b] for v in variants if v.name.startswith("fp32-")) for b in BATCHES}
    for row in rows:
        for b in BATCHES:
            row[f"p50_ms_b{b}"] = round(p50[row["variant"]][b], 4)
            row[f"vs_best_fp32_b{b}"] = round(p50[row["variant"]][b] / fp32_best[b], 3)
    return {"model": name, "parameters": params, "dataset": handle.dataset["name"], "test_samples": test.size,
            "rows": rows, "failures": failures, "notes": notes, "runs": runs}
