#!/usr/bin/env python3
"""compress device runner: load one .onnx / .tflite / .pte (or torch) file, time it or run given inputs, print one JSON line.

This single file is copied to every target (phone, board, emulator) and also runs locally, so every latency figure
is measured by the same loop. It needs only numpy and one of onnxruntime, ai_edge_litert or tflite_runtime
(executorch and torch for ``.pte``; torch for ``--runtime torch``), runs on Python 3.7+, and never imports compress (except, optionally, to load a
zoo checkpoint with ``--runtime torch``).

Timing: the model is loaded (load time), run once (first inference), run ``--warmup`` times, then timed ``--runs``
times or for ``--seconds``. One timed run = set the inputs, run, read the outputs back. With ``--until-ci H`` the
timing stops early, after at least ``--min-runs``, once the median's 95 % confidence interval is within ±H of the
median (``stopped`` says why it ended: ci, runs or seconds). ``--spinning off`` keeps onnxruntime's idle worker
threads from spinning (they starve whatever runs next on the same cores).

Example:
    $ python3 device_runner.py model.int8.onnx --runs 100 --warmup 10 --threads 2
    $ python3 device_runner.py model.int8.onnx --runs 1000 --until-ci 0.02 --spinning off     # adaptive, capped at 1000
    COMPRESS_RUNNER_JSON {"ok": true, "runtime": "onnxruntime", "samples_ms": [...], ...}
    $ python3 device_runner.py model.tflite --inputs in.npz --outputs out.npz     # parity: outputs for real inputs

Exit status: 0 ok; 2 bad arguments; 3 environment (missing runtime, a model the runtime cannot load or run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

MARKER = "COMPRESS_RUNNER_JSON "
SUFFIX_RUNTIME = {".onnx": "onnxruntime", ".tflite": "litert", ".pte": "executorch", ".pt2": "torch", ".pt": "torch"}  # = compress.backends'
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
MAX_SAMPLES = 100000  # --seconds mode stops here even if time is left


class RunnerError(Exception):
    """``kind``: missing_runtime | load_failed | run_failed | bad_arguments | provider_unavailable. ``detail``: the
    runtime's own error text (compress.runtimes reads it to name a missing kernel)."""

    def __init__(self, kind, message, code=3, detail=""):
        super().__init__(message)
        self.kind, self.message, self.code, self.detail = kind, message, code, detail


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _import_numpy():
    try:
        import numpy
    except ImportError:
        raise RunnerError("missing_runtime", "numpy is not installed for %s (pip install numpy)" % sys.executable)
    return numpy


# --- sessions: one small class per runtime -------------------------------------------------------------------------


class OrtSession:
    """onnxruntime with the settings compress uses everywhere: sequential, one inter-op thread, deterministic;
    ``spinning=False`` turns the idle worker threads' spin-waiting off (``spinning`` records which)."""

    name = "onnxruntime"

    def __init__(self, path, threads, providers, spinning=True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError("missing_runtime", "onnxruntime is not installed for %s (pip install onnxruntime)" % sys.executable)
        np = _import_numpy()
        self.version = ort.__version__
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise RunnerError("provider_unavailable", "onnxruntime %s has no %s (available: %s)" % (self.version, missing[0], ", ".join(available)))
        try:
            self.session = ort.InferenceSession(str(path), sess_options=ort_session_options(ort, threads, spinning), providers=wanted)
        except Exception as exc:
            raise RunnerError("load_failed", "onnxruntime %s could not load %s: %s" % (self.version, os.path.basename(path), _first_line(exc)),
                              detail=str(exc))
        used = self.session.get_providers()
        if wanted[0] not in used:
            raise RunnerError("provider_unavailable", "onnxruntime fell back from %s to %s" % (wanted[0], ", ".join(used)))
        self.providers = used
        self.inputs = []
        for item in self.session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else None for d in (item.shape or [])]
            dtype = np.dtype(ORT_DTYPES.get(item.type, "float32")).type
            self.inputs.append({"name": item.name, "shape": shape, "dtype": dtype, "quantization": None})
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self.inputs[0]["shape"] if self.inputs else []
        self.fixed_batch = first[batch_axis(first)] if first and first[batch_axis(first)] else None
        self.delegate = self.providers[0]
        self.spinning = "on" if spinning else "off"

    def run(self, arrays):
        feeds = {spec["name"]: array for spec, array in zip(self.inputs, arrays)}
        return self.session.run(None, feeds)


class TfliteSession:
    """The LiteRT interpreter (XNNPACK by default). Quantized inputs/outputs are (de)quantized with their scale."""

    name = "litert"

    def __init__(self, path, threads):
        np = _import_numpy()
        try:
            from ai_edge_litert.interpreter import Interpreter
            import ai_edge_litert
            self.version = "ai-edge-litert " + getattr(ai_edge_litert, "__version__", _dist_version("ai-edge-litert"))
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                import tflite_runtime
                self.version = "tflite-runtime " + getattr(tflite_runtime, "__version__", "?")
            except ImportError:
                raise RunnerError("missing_runtime", "no TFLite runtime for %s (pip install ai-edge-litert or tflite-runtime)" % sys.executable)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=int(threads) if threads else None)
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise RunnerError("load_failed", "LiteRT (%s) could not load %s: %s" % (self.version, os.path.basename(path), _first_line(exc)),
                              detail=str(exc))
        self.details = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.inputs = []
        for detail in self.details:
            signature = list(detail.get("shape_signature", detail["shape"]))
            shape = [int(d) if d > 0 else None for d in signature]
            self.inputs.append({"name": detail["name"], "shape": shape, "dtype": np.dtype(detail["dtype"]).type,
                                "quantization": tensor_quantization(detail)})
        first = self.inputs[0]["shape"] if self.inputs else []
        self.fixed_batch = first[0] if first and first[0] else None
        self.delegate = "XNNPACK (LiteRT default CPU delegate)"
        self.providers = []
        self.spinning = "runtime default"

    def _resize(self, batch):
        if all(d["shape"][0] == batch for d in self.details):
            return
        for detail in self.details:
            self.interpreter.resize_tensor_input(detail["index"], [batch] + list(detail["shape"][1:]))
        self.interpreter.allocate_tensors()
        self.details = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def run(self, arrays):
        if self.fixed_batch is None:
            self._resize(len(arrays[0]))
        for array, detail in zip(arrays, self.details):
            self.interpreter.set_tensor(detail["index"], array)
        self.interpreter.invoke()
        return [dequantize(self.interpreter.get_tensor(d["index"]), tensor_quantization(d)) for d in self.outputs]


class ExecuTorchSession:
    """An ExecuTorch program's ``forward`` (XNNPACK delegate built into the pip runtime); ``threads`` sizes its pool."""

    name = "executorch"
    DTYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64", 11: "bool"}

    def __init__(self, path, threads):
        self.np = np = _import_numpy()
        try:
            import torch
            from executorch.runtime import Runtime
            from executorch.extension.pybindings import portable_lib
        except ImportError:
            raise RunnerError("missing_runtime", "executorch is not installed for %s (pip install executorch)" % sys.executable)
        self.torch = torch
        self.version = "executorch " + _dist_version("executorch")
        if threads:
            portable_lib._unsafe_reset_threadpool(int(threads))
        try:
            self.method = Runtime.get().load_program(path).load_method("forward")
        except Exception as exc:
            raise RunnerError("load_failed", "ExecuTorch (%s) could not load %s: %s" % (self.version, os.path.basename(path), _first_line(exc)))
        meta = self.method.metadata
        self.inputs = []
        for i in range(meta.num_inputs()):
            info = meta.input_tensor_meta(i)
            dtype = np.dtype(self.DTYPES.get(int(info.dtype()), "float32")).type
            self.inputs.append({"name": "input_%d" % i, "shape": [int(d) for d in info.sizes()], "dtype": dtype, "quantization": None})
        first = self.inputs[0]["shape"] if self.inputs else []
        self.fixed_batch = first[0] if first else None
        self.delegate = "XNNPACK (ExecuTorch delegate) + portable kernels"
        self.providers = []
        self.spinning = "runtime default"

    def run(self, arrays):
        outputs = self.method.execute([self.torch.from_numpy(a) for a in arrays])
        return [o.numpy() if isinstance(o, self.torch.Tensor) else self.np.asarray(o) for o in outputs]


class TorchSession:
    """Eager PyTorch (CPU, or CUDA with ``--providers cuda``): .pt2, TorchScript, or a zoo checkpoint via compress."""

    name = "torch"

    def __init__(self, path, threads, device):
        try:
            import torch
        except ImportError:
            raise RunnerError("missing_runtime", "torch is not installed for %s" % sys.executable)
        self.torch = torch
        self.version = torch.__version__
        if device == "cuda" and not torch.cuda.is_available():
            raise RunnerError("provider_unavailable", "torch %s sees no CUDA device" % self.version)
        if threads:
            torch.set_num_threads(int(threads))
        try:
            module = self._load(path)
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError("load_failed", "torch could not load %s: %s" % (os.path.basename(path), _first_line(exc)))
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.inputs = []        # torch files carry no input description: the host passes --inputs
        self.fixed_batch = None
        self.delegate = "eager " + device
        self.providers = [device]
        self.spinning = "runtime default"

    def _load(self, path):
        torch = self.torch
        if path.endswith(".pt2"):
            return torch.export.load(path).module()
        try:
            return torch.jit.load(path, map_location="cpu").eval()
        except Exception:
            from compress.loading.model import load_model  # zoo checkpoints and state_dicts need compress's loader
            return load_model(path).module.eval()

    def run(self, arrays):
        torch = self.torch
        with torch.no_grad():
            outputs = self.module(*(torch.from_numpy(a).to(self.device) for a in arrays))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return [o.detach().float().cpu().numpy() for o in outputs]


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "?"


def resolve_runtime(path, runtime):
    if runtime != "auto":
        return runtime
    found = SUFFIX_RUNTIME.get(os.path.splitext(path)[1])
    if found is None:
        raise RunnerError("bad_arguments", "no runtime for %s; give --runtime" % os.path.basename(path), code=2)
    return found


def preimport(runtime):
    """Import the runtime's library before measuring memory and load time, so both count the model alone."""
    names = {"onnxruntime": ["onnxruntime"], "litert": ["ai_edge_litert.interpreter", "tflite_runtime.interpreter"], "torch": ["torch"],
             "executorch": ["executorch.runtime"]}
    for name in names.get(runtime, []):
        try:
            __import__(name)
            return
        except ImportError:
            continue


def open_session(path, runtime, threads, providers, spinning=True):
    runtime = resolve_runtime(path, runtime)
    if runtime == "onnxruntime":
        return OrtSession(path, threads, providers, spinning)
    if runtime == "litert":
        return TfliteSession(path, threads)
    if runtime == "executorch":
        return ExecuTorchSession(path, threads)
    if runtime == "torch":
        return TorchSession(path, threads, "cuda" if providers and "cuda" in providers else "cpu")
    raise RunnerError("bad_arguments", "unknown runtime %r" % runtime, code=2)


# --- inputs ---------------------------------------------------------------------------------------------------------


def random_inputs(session, batch, seed=0):
    """Random arrays for the model's inputs at ``batch`` (floats ~ N(0,1); integers in [0, 2) so ids/masks are valid)."""
    np = _import_numpy()
    rng = np.random.RandomState(seed)
    arrays = []
    for spec in session.inputs:
        shape = list(spec["shape"])
        axis = batch_axis(shape)
        if shape and (shape[axis] is None or batch != 1):  # a fully static file at batch 1 runs at its own shape
            shape[axis] = batch
        if any(d is None for d in shape):
            raise RunnerError("bad_arguments", "input %r has a dynamic dimension besides the batch: pass --inputs with real arrays" % spec["name"], code=2)
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f" or spec["quantization"]:
            arrays.append(rng.standard_normal(shape).astype(np.float32))
        elif dtype.kind == "b":
            arrays.append(rng.randint(0, 2, shape).astype(bool))
        else:
            arrays.append(rng.randint(0, 2, shape).astype(dtype))
    return arrays


def batch_axis(shape):
    """The batch axis of an input: its one dynamic dimension (a state ``(layers, batch, H)`` has it on 1), else 0."""
    dynamic = [i for i, d in enumerate(shape) if d is None]
    return dynamic[0] if len(dynamic) == 1 else 0


def prepare(session, arrays):
    """Cast each array to its input's type; quantize floats for integer-quantized inputs (scale, zero point)."""
    np = _import_numpy()
    if session.inputs and len(arrays) != len(session.inputs):
        raise RunnerError("bad_arguments", "the model takes %d input(s) but %d were given" % (len(session.inputs), len(arrays)), code=2)
    prepared = []
    for index, array in enumerate(arrays):
        if not session.inputs:
            prepared.append(np.ascontiguousarray(array))
            continue
        spec = session.inputs[index]
        prepared.append(np.ascontiguousarray(quantize(array, spec["dtype"], spec["quantization"])))
    return prepared


def tensor_quantization(detail):
    """``(scale, zero_point)`` of a LiteRT tensor stored as quantized integers, else None."""
    np = _import_numpy()
    scale, zero_point = detail["quantization"]
    return (scale, zero_point) if scale and np.issubdtype(np.dtype(detail["dtype"]), np.integer) else None


def quantize(array, dtype, quantization):
    """``array`` in ``dtype``: with ``quantization`` (scale, zero point) the floats are quantized (rounded, clipped)."""
    np = _import_numpy()
    dtype = np.dtype(dtype)
    if not quantization:
        return array.astype(dtype, copy=False)
    scale, zero_point = quantization
    info = np.iinfo(dtype)
    quantized = np.round(array.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize(value, quantization):
    """A quantized output back in float32 (``quantization``: scale, zero point; None: returned as is)."""
    np = _import_numpy()
    if not quantization:
        return value
    scale, zero_point = quantization
    return ((value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def run_batch(session, arrays):
    """Run ``arrays`` (any batch); a model with a fixed batch is fed in chunks of it, the padding dropped."""
    size = session.fixed_batch
    axes = [batch_axis(spec["shape"]) for spec in session.inputs] or [0] * len(arrays)
    if size is None or arrays[0].shape[axes[0]] == size:
        return session.run(arrays)
    return run_in_chunks(session.run, arrays, size, axes)


def run_in_chunks(run, arrays, size, in_axes=None, out_axes=None):
    """``run`` over ``arrays`` in chunks of a model's fixed batch ``size``: the last chunk is padded with copies of
    its last sample and the padding's outputs are dropped. Each input's batch is on its ``in_axes`` entry and each
    output's on its ``out_axes`` entry (default 0: a state ``(layers, B, H)`` has it on 1). compress's own runners
    use it too."""
    np = _import_numpy()
    in_axes = list(in_axes or [0] * len(arrays))
    total = arrays[0].shape[in_axes[0]]
    parts = []
    for start in range(0, total, size):
        index = np.arange(start, min(start + size, total))
        chunk = [np.take(a, index, axis=axis) for a, axis in zip(arrays, in_axes)]
        short = size - len(index)
        if short:
            chunk = [np.concatenate([c, np.repeat(np.take(c, [-1], axis=axis), short, axis=axis)], axis=axis)
                     for c, axis in zip(chunk, in_axes)]
        outputs = run(chunk)
        axes = list(out_axes or [0] * len(outputs))
        parts.append([np.take(o, np.arange(size - short), axis=axis) for o, axis in zip(outputs, axes)])
    axes = list(out_axes or [0] * len(parts[0]))
    return [np.concatenate(outputs, axis=axis) for outputs, axis in zip(zip(*parts), axes)]


def ort_session_options(ort, threads=None, spinning=True):
    """The onnxruntime session settings of every session compress opens, here and in compress.runtimes: sequential
    execution, one inter-op thread, deterministic kernels, quiet logs; ``threads`` sets the intra-op pool.
    ``spinning=False``: idle worker threads sleep instead of spin-waiting (needed when several runtimes share cores)."""
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    options.use_deterministic_compute = True
    options.log_severity_level = 3
    return options


# --- measurement ----------------------------------------------------------------------------------------------------


def rss_bytes():
    """Resident memory now (Linux /proc), else None."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_bytes():
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        return platform.processor() or ""
    for key in ("model name", "Hardware", "Processor"):
        for line in text.splitlines():
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return ""


def environment(session=None):
    numpy = sys.modules.get("numpy")
    info = {"machine": platform.machine(), "system": platform.system(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": getattr(numpy, "__version__", None)}
    if hasattr(os, "getloadavg"):
        try:
            info["loadavg_1m"] = round(os.getloadavg()[0], 2)
        except OSError:
            pass
    if session is not None:
        info.update(runtime=session.name, runtime_version=session.version, delegate=session.delegate, providers=session.providers)
    return info


def median_rank(n, confidence=0.95):
    """The 1-based rank of the lower end of the median's distribution-free ``confidence`` interval from ``n`` sorted
    samples (the upper end is rank ``n + 1 - low``): the smallest k with P(Binomial(n, 1/2) <= k) >= (1 - c) / 2,
    at least 1. Equals scipy's ``binom.ppf``; plain Python so the runner needs no scipy."""
    quantile = (1.0 - confidence) / 2
    log_pmf_base = math.lgamma(n + 1) + n * math.log(0.5)
    cdf = 0.0
    for k in range(max(0, int(n / 2 - 3 * math.sqrt(n))), n + 1):  # the mass below this start is < 1e-9
        cdf += math.exp(log_pmf_base - math.lgamma(k + 1) - math.lgamma(n - k + 1))
        if cdf >= quantile * (1 - 1e-9):
            return max(k, 1)
    return 1


def median_half_width(samples):
    """Half the width of the median's 95 % interval over the median (inf under 6 samples: no interval reaches 95 %)."""
    n = len(samples)
    if n < 6:
        return float("inf")
    ordered = sorted(samples)
    low = median_rank(n)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    return (ordered[n - low] - ordered[low - 1]) / 2 / median if median > 0 else float("inf")


def time_session(session, arrays, runs, seconds, warmup, until_ci=None, min_runs=1):
    """first-inference ms, the timed samples (ms) after ``warmup`` untimed runs, and why timing stopped: ``"runs"``
    (``runs`` taken), ``"seconds"`` (``seconds`` spent), or ``"ci"`` (``until_ci`` set: after at least ``min_runs``,
    the median's 95 % interval came within ±until_ci of the median; checked as the count grows by 10 %)."""
    clock = time.perf_counter
    start = clock()
    run_batch(session, arrays)
    first_ms = (clock() - start) * 1e3
    for _ in range(warmup):
        run_batch(session, arrays)
    samples = []
    deadline = clock() + seconds if seconds else None
    cap = MAX_SAMPLES if deadline is not None else runs
    next_check = max(min_runs, 6)
    while True:
        if len(samples) >= cap:
            return first_ms, samples, "runs" if deadline is None else "seconds"
        if deadline is not None and clock() >= deadline:
            return first_ms, samples, "seconds"
        if until_ci and len(samples) >= next_check:
            if median_half_width(samples) <= until_ci:
                return first_ms, samples, "ci"
            next_check = len(samples) + max(1, len(samples) // 10)
        start = clock()
        run_batch(session, arrays)
        samples.append((clock() - start) * 1e3)


def load_npz(path):
    np = _import_numpy()
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(data.files, key=lambda k: int(k.rsplit("_", 1)[1]))
        return [data[k] for k in keys]


def measure(args):
    preimport(resolve_runtime(args.model, args.runtime))
    rss_before = rss_bytes()
    start = time.perf_counter()
    session = open_session(args.model, args.runtime, args.threads, args.providers.split(",") if args.providers else None,
                           spinning=args.spinning == "on")
    load_ms = (time.perf_counter() - start) * 1e3
    result = {"ok": True, "load_ms": round(load_ms, 4), "model": os.path.basename(args.model), "batch": args.batch,
              "threads": args.threads, "fixed_batch": session.fixed_batch, "spinning": session.spinning}
    try:
        if args.inputs:
            arrays = prepare(session, load_npz(args.inputs))
        else:
            arrays = prepare(session, random_inputs(session, args.batch, args.seed))
        if args.outputs:
            start = time.perf_counter()
            outputs = run_batch(session, arrays)
            result["run_ms"] = round((time.perf_counter() - start) * 1e3, 4)
            np = _import_numpy()
            with open(args.outputs, "wb") as handle:
                np.savez(handle, **{"output_%d" % i: o for i, o in enumerate(outputs)})
            result["samples"] = int(len(arrays[0]))
        else:
            arrays = [a[:args.batch] for a in arrays]
            first_ms, samples, stopped = time_session(session, arrays, args.runs, args.seconds, args.warmup, args.until_ci, args.min_runs)
            result.update(first_inference_ms=round(first_ms, 4), warmup=args.warmup, samples_ms=[round(s, 5) for s in samples],
                          stopped=stopped)
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError("run_failed", "%s could not run %s: %s" % (session.name, os.path.basename(args.model), _first_line(exc)))
    result["rss_before_load_bytes"] = rss_before
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["environment"] = environment(session)
    return result


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Time one model file, or run given inputs, and print one JSON line.")
    parser.add_argument("model", nargs="?")
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnxruntime", "litert", "executorch", "torch"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until-ci", type=float, default=None, help="stop once the median's 95%% CI half-width is within this fraction of it")
    parser.add_argument("--min-runs", type=int, default=1, help="with --until-ci: timed runs before the first check")
    parser.add_argument("--spinning", default="on", choices=["on", "off"], help="onnxruntime worker threads spin-wait when idle (its default: on)")
    parser.add_argument("--providers", default=None, help="onnxruntime execution providers, comma-separated; 'cuda' for torch")
    parser.add_argument("--inputs", default=None, help=".npz with input_0, input_1, ... (batch first)")
    parser.add_argument("--outputs", default=None, help="write output_0, ... for --inputs here instead of timing")
    parser.add_argument("--probe", action="store_true", help="only report the environment")
    args = parser.parse_args(argv)
    if not args.probe and not args.model:
        raise RunnerError("bad_arguments", "give a model file", code=2)
    if args.batch < 1 or args.runs < 1 or args.warmup < 0 or (args.seconds is not None and args.seconds <= 0) or args.min_runs < 1 \
            or (args.until_ci is not None and args.until_ci <= 0):
        raise RunnerError("bad_arguments", "--batch, --runs and --min-runs must be >= 1, --warmup >= 0, --seconds and --until-ci > 0", code=2)
    if args.model and not os.path.isfile(args.model):
        raise RunnerError("bad_arguments", "model file %s not found" % args.model, code=2)
    return args


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        result = {"ok": True, "environment": environment()} if args.probe else measure(args)
        code = 0
    except RunnerError as exc:
        result, code = {"ok": False, "error": exc.kind, "message": exc.message}, exc.code
    except SystemExit as exc:  # argparse
        result, code = {"ok": False, "error": "bad_arguments", "message": "bad runner arguments (exit %s)" % exc.code}, 2
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
