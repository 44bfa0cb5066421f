"""`python -m bench.timing_agreement`: do `compress bench` medians agree with a plain timing loop? (acceptance: within 10 %)

For each artifact (by default the fp32 and int8 ONNX and TFLite files of a freshly quantized mnist_cnn), this alternates,
for several rounds, `compress.steps.benchmark.benchmark_artifact(target="local")` (the device runner in a child process) with
an independent loop written here with nothing from compress: the same runtime session settings (onnxruntime spinning
off, as compress times), each run timed with ``time.perf_counter`` around set inputs + run + read outputs, after the
same warm-up and for the same fixed number of runs (compress's adaptive stop is off here). Alternating rounds spread machine
noise over both. It prints a table and writes bench/results/timing_agreement.json.

Example:
    $ python -m bench.timing_agreement --runs 300 --rounds 5 --threads 1
    $ python -m bench.timing_agreement --artifacts runs/mnist/model.int8.onnx runs/mnist/model.int8.tflite
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.10


def plain_ort(path: Path, threads: int):
    """An onnxruntime session with the settings compress times with (sequential, 1 inter-op thread, deterministic,
    idle threads not spinning)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.use_deterministic_compute = True
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in first.shape]
    feeds = {first.name: np.random.RandomState(0).standard_normal(shape).astype(np.float32)}
    return lambda: session.run(None, feeds)


def plain_litert(path: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    x = np.random.RandomState(0).standard_normal(detail["shape"]).astype(np.float32)

    def run():
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return run


def plain_median(path: Path, threads: int, runs: int, warmup: int) -> float:
    run = plain_ort(path, threads) if path.suffix == ".onnx" else plain_litert(path, threads)
    run()  # first inference
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def default_artifacts(folder: Path) -> list[Path]:
    from compress.loading.model import load_model
    from compress.passes.quantize import QuantizeConfig, quantize
    from compress.zoo import train_zoo_model

    trained = train_zoo_model("mnist_cnn", out=folder / "mnist_cnn.pt", epochs=1)
    quantize(load_model(trained.path), QuantizeConfig(bench=False, calib_samples=128), out_dir=folder / "run")
    return sorted((folder / "run").glob("model.*.onnx")) + sorted((folder / "run").glob("model.*.tflite"))


def compare(path: Path, threads: int, runs: int, warmup: int, rounds: int) -> dict:
    from compress.steps.benchmark import benchmark_artifact

    bench, plain = [], []
    for _ in range(rounds):
        bench.append(benchmark_artifact(path, threads=threads, runs=runs, warmup=warmup, adaptive=False)["p50_ms"])
        plain.append(plain_median(path, threads, runs, warmup))
    bench_ms, plain_ms = statistics.median(bench), statistics.median(plain)
    ratio = bench_ms / plain_ms
    return {"artifact": path.name, "bench_p50_ms": round(bench_ms, 5), "plain_p50_ms": round(plain_ms, 5), "ratio": round(ratio, 4),
            "within_tolerance": abs(ratio - 1) <= TOLERANCE, "bench_rounds_ms": bench, "plain_rounds_ms": [round(v, 5) for v in plain]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.timing_agreement", description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", nargs="*", type=Path, help="files to time (default: mnist_cnn fp32/int8 ONNX and TFLite)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="timing-agreement-") as folder:
        artifacts = args.artifacts or default_artifacts(Path(folder))
        rows = [compare(path, args.threads, args.runs, args.warmup, args.rounds) for path in artifacts]
    table = Table(title=f"compress bench vs a plain loop: median of {args.rounds} alternating rounds of {args.runs} runs, "
                        f"{args.threads} thread(s)", title_justify="left")
    for column in ("artifact", "bench p50 ms", "plain p50 ms", "ratio", f"within {TOLERANCE:.0%}"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for row in rows:
        table.add_row(row["artifact"], f"{row['bench_p50_ms']:.4f}", f"{row['plain_p50_ms']:.4f}", f"{row['ratio']:.3f}",
                      "[green]yes[/]" if row["within_tolerance"] else "[red]no[/]")
    console.print(table)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_1m_at_end": load},
              "settings": vars(args) | {"artifacts": [str(a) for a in args.artifacts] if args.artifacts else
                                      "mnist_cnn trained 1 epoch, quantized: fp32/int8 ONNX and TFLite"}, "tolerance": TOLERANCE, "rows": rows,
              "all_within_tolerance": all(r["within_tolerance"] for r in rows)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    from compress.safety.io import write_json_atomic

    write_json_atomic(RESULTS / "timing_agreement.json", result)
    console.print(f"wrote {RESULTS / 'timing_agreement.json'}; all within {TOLERANCE:.0%}: {result['all_within_tolerance']}")


if __name__ == "__main__":
    main()
