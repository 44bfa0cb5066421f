"""torch → one ExecuTorch ``.pte`` program, lowered to the XNNPACK delegate: fp32, static int8, dynamic int8.

How each precision is made (``torch.export`` → ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])``
→ ``to_executorch()``):
- ``fp32``: the model as captured.
- ``int8``: PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer`` (symmetric int8 weights, per channel by
  default; int8 activations calibrated on the given samples, one batch of the export's size at a time).
  ``--calibration`` maps to the PT2E activation observer exactly as on the TFLite path (``runs_as["litert"]`` in
  compress.backends.calibration):
  ``minmax`` and ``percentile`` are what they say; ``entropy`` has no KL-divergence observer in torchao, so it runs
  the L2-optimal HistogramObserver (XNNPACK's own default) and a note says so.
- ``int8-dynamic``: ``XNNPACKQuantizer`` with dynamic activations for linear layers (int8 weights, activation
  ranges measured on every call); everything else stays fp32.
Not available, with why: ``fp16`` (an XNNPACK fp16 program takes and gives half-precision tensors, unlike every other
format here), ``int8-weight`` and ``int4-weight`` (the XNNPACK partitioner lowers only fp32, static-int8 and
dynamic-int8 patterns: weight-only linears would run in the portable kernels).

Delegate coverage is the ``.pte`` counterpart of "stays float": ``float_ops`` lists the ops that are *not* lowered
to XNNPACK and run in ExecuTorch's portable kernels, each with the partitioner's reason where it gave one, and under
int8 precisions the linear/convolution ops XNNPACK runs in fp32. ``exclude`` names torch layers (``classifier.1``)
kept in float (still delegated, in fp32).

The file is exported at a fixed batch (the program's own, else 1): a dynamic batch makes ``Flatten``'s reshape
symbolic, which XNNPACK refuses, so it would split the graph. The same model, data and seed give the same bytes.

Example:
    >>> result = export_pte(QuantizeJob(handle, "int8", Path("model.int8.pte"), calib_data=splits.calibration(256)))
    >>> result.precision, result.techniques, result.coverage["portable"]
    ('int8', ['export:executorch:xnnpack', 'ptq:int8-static:minmax:per-channel'], {})
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compress.catalog import ExportResult, QuantizeJob, Technique
from compress.data import Dataset
from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.backends.pt2e import (KEPT_BY_EXCLUDE, capture_for_pt2e, eval_of_capture, export_batch, fixed_batch_note,
                                  node_in, observer, prepared_and_calibrated, pt2e_inputs, torch_module)
from compress.backends.tflite.export import format_counts
from compress.catalog import CALIBRATIONS
from compress.safety.io import atomic_path
from compress.loading.model import ModelHandle
from compress.backends.pte.session import require_executorch

PRECISIONS = ("fp32", "int8", "int8-dynamic")
UNAVAILABLE = {
    "fp16": "an XNNPACK fp16 .pte takes and returns half-precision tensors (the app must convert); compress does not "
            "build it: use int8 or int8-dynamic for a smaller file, or --format onnx/tflite for fp16",
    "int8-weight": "the XNNPACK partitioner has no weight-only int8 kernels (it lowers fp32, static and dynamic int8 "
                   "only): weight-only linears would run in the slow portable kernels; use int8-dynamic",
    "int4-weight": "the XNNPACK partitioner lowers no weight-only int4 linears in compress's flow; use int8-dynamic, "
                   "or --format onnx/tflite for int4-weight",
}
DELEGATE = "XnnpackBackend"
PARTITIONER_LOGGER = "executorch.backends.xnnpack.partition"
# Nodes that are bookkeeping, not compute, outside or inside a delegate.
NOT_OPS = {"getitem", "executorch_call_delegate", "sym_size", "sym_size.int"}
# Quantize/dequantize nodes inside a delegate are how XNNPACK reads int8 tensors, not ops it runs: not counted there.
WEIGHTED_OPS = {"convolution", "linear"}
QDQ_OPS = {"quantize_per_tensor", "dequantize_per_tensor", "quantize_per_channel", "dequantize_per_channel", "choose_qparams"}
PORTABLE = "runs in ExecuTorch's portable kernels"
PORTABLE_REASON = f"not delegated to XNNPACK (the partitioner has no pattern for this op): {PORTABLE}"


def export_pte(job: QuantizeJob) -> ExportResult:
    """Write ``job.out``: the job's model as an XNNPACK-delegated ``.pte`` in ``job.precision``; ``job.exclude`` stays
    float.

    ``job.calib_data`` (int8 only) should come from train+val; without it, ``job.seed`` draws random calibration
    inputs and a loud note says so. ``job.calibration``: the method's name (compress.backends.calibration).
    """
    precision = job.precision
    check_precision(precision)
    module = exportable(job.handle)
    excluded, calib_data, example, notes = pt2e_inputs(job, module)
    content, techniques, lowered = build_pte(module, example, precision, calib_data, job.calibration, job.per_channel,
                                             excluded, notes)
    float_ops = lowered.float_ops(precision, excluded)
    notes.append(lowered.summary())
    notes.append(fixed_batch_note(export_batch(job.handle)))
    final = "mixed" if excluded and precision != "fp32" else precision
    out_path = Path(job.out)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(content)
    return ExportResult(out_path, final, techniques, float_ops, notes, lowered.coverage())


def check_precision(precision: str) -> None:
    """UsageError for a precision the ``.pte`` path does not build, saying why."""
    if precision in UNAVAILABLE:
        raise UsageError(f"--precision {precision} is not available for .pte: {UNAVAILABLE[precision]}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown .pte precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def exportable(handle: ModelHandle) -> nn.Module:
    """``handle``'s torch module in inference mode; UsageError for sources ExecuTorch cannot take."""
    return torch_module(handle, "a .pte", "ExecuTorch lowers")


def build_pte(module: nn.Module, example: tuple, precision: str, calib_data: Dataset | None, calibration: str,
              per_channel: bool, excluded: list[str], notes: list[str]) -> tuple[bytes, list[Technique], "Lowered"]:
    """The ``.pte`` bytes of ``module`` at ``precision``, the techniques applied and the lowered program.

    Within one run (compress.backends.reuse) the same inputs lower once: the pre-flight's dry run is the real export's."""
    from compress.backends.reuse import reused

    key = conversion_key(module, example, precision, calib_data, calibration, per_channel, excluded)
    return reused(key, lambda: _build(module, example, precision, calib_data, calibration, per_channel, excluded, notes), notes)


def conversion_key(module: nn.Module, example: tuple, precision: str, calib_data: Dataset | None, calibration: str,
                   per_channel: bool, excluded: list[str]) -> tuple:
    """What makes one ``.pte`` lowering (compress.backends.reuse)."""
    from compress.backends.reuse import Same, model_key, tensors_key

    calibrated = precision == "int8"
    return ("pte", precision, model_key(module), tensors_key(example), Same(calib_data if calibrated else None),
            calibration if calibrated else None, per_channel, tuple(excluded))


def _build(module, example, precision, calib_data, calibration, per_channel, excluded, notes) -> tuple[bytes, list[Technique], "Lowered"]:
    techniques = [Technique("export", args=("executorch", "xnnpack"))]
    recurrent = {name: type(m).__name__ for name, m in module.named_modules() if isinstance(m, (nn.LSTM, nn.RNN, nn.GRU))}
    if precision == "int8":
        lowered, per_channel = _lower_static(module, example, calib_data, calibration, per_channel, excluded, notes)
        techniques.append(Technique("ptq", precision="int8", scheme="static", calibration=calibration, per_channel=per_channel))
        notes.append(f"calibration {calibration}: activation observer {CALIBRATIONS[calibration].implementation('pte').runs_as}; "
                     f"{calib_data.size} samples from {calib_data.split_name}")
    elif precision == "int8-dynamic":
        lowered = lower(_quantize(module, example, _dynamic_config(per_channel), excluded, None, None, notes), example)
        techniques.append(Technique("ptq", precision="int8", scheme="dynamic", per_channel=per_channel))
        notes.append("int8-dynamic: linear layers get int8 weights and per-call int8 activations; other ops stay fp32")
    else:
        lowered = lower(module, example)
    lowered = dataclasses.replace(lowered, recurrent=recurrent)
    return lowered.content, techniques, lowered


def _lower_static(module, example, calib_data, calibration, per_channel, excluded, notes) -> tuple["Lowered", bool]:
    """The static int8 program and whether its weight scales are per channel: asked per channel, the per-tensor
    program is kept instead when it is as faithful (compress.backends.pte.choose)."""
    from compress.backends.pte.choose import smaller_scales_if_as_faithful

    def quantize(channels: bool, notes: list[str] = notes) -> nn.Module:
        return _quantize(module, example, _static_config(calibration, channels), excluded, calib_data, calibration, notes)

    if not per_channel:
        return lower(quantize(False), example), False
    # the capture's notes once: per channel is quantized first, per tensor beside it
    quantized, per_channel, note = smaller_scales_if_as_faithful(lambda channels: quantize(channels, notes if channels else []),
                                                                 module, calib_data, example)
    lowered = lower(quantized, example)
    notes.append(note)
    return lowered, per_channel


# --- quantization -------------------------------------------------------------------------------------------------


def _static_config(calibration: str, per_channel: bool):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    base = get_symmetric_quantization_config(is_per_channel=per_channel)
    activation = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=observer(calibration, "pte").with_args(eps=2**-12))
    return dataclasses.replace(base, input_activation=activation, output_activation=activation)


def _dynamic_config(per_channel: bool):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    return get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=True)


def _ptq_quantizer():
    """ExecuTorch's XNNPACKQuantizer without its conv+BN patterns: ``prepare_pt2e`` folds BN into the convolutions
    before annotating, so in PTQ they never match, yet tracing them costs seconds per quantization (~7 s of a 19 s
    mnist_cnn export). litert-torch's quantizer runs them in QAT only, too."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class PtqXnnpackQuantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]

    return PtqXnnpackQuantizer()


def _quantize(module: nn.Module, example: tuple, config, excluded: list[str], calib_data: Dataset | None,
              calibration: str | None, notes: list[str]) -> nn.Module:
    """PT2E with XNNPACKQuantizer: prepare, observe (calibration batches, or the example for dynamic), convert."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _ptq_quantizer()
    if config.input_activation.is_dynamic:
        quantizer.set_operator_type(torch.ops.aten.linear.default, config)
    else:
        quantizer.set_global(config)
    if excluded:
        quantizer.set_filter_function(lambda node: not node_in(node, excluded))
    try:
        if calib_data is None:  # dynamic: the observers only need to see the graph run
            prepared = prepare_pt2e(capture_for_pt2e(module, example, notes), quantizer)
            with torch.no_grad():
                prepared(*example)
        else:
            prepared = prepared_and_calibrated(module, example, quantizer, calib_data, calibration, notes)
        return eval_of_capture(convert_pt2e(prepared))
    except (UsageError, EnvironmentFailure):
        raise
    except Exception as exc:
        raise EnvironmentFailure(f"PT2E quantization with XNNPACKQuantizer failed: {first_line(exc)}") from None


# --- lowering and delegate coverage ---------------------------------------------------------------------------------


@dataclass
class Lowered:
    """A program lowered to XNNPACK: its bytes, the ops each side runs, and the partitioner's reasons."""

    content: bytes
    delegated: list[dict]          # {"op", "node", "layer", "int8"} inside XNNPACK subgraphs (quantize/dequantize aside)
    portable: list[dict]           # {"op", "node", "layer", "reason"} left to the portable kernels
    recurrent: dict[str, str] = field(default_factory=dict)   # layer → LSTM/RNN/GRU, of the module before quantization

    def coverage(self) -> dict:
        return {"delegated": _counts(self.delegated), "portable": _counts(self.portable)}

    def float_ops(self, precision: str, excluded: list[str]) -> list[dict]:
        """Ops grouped by op and layer (``count``) with the reason: every op left to the portable kernels, and under
        int8 precisions the weighted ops XNNPACK runs in fp32 (excluded, or no int8 pattern for them)."""
        rows: dict[tuple, dict] = {}
        fp32_weighted = [] if precision == "fp32" else [op for op in self.delegated if op["op"] in WEIGHTED_OPS and not op["int8"]]
        for op in (*self.portable, *fp32_weighted):
            key = (op["op"], op["layer"], "reason" in op)
            if key in rows:
                rows[key]["count"] += 1
                continue
            within = bool(op["layer"]) and any(op["layer"] == n or op["layer"].startswith(n + ".") for n in excluded)
            reason = op.get("reason") or _fp32_reason(precision, self.recurrent.get(_recurrent_layer(op["layer"], self.recurrent)))
            if within:
                reason = f"{KEPT_BY_EXCLUDE}; {reason}" if "reason" in op else f"{KEPT_BY_EXCLUDE}: runs in XNNPACK in fp32"
            rows[key] = {"op": op["op"], "node": op["node"], "layer": op["layer"], "reason": reason, "count": 1}
        return list(rows.values())

    def summary(self) -> str:
        """One line: what XNNPACK runs and what falls back to the portable kernels."""
        coverage = self.coverage()
        total = len(self.delegated) + len(self.portable)
        text = f"delegate coverage: XNNPACK runs {len(self.delegated)} of {total} compute ops ({format_counts(coverage['delegated']) or 'none'})"
        if not self.portable:
            return text + "; nothing falls back to the portable kernels"
        return text + f"; portable kernels run {format_counts(coverage['portable'])}"


def lower(module: nn.Module, example: tuple) -> Lowered:
    """``torch.export`` → XNNPACK partition → ExecuTorch program; failures become one EnvironmentFailure line."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        program = torch.export.export(module, example, strict=False)
    except Exception as exc:
        raise EnvironmentFailure(f"torch.export could not capture the model for ExecuTorch: {first_line(exc)}") from None
    with _partitioner_reasons() as reasons:
        try:
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            graph = edge.exported_program().graph_module
            delegated, portable = _split_ops(graph, reasons)
            content = edge.to_executorch().buffer
        except Exception as exc:
            raise EnvironmentFailure(f"ExecuTorch could not lower the model to XNNPACK: {first_line(exc)}") from None
    return Lowered(bytes(content), delegated, portable)


def _recurrent_layer(layer: str | None, recurrent: dict[str, str]) -> str | None:
    """The recurrent layer ``layer`` is (or is inside), if any."""
    return next((name for name in recurrent if layer and (layer == name or layer.startswith(name + "."))), None)


@contextlib.contextmanager
def _partitioner_reasons():
    """Collect the XNNPACK partitioner's "why not" messages (node name → reason) while the block runs."""
    reasons: dict[str, str] = {}

    class Collect(logging.Handler):
        def emit(self, record):
            why = record.msg  # a WhyNoPartition, mutated after this call: read it now
            node = getattr(why, "node", None)
            if node is not None and getattr(why, "reason", None):
                reasons.setdefault(node.name, why.reason)

    logger = logging.getLogger(PARTITIONER_LOGGER)
    handler, level, propagate = Collect(logging.DEBUG), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the reasons are reported in float_ops, not printed
    try:
        yield reasons
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _split_ops(graph: torch.fx.GraphModule, reasons: dict[str, str]) -> tuple[list[dict], list[dict]]:
    delegated, portable = [], []
    for node in graph.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            lowered = getattr(graph, node.target)
            delegated += [{**_op_row(inner), "int8": _int8_weight(inner)} for inner in lowered.original_module.graph.nodes
                          if _is_op(inner) and op_name(inner) not in QDQ_OPS]
        elif _is_op(node):
            why = reasons.get(node.name)
            portable.append({**_op_row(node), "reason": f"not delegated to XNNPACK ({why}{_dtypes(node)}): {PORTABLE}" if why else PORTABLE_REASON})
    return delegated, portable


def _int8_weight(node: torch.fx.Node) -> bool:
    """A linear/convolution whose weight (argument 1) is dequantized int8: XNNPACK runs it as an int8 kernel."""
    weight = node.args[1] if len(node.args) > 1 else None
    return isinstance(weight, torch.fx.Node) and weight.op == "call_function" and op_name(weight).startswith("dequantize")


def _fp32_reason(precision: str, recurrent: str | None = None) -> str:
    if recurrent:
        return (f"ExecuTorch unrolls {recurrent} into per-step linear ops that XNNPACKQuantizer does not annotate: their "
                f"weights stay fp32, once per step (the .pte outgrows the fp32 parameters); --format onnx quantizes {recurrent} "
                "dynamically")
    if precision == "int8-dynamic":
        return "int8-dynamic quantizes linear layers only: runs in XNNPACK in fp32"
    return "XNNPACKQuantizer has no static int8 pattern for it here: runs in XNNPACK in fp32"


def _dtypes(node: torch.fx.Node) -> str:
    """``; it reads int64 tensors, XNNPACK computes in float and int8 only`` when the node reads such tensors."""
    kinds = sorted({str(arg.meta["val"].dtype).removeprefix("torch.") for arg in node.all_input_nodes
                    if isinstance(arg.meta.get("val"), torch.Tensor) and not arg.meta["val"].is_floating_point()
                    and arg.meta["val"].dtype not in (torch.int8, torch.uint8)})
    return f"; it reads {', '.join(kinds)} tensors, XNNPACK computes in float and int8 only" if kinds else ""


def _is_op(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and op_name(node) not in NOT_OPS


def op_name(node: torch.fx.Node) -> str:
    """``aten.convolution.default`` → ``convolution``; ``quantized_decomposed.quantize_per_tensor.default`` → ``quantize_per_tensor``."""
    name = getattr(node.target, "__name__", str(node.target))
    parts = re.sub(r"^<EdgeOpOverload: |>.*$", "", name).split(".")
    core = parts[1] if len(parts) >= 2 and parts[0] in ("aten", "quantized_decomposed", "dim_order_ops", "torchao") else parts[0]
    return core.removesuffix("_copy")


def _op_row(node: torch.fx.Node) -> dict:
    stack = node.meta.get("nn_module_stack") or {}
    layer = next(reversed(stack.values()))[0] if stack else None
    return {"op": op_name(node), "node": node.name, "layer": layer or None}


def _counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["op"]] = counts.get(row["op"], 0) + 1
    return counts

