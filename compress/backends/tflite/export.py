"""torch → one TFLite file with litert-torch: fp32, fp16, full-integer int8, dynamic-range and weight-only int8/int4.

How each precision is made:
- ``fp32``: ``litert_torch.convert`` at batch 1 (litert-torch cannot lower a dynamic batch through ``Flatten``;
  ``LiteRTRunner`` feeds any batch in chunks of 1).
- ``int8``: PT2E static quantization (torchao ``prepare_pt2e`` with litert-torch's ``PT2EQuantizer``, symmetric
  int8 weights per channel, asymmetric int8 activations calibrated on the given samples, one sample at a time),
  converted in strict QDQ mode: every op PT2E annotated runs in int8, the file keeps float inputs and outputs
  (QUANTIZE/DEQUANTIZE at the edges). Weighted ops PT2E cannot annotate (litert-torch unrolls ``nn.LSTM``/``nn.RNN``/
  ``nn.GRU`` into per-step ``FULLY_CONNECTED`` ops on float weights; embedding tables) then get int8 weights with
  dynamic-range kernels from ai-edge-quantizer, and the file is ``mixed``.
- ``int8-dynamic``, ``int8-weight``, ``int4-weight``, ``fp16``: ai-edge-quantizer on the fp32 file (dynamic-range
  int8 weights; weight-only int8/int4 weights dequantized before float compute; fp16 weights dequantized to fp32)
  for the weighted ops it supports (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, EMBEDDING_LOOKUP,
  BATCH_MATMUL on constants where the recipe allows).
Calibration methods map to PT2E activation observers (``runs_as["litert"]`` in compress.backends.calibration;
"entropy" is an L2 histogram search here, not KL). ``exclude`` names torch layers (``classifier.1``)
kept in float by every path; they become ``float_ops`` with the reason.

The same model, data and seed give the same bytes (checked in the tests).

Example:
    >>> result = export_tflite(QuantizeJob(handle, "int8", Path("model.int8.tflite"), calib_data=splits.calibration(256)))
    >>> result.precision, result.techniques
    ('int8', ['ptq:int8-static:minmax:per-channel'])
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

from compress.catalog import FP32_EXPORT, ExportResult, QuantizeJob, Technique
from compress.data import Dataset
from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.backends.pt2e import (KEPT_BY_EXCLUDE, eval_of_capture, export_batch, fixed_batch_note, node_in, observer,
                                  prepared_and_calibrated, pt2e_inputs, torch_module)
from compress.safety.io import atomic_path
from compress.catalog import CALIBRATIONS
from compress.catalog import PRECISIONS as PRECISION_RECORDS

# Weighted ops and the operand positions that may hold their weight (a constant).
WEIGHT_OPERANDS = {"FULLY_CONNECTED": (1,), "CONV_2D": (1,), "DEPTHWISE_CONV_2D": (1,), "TRANSPOSE_CONV": (1,), "CONV_3D": (1,),
                   "BATCH_MATMUL": (0, 1), "EMBEDDING_LOOKUP": (1,), "GATHER": (0,)}
# Ops that only move data: in float they cost nothing worth reporting.
DATA_MOVEMENT_OPS = {"RESHAPE", "SLICE", "STRIDED_SLICE", "TRANSPOSE", "CONCATENATION", "SQUEEZE", "EXPAND_DIMS", "PACK",
                     "UNPACK", "SPLIT", "SPLIT_V", "GATHER", "GATHER_ND", "BROADCAST_TO", "TILE", "PAD", "PADV2", "QUANTIZE",
                     "DEQUANTIZE"}


def export_tflite(job: QuantizeJob) -> ExportResult:
    """Write ``job.out``: the job's model as TFLite in ``job.precision``; layers in ``job.exclude`` stay float.

    ``job.calib_data`` (int8 only) should come from train+val; without it, ``job.seed`` draws random calibration
    inputs and a loud note says so. ``job.calibration`` names the method (compress.backends.calibration).
    """
    precision = job.precision
    module = torch_module(job.handle, "TFLite export", "litert-torch converts")
    check_precision(precision)
    excluded, calib_data, example, notes = pt2e_inputs(job, module)
    content, techniques = build_tflite(module, example, precision, calib_data, job.calibration, job.per_channel, excluded,
                                       notes)
    graph = TfliteGraph(content, module)
    float_ops = graph.float_ops(precision, excluded, module)
    notes += graph.summary_notes(precision)
    if graph.io_note():
        notes.append(graph.io_note())
    if any(t.dtype == torch.int64 for t in example):
        notes.append("int64 inputs are int32 in the file (litert-torch downcasts 64-bit types): token ids must be < 2**31")
    notes.append(fixed_batch_note(export_batch(job.handle)))
    kept_float = any(op["reason"] == KEPT_BY_EXCLUDE for op in float_ops)
    final = "mixed" if kept_float or len([t for t in techniques if t.kind in ("ptq", "cast")]) > 1 else precision
    out_path = Path(job.out)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(content)
    return ExportResult(out_path, final, techniques, float_ops, notes)


def check_precision(precision: str) -> None:
    """A UsageError unless TFLite implements ``precision`` (fp32, or one of the format's precisions)."""
    from compress.catalog import get

    choices = ("fp32", *get("tflite").precisions)
    if precision not in choices:
        raise UsageError(f"unknown TFLite precision {precision!r}; choose one of {', '.join(choices)}")


def build_tflite(module: nn.Module, example: tuple, precision: str, calib_data: Dataset | None, calibration: str,
                 per_channel: bool, excluded: list[str], notes: list[str]) -> tuple[bytes, list[Technique]]:
    """The TFLite bytes of ``module`` at ``precision`` and the techniques applied (notes appended to ``notes``).

    Within one run (compress.backends.reuse) the same inputs convert once: the pre-flight's dry run, the fp32 file
    and the quantized file share their conversions."""
    from compress.backends.reuse import reused

    key = conversion_key(module, example, precision, calib_data, calibration, per_channel, excluded)
    return reused(key, lambda: _build(module, example, precision, calib_data, calibration, per_channel, excluded, notes), notes)


def conversion_key(module: nn.Module, example: tuple, precision: str, calib_data: Dataset | None, calibration: str,
                   per_channel: bool, excluded: list[str]) -> tuple:
    """What makes one TFLite conversion (compress.backends.reuse): what the precision does not use is left out."""
    from compress.backends.reuse import Same, model_key, tensors_key

    calibrated = PRECISION_RECORDS[precision].calibrated
    return ("tflite", precision, model_key(module), tensors_key(example), Same(calib_data if calibrated else None),
            calibration if calibrated else None, *((per_channel, tuple(excluded)) if precision != "fp32" else ()))


def _build(module, example, precision, calib_data, calibration, per_channel, excluded, notes) -> tuple[bytes, list[Technique]]:
    with quiet():
        if precision == "int8":
            return _static_int8(module, example, calib_data, calibration, per_channel, excluded, notes)
        if precision == "fp32":
            return convert(module, example), [FP32_EXPORT]
    content, _ = build_tflite(module, example, "fp32", None, calibration, per_channel, [], notes)
    with quiet():
        return _aeq_precision(content, module, precision, per_channel, excluded, notes)



# --- conversion -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet():
    """litert-torch's progress lines and ai-edge-quantizer's reports go to stderr, never onto stdout (--json)."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def convert(module: nn.Module, example: tuple, quant_config=None) -> bytes:
    """The TFLite bytes litert-torch makes of ``module``; its failures become one EnvironmentFailure line."""
    try:
        import litert_torch
    except ImportError:
        raise EnvironmentFailure("litert-torch is not installed: pip install litert-torch") from None
    try:
        return litert_torch.convert(module, example, quant_config=quant_config).model_content()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # litert-torch raises torch, jax and MLIR errors alike
        raise EnvironmentFailure(f"litert-torch could not convert the model to TFLite: {first_line(exc)}") from None


# --- int8: PT2E static ---------------------------------------------------------------------------------------------


def _static_int8(module, example, calib_data: Dataset, calibration, per_channel, excluded, notes) -> tuple[bytes, list[Technique]]:
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = _layer_aware_quantizer(calibration, per_channel, excluded)
    prepared = prepared_and_calibrated(module, example, quantizer, calib_data, calibration, notes)
    converted = eval_of_capture(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
    from compress.compat import litert_strict_qdq

    with litert_strict_qdq():
        content = convert(converted, example, QuantConfig(pt2e_quantizer=quantizer))
    techniques = [Technique("ptq", precision="int8", scheme="static", calibration=calibration, per_channel=per_channel)]
    notes.append(f"calibration {calibration}: activation observer {CALIBRATIONS[calibration].implementation('tflite').runs_as}; "
                 f"{calib_data.size} samples from {calib_data.split_name}")
    leftovers = TfliteGraph(content, module).float_weighted_scopes(excluded)
    if leftovers:
        content = _aeq(content, leftovers, "dynamic", 8, per_channel, notes)
        techniques.append(Technique("ptq", precision="int8", scheme="dynamic", per_channel=per_channel))
        layers = sorted({op["layer"] or "unnamed layers" for op in leftovers.values()})
        gaps = sorted({static_gap(module, op["layer"]) for op in leftovers.values()})
        notes.append(f"static int8 left {len(leftovers)} weighted op(s) on float weights in {', '.join(layers)} "
                     f"({'; '.join(gaps)}): they get int8 weights with "
                     "dynamic-range kernels (activations quantized on the fly); the rest is static int8")
    return content, techniques


def static_gap(module: nn.Module, layer: str | None) -> str:
    """Why PT2E static int8 leaves ``layer``'s weights in float (also used by the pre-flight)."""
    try:
        kind = type(module.get_submodule(layer)) if layer else None
    except AttributeError:  # e.g. modules unlifted from torch.export programs keep no submodules
        kind = None
    if kind in (nn.LSTM, nn.RNN, nn.GRU):
        return f"litert-torch unrolls {kind.__name__} into per-step FULLY_CONNECTED ops that PT2E does not annotate"
    if kind in (nn.Embedding, nn.EmbeddingBag):
        return "PT2E does not annotate embedding lookups"
    return "PT2E has no static int8 pattern for this op"


def _layer_aware_quantizer(calibration: str, per_channel: bool, excluded: list[str]):
    """litert-torch's PT2EQuantizer with the calibration method's activation observer and a working layer filter.

    (litert-torch's own ``set_module_name`` filter strips three characters of ``L__self__`` and never matches.)
    """
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    base = get_symmetric_quantization_config(is_per_channel=per_channel)
    activation = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=observer(calibration, "tflite").with_args(eps=2**-12))
    config = dataclasses.replace(base, input_activation=activation, output_activation=activation)

    class LayerAwareQuantizer(PT2EQuantizer):
        # gru_io_only asserts on GRUs whose hidden-state output is unused; GRUs are unrolled (and covered) like LSTMs.
        STATIC_OPS = [op for op in PT2EQuantizer.STATIC_OPS if op != "gru_io_only"]

        def transform_for_annotation(self, model):
            _float_scalars(model)  # else `2 * x` becomes an int64 constant that the quantizer then tries to quantize
            return super().transform_for_annotation(model)

        def _annotate_for_static_quantization_config(self, model):
            return self._annotate_all_static_patterns(model, self.global_config, lambda node: not node_in(node, excluded))

    return LayerAwareQuantizer().set_global(config)


def _float_scalars(model) -> None:
    """Python int operands of float add/mul become floats (litert-torch turns scalars into constants of their type)."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
            continue
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        value = tensors[0].meta.get("val") if tensors else None
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            node.args = tuple(float(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in node.args)



# --- ai-edge-quantizer: fp16, dynamic-range, weight-only -----------------------------------------------------------


def _aeq_precision(fp32: bytes, module, precision, per_channel, excluded, notes) -> tuple[bytes, list[Technique]]:
    scopes = TfliteGraph(fp32, module).float_weighted_scopes(excluded)
    if not scopes:
        raise UsageError(f"{precision} quantizes weighted ops and this model has none outside --exclude: nothing would change")
    if precision == "fp16":
        return _aeq(fp32, scopes, "fp16", 16, per_channel, notes), [FP32_EXPORT, Technique("cast", precision="fp16", variant="weights")]
    if precision == "int8-dynamic":
        dynamic = Technique("ptq", precision="int8", scheme="dynamic", per_channel=per_channel)
        return _aeq(fp32, scopes, "dynamic", 8, per_channel, notes), [FP32_EXPORT, dynamic]
    bits = PRECISION_RECORDS[precision].weight_bits
    content = _aeq(fp32, scopes, "weight", bits, per_channel, notes)
    notes.append(f"weight-only int{bits}: weights are dequantized to float before each op (smaller file, float compute)")
    weight_only = Technique("ptq", precision=f"int{bits}-weight", scheme="weight-only", per_channel=per_channel,
                            written=f"int{bits}-weight-only")
    return content, [FP32_EXPORT, weight_only]


def _aeq(content: bytes, scopes: dict[str, dict], mode: str, bits: int, per_channel: bool, notes: list[str]) -> bytes:
    """Quantize exactly the ops whose scope (output tensor names) is in ``scopes`` with ai-edge-quantizer."""
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
    except ImportError:
        raise EnvironmentFailure("ai-edge-quantizer is not installed: pip install ai-edge-quantizer") from None
    regex = "^(?:" + "|".join(re.escape(scope) for scope in sorted(scopes)) + ")$"
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    operation = qtyping.TFLOperationName.ALL_SUPPORTED
    manager = recipe_manager.RecipeManager()
    if mode == "dynamic":
        manager.add_dynamic_config(regex, operation, num_bits=bits, granularity=granularity)
        if not per_channel and any(op["op"] == "DEPTHWISE_CONV_2D" for op in scopes.values()):
            # LiteRT's dynamic-range depthwise kernel returns garbage (NaN) with per-tensor weights
            manager.add_dynamic_config(regex, qtyping.TFLOperationName.DEPTHWISE_CONV_2D, num_bits=bits,
                                       granularity=qtyping.QuantGranularity.CHANNELWISE)
            notes.append("per-tensor weights, except DEPTHWISE_CONV_2D: per-channel there (LiteRT's dynamic-range "
                         "depthwise kernel gives wrong results with per-tensor weights)")
    elif mode == "weight":
        manager.add_weight_only_config(regex, operation, num_bits=bits, granularity=granularity)
    else:
        manager.add_weight_only_config(regex, operation, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    engine = quantizer.Quantizer(bytearray(content), manager.get_quantization_recipe())
    try:
        return bytes(engine.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
    except Exception as exc:
        raise EnvironmentFailure(f"ai-edge-quantizer failed ({mode}, {bits}-bit): {first_line(exc)}") from None


# --- reading the file back --------------------------------------------------------------------------------------


class TfliteGraph:
    """The ops of a TFLite file (main subgraph) with their tensors' types and the torch layer each came from.

    litert-torch names tensors after the module path, e.g.
    ``…MnistCNN/torch.nn.modules.container.Sequential_classifier/torch.nn.modules.linear.Linear_1;`` → ``classifier.1``.
    """

    def __init__(self, content: bytes, module: nn.Module | None = None):
        from ai_edge_litert import schema_py_generated as schema

        self.types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        operators = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        model = schema.Model.GetRootAs(content, 0)
        graph = model.Subgraphs(0)
        tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
        constant = [self._has_data(model, t.Buffer()) for t in tensors]
        self.ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = operators.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            indices = [int(t) for t in op.InputsAsNumpy()]
            inputs = [(self.types[tensors[t].Type()], constant[t]) if t >= 0 else ("NONE", False) for t in indices]
            outputs = [tensors[t].Name().decode() for t in op.OutputsAsNumpy() if t >= 0]
            output_types = [self.types[tensors[t].Type()] for t in op.OutputsAsNumpy() if t >= 0]
            entry = {"op": name, "inputs": inputs, "outputs": outputs, "output_types": output_types,
                     "scope": "".join(f"{o};" for o in outputs)}
            weights = [i for i in WEIGHT_OPERANDS.get(name, ()) if i < len(indices) and indices[i] >= 0 and constant[indices[i]]]
            shape = tuple(int(d) for d in tensors[indices[weights[0]]].ShapeAsNumpy()) if weights else None
            entry["layer"] = _layer_of(outputs, module, shape)
            self.ops.append(entry)
        self.input_types = [self.types[tensors[graph.Inputs(i)].Type()] for i in range(graph.InputsLength())]
        self.output_types = [self.types[tensors[graph.Outputs(i)].Type()] for i in range(graph.OutputsLength())]

    @staticmethod
    def _has_data(model, buffer_index: int) -> bool:
        if buffer_index <= 0:
            return False
        buffer = model.Buffers(buffer_index)
        return buffer.DataLength() > 0 or buffer.Size() > 1

    def io_note(self) -> str | None:
        """Says which inputs/outputs are quantized integers in the file, if any."""
        if not any(t in ("INT8", "UINT8", "INT16") for t in self.input_types + self.output_types):
            return None
        return (f"I/O types in the file: inputs {', '.join(self.input_types)}; outputs {', '.join(self.output_types)} "
                "(scale and zero-point stored with them): apps quantize inputs and dequantize outputs, as LiteRTRunner does")

    @staticmethod
    def _weights(op: dict) -> list[str]:
        """Types of the op's constant weight operands (none for matmuls of two activations, or non-weighted ops)."""
        inputs = op["inputs"]
        return [inputs[i][0] for i in WEIGHT_OPERANDS.get(op["op"], ()) if i < len(inputs) and inputs[i][1]]

    def _weighted(self, op: dict) -> bool:
        return bool(self._weights(op))

    def _float_weight(self, op: dict) -> bool:
        return "FLOAT32" in self._weights(op)

    @staticmethod
    def _float_activation(op: dict) -> bool:
        return any(not const and dtype == "FLOAT32" for dtype, const in op["inputs"]) or "FLOAT32" in op["output_types"]

    def float_weighted_scopes(self, excluded: list[str]) -> dict[str, dict]:
        """Scope → op of every weighted op still on float32 weights, outside the excluded layers."""
        return {op["scope"]: op for op in self.ops
                if self._weighted(op) and self._float_weight(op) and not _within(op["layer"], excluded)}

    def float_ops(self, precision: str, excluded: list[str], module: nn.Module | None = None) -> list[dict]:
        """Ops still computing in float, grouped by op and layer (``count``): weighted ops on float weights, and under
        int8 also activation matmuls and other compute ops between QUANTIZE/DEQUANTIZE (data movement aside)."""
        if precision == "fp32":
            return []
        dynamic_layers = set(self.dynamic_by_layer()) if precision == "int8" else set()
        rows: dict[tuple, dict] = {}
        for op in self.ops:
            if precision != "int8":
                is_float = self._weighted(op) and self._float_weight(op)
            elif self._weighted(op):
                is_float = self._float_activation(op) and self._float_weight(op)
            else:
                is_float = op["op"] not in DATA_MOVEMENT_OPS and self._float_activation(op)
            if not is_float:
                continue
            key = (op["op"], op["layer"])
            if key in rows:
                rows[key]["count"] += 1
                continue
            if _within(op["layer"], excluded):
                reason = KEPT_BY_EXCLUDE
            else:
                reason = _float_reason(op, precision, op["layer"] in dynamic_layers, module)
            rows[key] = {"op": op["op"], "node": op["outputs"][0] if op["outputs"] else "", "layer": op["layer"],
                         "reason": reason, "count": 1}
        return list(rows.values())

    def dynamic_by_layer(self) -> dict[str | None, dict[str, int]]:
        """Layer → op counts of weighted ops running dynamic-range kernels (int8 weights, float activations)."""
        return self._count_by_layer(lambda op: self._weighted(op) and self._float_activation(op) and not self._float_weight(op))

    def float_compute_by_layer(self) -> dict[str | None, dict[str, int]]:
        """Layer → op counts of non-weighted ops computing in float (data movement aside)."""
        return self._count_by_layer(lambda op: not self._weighted(op) and op["op"] not in DATA_MOVEMENT_OPS
                                    and self._float_activation(op))

    def _count_by_layer(self, keep) -> dict[str | None, dict[str, int]]:
        counts: dict[str | None, dict[str, int]] = {}
        for op in self.ops:
            if keep(op):
                layer = counts.setdefault(op["layer"], {})
                layer[op["op"]] = layer.get(op["op"], 0) + 1
        return counts

    def summary_notes(self, precision: str) -> list[str]:
        """Under int8: which ops run dynamic-range kernels (int8 weights, float activations)."""
        counts = self.dynamic_by_layer() if precision == "int8" else {}
        if not counts:
            return []
        return ["dynamic-range ops (int8 weights, float activations): "
                + "; ".join(f"{layer or 'model'}: {format_counts(ops)}" for layer, ops in counts.items())]


def format_counts(counts: dict[str, int]) -> str:
    """``{"ADD": 2, "TANH": 1}`` → ``ADD×2, TANH``."""
    return ", ".join(f"{op}×{n}" if n > 1 else op for op, n in sorted(counts.items()))


def _float_reason(op: dict, precision: str, in_dynamic_layer: bool, module: nn.Module | None) -> str:
    name = op["op"]
    if precision != "int8":
        return f"ai-edge-quantizer has no {precision} recipe for {name}: its weights stay float32"
    if name == "BATCH_MATMUL":
        return "a matmul of two activations: litert-torch's PT2E quantizer has no int8 pattern for it"
    if in_dynamic_layer and module is not None:
        return f"{static_gap(module, op['layer'])}; its weights are dynamic-range int8, its gate math runs in float"
    if name in WEIGHT_OPERANDS:
        return "neither static int8 nor the dynamic-range fallback covers this op: its weights stay float32"
    return "no int8 pattern for it in litert-torch's PT2E quantizer: it runs in float between QUANTIZE/DEQUANTIZE"


def _within(layer: str | None, layers: list[str]) -> bool:
    return layer is not None and any(layer == name or layer.startswith(name + ".") for name in layers)


def _layer_of(tensor_names: list[str], module: nn.Module | None, weight_shape: tuple | None = None) -> str | None:
    """The torch layer an op came from.

    litert-torch names an op's output after its module path (``Class_attr`` segments joined by ``/``; fused ops list
    several locations, and the layer with weights wins). Graph outputs are renamed to the signature's name, so a
    weighted op without a location is matched to the one torch layer whose weight has its shape.
    """
    if module is None:
        return None
    layers = [_module_path(location, module) for name in tensor_names for location in name.split(";") if "/" in location]
    layers = [layer for layer in layers if layer]
    weighted = [layer for layer in layers if any(True for _ in module.get_submodule(layer).parameters(recurse=False))]
    if weighted or layers:
        return (weighted or layers)[0]
    return _layer_by_weight_shape(module, weight_shape) if weight_shape else None


def _module_path(location: str, module: nn.Module) -> str | None:
    path, current = [], module
    for segment in location.split("/")[1:]:
        for child_name, child in current.named_children():
            kind = type(child)
            if segment == f"{kind.__module__}.{kind.__qualname__}_{child_name}":
                path.append(child_name)
                current = child
                break
        else:
            break
    return ".".join(path) or None


def _layer_by_weight_shape(module: nn.Module, shape: tuple) -> str | None:
    """The only layer whose ``weight`` is ``shape`` (as TFLite lays it out: OHWI convs, 1HWO depthwise), else None."""
    matches = []
    for name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
            continue
        dims = tuple(weight.shape)
        layouts = {dims}
        if len(dims) == 4:
            layouts |= {(dims[0], dims[2], dims[3], dims[1]), (dims[1], dims[2], dims[3], dims[0])}
        if tuple(shape) in layouts:
            matches.append(name)
    return matches[0] if len(matches) == 1 else None


