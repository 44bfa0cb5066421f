"""`python -m bench.pte`: ExecuTorch `.pte` (fp32, int8) beside compress's ONNX and TFLite files of the same model.

Each seed model is exported by compress to all three formats at fp32 and int8 (static, minmax, the same 256
calibration samples; per-channel weights, except that the ``.pte`` keeps per-tensor ones where they are as faithful:
compress.backends.pte.choose), plus ExecuTorch's own defaults as a baseline (``XNNPACKQuantizer`` with
``get_symmetric_quantization_config()``: per-tensor weights, HistogramObserver; the documented
``to_edge_transform_and_lower`` + ``XnnpackPartitioner`` flow, no compress choices). Every file runs in its real
runtime on the test split: task metric, degradation and SQNR against fp32 torch, size over parameters × bits / 8,
and p50 latency at batch 1 and 32 timed interleaved in one run (``bench.suite.interleaved_timing``, one thread each,
onnxruntime spinning off).
Prints one table per model and writes bench/results/pte.json.

Example:
    $ python -m bench.pte --models mnist_cnn,cnn64,transformer --epochs 2 --runs 100
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench.baselines import Variant, fp32_torch, timing_runner
from bench.suite import BATCHES, TIMING_WARMUP, _outputs, interleaved_timing, timing_conditions
from compress.steps.benchmark import describe_conditions
from compress.data import load_dataset
from compress.errors import first_line
from compress.data.evaluate import degradation, sqnr_db, task_metrics
from compress.zoo import ZOO

RESULTS = Path(__file__).parent / "results"
COLUMNS = ["variant", "runtime", "metric", "degr.", "SQNR dB", "bytes", "x limit", *[f"p50 b{b} ms" for b in BATCHES]]


def runner_variant(name: str, path: Path, bits: int, notes: list[str] | None = None) -> Variant:
    """A file in its runtime, one thread (``.pte`` through ExecuTorchRunner; the rest by suffix)."""
    from compress.backends.pte.session import ExecuTorchRunner

    runner = ExecuTorchRunner(path, threads=1) if path.suffix == ".pte" else timing_runner(path, threads=1)
    return Variant(name, runner.name, bits, path.stat().st_size, runner.run, notes or [])


def executorch_default(module: torch.nn.Module, example: tuple, calibration, path: Path) -> Variant:
    """ExecuTorch's documented XNNPACK int8 flow with the quantizer's defaults (per-tensor, HistogramObserver)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    prepared = prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    for inputs, _ in calibration.batches(1):
        prepared(*(torch.from_numpy(a) for a in inputs))
    converted = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(torch.export.export(converted, example), partitioner=[XnnpackPartitioner()])
    path.write_bytes(program.to_executorch().buffer)
    return runner_variant("executorch-xnnpack-default", path, 8, ["XNNPACKQuantizer defaults: per-tensor, HistogramObserver"])


def compress_variants(handle, calibration, folder: Path) -> list[Variant]:
    """compress's fp32 and int8 files in the three formats (same calibration samples, minmax, per-channel)."""
    from compress.backends.onnx.export import export_onnx
    from compress.backends.onnx.quantize import quantize_onnx
    from compress.backends.pte.export import export_pte
    from compress.backends.tflite.export import export_tflite
    from compress.catalog import QuantizeJob

    fp32_onnx = export_onnx(handle, folder / "model.fp32.onnx")
    int8_onnx = quantize_onnx(QuantizeJob(None, "int8", folder / "model.int8.onnx", fp32_onnx, calibration))
    files = [("compress-fp32-onnx", fp32_onnx, 32, []), ("compress-int8-onnx", int8_onnx.path, 8, int8_onnx.notes)]
    for suffix, export in (("tflite", export_tflite), ("pte", export_pte)):
        for precision, bits in (("fp32", 32), ("int8", 8)):
            result = export(QuantizeJob(handle, precision, folder / f"model.{precision}.{suffix}",
                                        calib_data=calibration if precision == "int8" else None))
            files.append((f"compress-{precision}-{suffix}", result.path, bits, [*result.notes, *(f"not delegated/float: {op}" for op in result.float_ops)]))
    return [runner_variant(name, path, bits, notes) for name, path, bits, notes in files]


def bench_model(name: str, epochs: int | None, runs: int, workdir: Path) -> dict:
    from compress.loading.model import load_model
    from compress.zoo import train_zoo_model

    torch.set_num_threads(1)
    handle = load_model(train_zoo_model(name, epochs=epochs).path)
    module = handle.module.eval()
    params = sum(p.numel() for p in module.parameters())
    splits = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])
    calibration, test = splits.calibration(256), splits.test
    example = tuple(torch.from_numpy(a[:1]) for a in test.x)
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    variants = [fp32_torch(module), *compress_variants(handle, calibration, folder),
                executorch_default(module, example, calibration, folder / "executorch-default.pte")]
    reference_outputs = _outputs(variants[0], test)
    reference = task_metrics(test.heads, reference_outputs, test.y)
    rows = []
    for v in variants:
        outputs = _outputs(v, test)
        metric = task_metrics(test.heads, outputs, test.y)
        rows.append({"variant": v.name, "runtime": v.runtime, "metric": metric["value"], "metric_name": metric["name"],
                     "degradation": degradation(reference, metric), "sqnr_db": sqnr_db(reference_outputs[0], outputs[0]),
                     "size_bytes": v.size_bytes, "size_vs_limit": round(v.size_bytes / (params * v.bits / 8), 3), "notes": v.notes})
    inputs = {b: tuple(np.ascontiguousarray(np.resize(a, (b, *a.shape[1:]))) for a in test.x) for b in BATCHES}
    timing = interleaved_timing(variants, inputs, runs)
    for row in rows:
        for b in BATCHES:
            row[f"p50_ms_b{b}"] = timing[row["variant"]][b]["p50_ms"]
    return {"model": name, "parameters": params, "epochs": epochs, "dataset": handle.dataset["name"], "test_samples": test.size,
            "rows": rows, "runs": runs, "timing": timing_conditions(runs, TIMING_WARMUP, threads=1)}


def _table(result: dict) -> Table:
    table = Table(title=f"{result['model']} ({result['parameters']:,} parameters, {result['test_samples']} test samples)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "runtime") else "right")
    for row in result["rows"]:
        table.add_row(row["variant"], row["runtime"], f"{row['metric']:.4f}", f"{row['degradation']:+.4f}", f"{row['sqnr_db']:.1f}",
                      f"{row['size_bytes']:,}", f"{row['size_vs_limit']:.3f}", *[f"{row[f'p50_ms_b{b}']:.3f}" for b in BATCHES])
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo models (default: every seed model)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of the zoo checkpoints (cached); 0 = the zoo's own")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args(argv)
    from importlib.metadata import version

    console = Console(width=160)
    load_start = os.getloadavg()[0]
    path = RESULTS / "pte.json"
    earlier = json.loads(path.read_text()) if path.exists() else {"models": []}
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results = {"date": date, "runs": args.runs,
               "machine": {"description": f"{platform.machine()}, {os.cpu_count()} cpus", "loadavg_1m_at_start": round(load_start, 2)},
               "versions": {"executorch": version("executorch"), "torch": torch.__version__}, "models": []}
    measured = {}
    with tempfile.TemporaryDirectory(prefix="bench-pte-") as work:
        for name in args.models.split(","):
            try:
                measured[name] = bench_model(name, args.epochs or None, args.runs, Path(work))
                console.print(_table(measured[name]))
                console.print(f"timing: {describe_conditions(measured[name]['timing'])}")
            except Exception as exc:  # a model that cannot become a .pte is a finding, not a crash of the suite
                measured[name] = {"model": name, "failed": first_line(exc)}
                console.print(f"{name}: failed: {measured[name]['failed']}")
    # models not measured now keep their earlier rows; every model carries the date it was measured
    previous = {m["model"]: {"date": earlier.get("date"), **m} for m in earlier["models"]}
    order = [*previous, *(name for name in measured if name not in previous)]
    results["models"] = [{**measured[name], "date": date} if name in measured else previous[name] for name in order]
    results["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
