"""`python -m bench.transformer_speed`: how much faster than fp32 the zoo transformer gets at batch 1, and why not more.

Variants, all on the same checkpoint and the real test split: fp32 in torch, LiteRT and onnxruntime (compress's
export; its transformer fusions; onnxruntime with its own runtime SkipLayerNormFusion switched off), int8 static and
dynamic-MatMul/Gemm on the unfused and the fused graph, ORT's int8-dynamic, and the files `compress quantize` writes
(its measured ONNX pick, and its int8 TFLite in LiteRT). Timed interleaved in one run at batch 1, each timed run right
after an untimed one of the same variant (steady state), two ways: wall-clock p50 with each runtime's default threads
(what `python -m bench` reports) and the calling thread's CPU-time p50 with one thread (stable on a busy machine); and
a third time with one run per visit ("cold": each run starts with the caches the previous variant left, the weights
partly evicted). ``vs best fp32`` divides the best fp32 p50 by the variant's. An onnxruntime profile (one thread)
splits the fp32 and picked int8 files' time into GEMMs and the rest, and gives the GEMM throughput: the ceiling of the
speed-up if every non-GEMM op took no time. Prints a table; writes bench/results/transformer_speed.json.

Example:
    $ python -m bench.transformer_speed --runs 200
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from rich.console import Console
from rich.table import Table

from bench.baselines import Variant, fp32_litert, fp32_torch
from bench.suite import _outputs, interleaved_timing
from compress.data import load_dataset
from compress.data.evaluate import degradation, task_metrics

RESULTS = Path(__file__).parent / "results"
TORCH_THREADS = torch.get_num_threads()
GEMM_OPS = {"MatMul", "FusedMatMul", "Gemm", "QLinearMatMul", "QGemm", "MatMulInteger", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "Attention", "QAttention"}


def ort_variant(name: str, path: Path, threads: int | None, disabled: tuple[str, ...] = ()) -> Variant:
    """A file in onnxruntime as the bench suite times it (compress's session settings, idle threads not spinning: the
    runtimes share the cores), optionally without some of ORT's own graph fusions."""
    import onnxruntime as ort

    from compress.targets.device_runner import ort_session_options

    session = ort.InferenceSession(str(path), ort_session_options(ort, threads, spinning=False), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=list(disabled))
    names = [i.name for i in session.get_inputs()]
    return Variant(name, "onnxruntime", 8 if ".int8" in name or name.startswith("int8") else 32, path.stat().st_size,
                   lambda inputs: session.run(None, dict(zip(names, inputs))))


def cpu_time_p50(variants: list[Variant], inputs: tuple, runs: int, warmup: int = 5, seed: int = 0, warm: bool = True) -> dict[str, float]:
    """Interleaved (shuffled per round) p50 of the calling thread's CPU time per run (runners opened with 1 thread);
    ``warm=False``: one run per visit, so each timed run starts with the caches the previous variant left."""
    timing = interleaved_timing(variants, {1: inputs}, runs, warmup, seed, clock=time.thread_time, warm=warm)
    return {name: by_batch[1]["p50_ms"] for name, by_batch in timing.items()}


def gemm_profile(path: Path, inputs: tuple, runs: int) -> dict:
    """Per-run kernel time of ``path`` in onnxruntime (one thread), GEMM ops apart from the rest."""
    import onnxruntime as ort

    from compress.targets.device_runner import ort_session_options

    with tempfile.TemporaryDirectory() as work:
        options = ort_session_options(ort, 1)
        options.enable_profiling, options.profile_file_prefix = True, str(Path(work) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = dict(zip((i.name for i in session.get_inputs()), inputs))
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    gemm = sum(ms for op, ms in by_op.items() if op in GEMM_OPS)
    total = sum(by_op.values())
    return {"total_ms": round(total, 3), "gemm_ms": round(gemm, 3), "gemm_share": round(gemm / total, 3),
            "by_op_ms": {op: round(ms, 3) for op, ms in by_op.most_common()}}


def gemm_macs(module: torch.nn.Module, inputs: tuple) -> int:
    """Multiply-accumulates of the model's matrix products at batch 1: every Linear plus the attention's QKᵀ and AV."""
    macs = 0

    def count(layer, args, output):
        nonlocal macs
        macs += output.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        module(*(torch.from_numpy(a) for a in inputs))
    for hook in hooks:
        hook.remove()
    steps, width = module.position.shape
    return macs + 2 * steps * steps * width


def build(workdir: Path, epochs: int | None):
    """Every variant's file: compress's fp32 export, its fusion, the int8 candidates and compress's own pick."""
    from compress.backends.onnx.export import export_onnx
    from compress.backends.onnx.fusions import fuse_transformer
    from compress.backends.onnx.quantize import quantize_onnx
    from compress.backends import get as get_format
    from compress.backends.registry import QuantizeJob
    from compress.loading.model import load_model
    from compress.zoo import train_zoo_model

    handle = load_model(train_zoo_model("transformer", epochs=epochs).path)
    splits = load_dataset(handle.dataset["name"]).split(handle.dataset["split_seed"])
    calibration = splits.calibration(256)
    files = {"fp32": export_onnx(handle, workdir / "fp32.onnx")}
    fusion = fuse_transformer(onnx.load(str(files["fp32"])))
    files["fp32-fused"] = workdir / "fp32-fused.onnx"
    onnx.save(fusion.model, str(files["fp32-fused"]))
    for source in ("fp32", "fp32-fused"):
        tag = source.replace("fp32", "int8")
        files[f"{tag}-static"] = quantize_onnx(QuantizeJob(None, "int8", workdir / f"{tag}-static.onnx", files[source],
                                                           calibration)).path
        dynamic_matmul = QuantizeJob(None, "int8", workdir / f"{tag}-dynamic-matmul.onnx", files[source], calibration,
                                     dynamic_op_types=["MatMul", "Gemm"])
        files[f"{tag}-dynamic-matmul"] = quantize_onnx(dynamic_matmul).path
    files["int8-dynamic"] = quantize_onnx(QuantizeJob(None, "int8-dynamic", workdir / "int8-dynamic.onnx",
                                                      files["fp32"])).path
    picked = get_format("onnx").quantize(QuantizeJob(handle, "int8", workdir / "compress-int8.onnx", files["fp32"], calibration))
    files["compress-int8"] = picked.path
    tflite = get_format("tflite").quantize(QuantizeJob(handle, "int8", workdir / "compress-int8.tflite", None, calibration))
    files["compress-int8-tflite"] = tflite.path
    return handle, splits.test, files, fusion.describe(), picked


def variants(handle, files: dict[str, Path], workdir: Path, example: tuple, threads: int | None) -> list[Variant]:
    torch.set_num_threads(threads or TORCH_THREADS)
    fp32_tflite = workdir / "fp32.tflite"
    if not fp32_tflite.exists():
        fp32_litert(handle.module, example, fp32_tflite)
    built = [fp32_torch(handle.module), _litert("fp32-litert", fp32_tflite, threads)]
    built.append(ort_variant("fp32-ort", files["fp32"], threads))
    built.append(ort_variant("fp32-ort-no-skiplayernorm-fusion", files["fp32"], threads, ("SkipLayerNormFusion",)))
    built.append(ort_variant("fp32-ort-fused", files["fp32-fused"], threads))
    built += [ort_variant(name, path, threads) for name, path in files.items()
              if name.startswith(("int8", "compress")) and path.suffix == ".onnx"]
    built.append(_litert("compress-int8-tflite", files["compress-int8-tflite"], threads))
    return built


def _litert(name: str, path: Path, threads: int | None) -> Variant:
    from compress.runtimes import open_runner

    runner = open_runner(path, threads=threads)
    return Variant(name, runner.name, 8 if "int8" in name else 32, path.stat().st_size, runner.run)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.transformer_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed rounds per timing mode (every variant once per round)")
    parser.add_argument("--epochs", type=int, default=None, help="zoo training epochs (default: the zoo's)")
    args = parser.parse_args(argv)
    from compress.backends.onnx.cpu_features import cpu_int8_features

    with tempfile.TemporaryDirectory(prefix="bench-transformer-") as work:
        work = Path(work)
        handle, test, files, fused, picked = build(work, args.epochs)
        example = tuple(np.ascontiguousarray(a[:1]) for a in test.x)
        torch_example = tuple(torch.from_numpy(a) for a in example)
        wall_variants = variants(handle, files, work, torch_example, None)
        reference = task_metrics(test.heads, _outputs(wall_variants[0], test), test.y)
        rows = {}
        for v in wall_variants:
            metric = task_metrics(test.heads, _outputs(v, test), test.y)
            rows[v.name] = {"variant": v.name, "runtime": v.runtime, "accuracy": metric["value"],
                            "degradation": degradation(reference, metric), "size_bytes": v.size_bytes}
        wall = interleaved_timing(wall_variants, {1: example}, args.runs)
        one_thread = variants(handle, files, work, torch_example, 1)
        cpu = cpu_time_p50(one_thread, example, args.runs)
        cold = cpu_time_p50(one_thread, example, args.runs, warm=False)
        for mode, p50 in (("wall_default_threads", {k: v[1]["p50_ms"] for k, v in wall.items()}), ("cpu_1_thread", cpu),
                          ("cpu_1_thread_cold", cold)):
            best = min(ms for name, ms in p50.items() if name.startswith("fp32"))
            for name, ms in p50.items():
                rows[name][f"p50_ms_{mode}"] = round(ms, 4)
                rows[name][f"vs_best_fp32_{mode}"] = round(best / ms, 3)
        profiles = {name: gemm_profile(files[key], example, args.runs) for name, key in (("fp32-ort", "fp32"), ("compress-int8", "compress-int8"))}
    macs = gemm_macs(handle.module, example)
    best_fp32_cpu = min(r["p50_ms_cpu_1_thread"] for r in rows.values() if r["variant"].startswith("fp32"))
    for name, profile in profiles.items():  # the profile's share of the CPU-time p50 (profiles are wall-clock)
        profile["gemm_cpu_ms"] = round(profile["gemm_share"] * rows[name]["p50_ms_cpu_1_thread"], 3)
        profile["gemm_gmac_per_s"] = round(macs / profile["gemm_cpu_ms"] / 1e6, 1)
    ceiling = best_fp32_cpu / profiles["compress-int8"]["gemm_cpu_ms"]
    result = {
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu_int8_features(), "torch_threads_default": torch.get_num_threads()},
        "runs": args.runs, "test_samples": test.size, "gemm_macs_batch1": macs, "fusions": fused,
        "compress_pick": {"techniques": picked.techniques, "notes": picked.notes},
        "rows": list(rows.values()), "profiles_1_thread": profiles,
        "int8_ceiling_if_non_gemm_were_free": round(ceiling, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transformer_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    return result


def markdown(result: dict) -> str:
    """The docs/benchmarks.md block: the table, the GEMM profile and the ceiling, from transformer_speed.json."""
    cpu = result["machine"]["cpu"]
    vnni = [k for k in ("avx512_vnni", "avx_vnni", "amx_int8") if cpu.get(k)]
    lines = [f"Measured {result['measured'][:10]} on {cpu['arch']}, {cpu['model']}, {'+'.join(vnni) or 'AVX2 without VNNI'} "
             f"(`python -m bench.transformer_speed --runs {result['runs']}`; accuracy on {result['test_samples']} test "
             f"samples; fusions found: {result['fusions']}). `vs best fp32` = best fp32 p50 / this p50. Steady state: "
             "each timed run right after an untimed one of the same variant; cold: one run per visit, after another "
             "variant.", "",
             "| variant | accuracy | degr. | bytes | p50 ms wall (default threads) | vs best fp32 | p50 ms CPU (1 thread) "
             "| vs best fp32 | p50 ms CPU, cold | vs best fp32, cold |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['accuracy']:.4f} | {r['degradation']:+.4f} | {r['size_bytes']:,} | "
              f"{r['p50_ms_wall_default_threads']:.3f} | {r['vs_best_fp32_wall_default_threads']:.2f}x | "
              f"{r['p50_ms_cpu_1_thread']:.3f} | {r['vs_best_fp32_cpu_1_thread']:.2f}x | "
              f"{r['p50_ms_cpu_1_thread_cold']:.3f} | {r['vs_best_fp32_cpu_1_thread_cold']:.2f}x |"
              for r in result["rows"]]
    lines.append("")
    lines += [f"- {name}: matrix products {p['gemm_share']:.0%} of the time ({p['gemm_cpu_ms']:.2f} ms CPU for "
              f"{result['gemm_macs_batch1'] / 1e6:.1f} M MACs, {p['gemm_gmac_per_s']} GMAC/s)"
              for name, p in result["profiles_1_thread"].items()]
    lines.append(f"- int8 ceiling if every other op took no time: {result['int8_ceiling_if_non_gemm_were_free']}x the best fp32")
    lines.append(f"- compress's pick: {result['compress_pick']['notes'][-1]}")
    return "\n".join(lines)


def _print(result: dict) -> None:
    table = Table(title=f"transformer, batch 1 ({result['test_samples']} test samples, {result['runs']} interleaved rounds)")
    for column in ("variant", "accuracy", "degr.", "bytes", "p50 ms (wall, default threads)", "vs best fp32",
                   "p50 ms (CPU, 1 thread)", "vs best fp32", "p50 ms (CPU, cold)", "vs best fp32 (cold)"):
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(row["variant"], f"{row['accuracy']:.4f}", f"{row['degradation']:+.4f}", f"{row['size_bytes']:,}",
                      f"{row['p50_ms_wall_default_threads']:.3f}", f"{row['vs_best_fp32_wall_default_threads']:.2f}x",
                      f"{row['p50_ms_cpu_1_thread']:.3f}", f"{row['vs_best_fp32_cpu_1_thread']:.2f}x",
                      f"{row['p50_ms_cpu_1_thread_cold']:.3f}", f"{row['vs_best_fp32_cpu_1_thread_cold']:.2f}x")
    console = Console(width=200)
    console.print(table)
    for name, profile in result["profiles_1_thread"].items():
        console.print(f"{name}: GEMMs {profile['gemm_share']:.0%} of the time ({profile['gemm_cpu_ms']:.2f} ms CPU, "
                      f"{profile['gemm_gmac_per_s']} GMAC/s)")
    console.print(f"int8 ceiling if every non-GEMM op were free: {result['int8_ceiling_if_non_gemm_were_free']}x the best fp32")


if __name__ == "__main__":
    main()
