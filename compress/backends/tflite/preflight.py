"""Pre-flight for the TFLite path: before calibrating, say what the chosen precision leaves in float or cannot convert.

It is a dry run of ``export_tflite`` (same capture, quantizer and converter), so what it reports is what the real
export will do: which layers keep float weights or float compute, which get dynamic-range kernels, and whether the
model converts at all. `compress quantize` passes the run's calibration set and method: within the run
(compress.backends.reuse) the real export then reuses the dry run's conversion instead of converting again. Called
alone, int8 observers see a few random inputs. A dry run costs about one conversion (1-5 s for the zoo models).

Example:
    >>> job = QuantizeJob(load_model("lstm.pt"), "int8", Path("model.int8.tflite"))
    >>> [f.message for f in tflite_preflight(job) if f.layer == "lstm"][0]
    'LSTM lstm: static int8 does not cover it (litert-torch unrolls LSTM into per-step FULLY_CONNECTED ops ...'
"""
from __future__ import annotations


import torch
from torch import nn

from compress.catalog import QuantizeJob
from compress.errors import CompressError, UsageError
from compress.backends.findings import Finding
from compress.backends.pt2e import EXPORT_BATCH, eval_mode, export_batch, random_calibration
from compress.backends.tflite.export import TfliteGraph, check_precision, build_tflite, format_counts, static_gap
from compress.loading.model import ModelHandle

DRY_RUN_SAMPLES = 4


def tflite_preflight(job: QuantizeJob) -> list[Finding]:
    """Findings for exporting the job's model to TFLite at its precision (an error means: do not start); int8
    calibrates on the job's data with its method (no data: DRY_RUN_SAMPLES random inputs)."""
    handle, precision, calib_data = job.handle, job.precision, job.calib_data
    check_precision(precision)
    module = handle.module
    if module is None:
        return [_error(f"{handle.source_path} is an ONNX model: there is no torch model to convert to TFLite", "use --format onnx")]
    if isinstance(module, torch.jit.ScriptModule):
        return [_error(f"{handle.source_path} is TorchScript: litert-torch converts torch.export programs only",
                       "save the model with torch.export (.pt2) or as a state_dict with --arch, or use --format onnx")]
    module = eval_mode(module)
    notes: list[str] = []
    if precision == "int8" and calib_data is None:
        calib_data = random_calibration(handle, seed=0, samples=DRY_RUN_SAMPLES)
    example = handle.input_spec.example_inputs(batch=export_batch(handle), seed=0)
    try:
        content, _ = build_tflite(module, example, precision, calib_data, job.calibration, job.per_channel, [], notes)
    except UsageError as exc:
        return [_error(str(exc), "use --precision int8")]
    except CompressError as exc:
        return [_error(f"the TFLite path cannot convert this model: {exc}",
                       "make forward traceable by torch.export (no data-dependent Python control flow), or use --format onnx")]
    graph = TfliteGraph(content, module)
    findings = [Finding("tflite", "*", None, None, "warning", note, "rewrite the untraceable Python in forward")
                for note in notes if note.startswith("torch.export strict mode failed")]
    if precision == "int8":
        findings += _static_findings(graph, module)
    elif precision != "fp32":
        findings += _weight_findings(graph, precision)
    return findings + _io_findings(handle)


def _static_findings(graph: TfliteGraph, module: nn.Module) -> list[Finding]:
    findings = []
    dynamic = graph.dynamic_by_layer()
    computing = graph.float_compute_by_layer()
    for layer, ops in dynamic.items():
        kind = type(module.get_submodule(layer)).__name__ if layer and _has_submodule(module, layer) else "layer"
        float_part = f"; float compute: {format_counts(computing[layer])}" if computing.get(layer) else ""
        findings.append(Finding("tflite", ",".join(sorted(ops)), None, layer, "info",
                                f"{kind} {layer or ''}: static int8 does not cover it ({static_gap(module, layer)}): "
                                f"{format_counts(ops)} get int8 weights with dynamic-range kernels{float_part}; the file is 'mixed'",
                                "nothing to do; --precision int8-dynamic quantizes every layer this way"))
    groups: dict[tuple, dict[str, int]] = {}
    for row in graph.float_ops("int8", [], module):
        if row["layer"] not in dynamic:
            groups.setdefault((row["layer"], row["reason"]), {})[row["op"]] = row["count"]
    for (layer, reason), ops in groups.items():
        findings.append(Finding("tflite", ",".join(sorted(ops)), None, layer, "info",
                                f"float under static int8 in {layer or 'the model'}: {format_counts(ops)} ({reason})",
                                "nothing to do: it costs speed (QUANTIZE/DEQUANTIZE around it), not size"))
    return findings


def _weight_findings(graph: TfliteGraph, precision: str) -> list[Finding]:
    """fp16, dynamic-range and weight-only: weighted ops whose weights ai-edge-quantizer leaves in float32."""
    return [Finding("tflite", row["op"], row["node"], row["layer"], "warning",
                    f"{row['op']}×{row['count']} in {row['layer'] or 'the model'} keeps float32 weights under {precision} "
                    f"(ai-edge-quantizer has no {precision} kernel for it)",
                    "use --precision int8 or int8-weight to shrink it too")
            for row in graph.float_ops(precision, [], None)]


def _io_findings(handle: ModelHandle) -> list[Finding]:
    findings = [Finding("tflite", "*", None, None, "info",
                        f"the TFLite file is exported at batch {EXPORT_BATCH} (litert-torch cannot lower a dynamic batch "
                        "through Flatten/reshape); larger batches are fed one sample at a time",
                        "nothing to do for on-device use (batch 1)")]
    for tensor in handle.input_spec.tensors:
        if tensor.dtype == "int64":
            findings.append(Finding("tflite", "*", None, None, "info",
                                    f"input {tensor.name!r} is int64: it is int32 in the TFLite file (litert-torch downcasts 64-bit types)",
                                    "feed int32 on device; ids must be < 2**31"))
    return findings


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _error(message: str, suggestion: str) -> Finding:
    return Finding("tflite", "*", None, None, "error", message, suggestion)
