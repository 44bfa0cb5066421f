"""Quantize an fp32 ONNX file with onnxruntime.quantization, and rank layers by how much quantizing each hurts.

Precisions:
  int8          static QDQ: uint8 activations (calibrated), int8 weights (per-channel by default). ORT's static path
                has no LSTM or Attention kernel, so those are then quantized dynamically (DynamicQuantizeLSTM,
                QAttention): precision "mixed".
                ``dynamic_op_types`` (Conv, Gemm, MatMul) are quantized dynamically the same way, e.g. Linear layers
                as MatMulInteger next to static QDQ convs. With MatMul among them, products of two activations
                (attention scores and context) stay float: no dynamic kernel takes them, and static QDQ around them
                (Q/DQ per head product) cost more time than the int8 product saved (3 % of the zoo transformer).
  int8-dynamic  int8 weights, activation ranges measured on every call (MatMulInteger, ConvInteger, DynamicQuantizeLSTM).
  fp16          every float tensor in half precision; inputs/outputs stay float32.
  int4-weight   4-bit block-wise weights of MatMul/Gemm (MatMulNBits, block 32); other ops stay float.
  int8-weight   8-bit block-wise weights of MatMul/Gemm (MatMulNBits with bits=8).

``exclude`` takes torch layer names (``classifier.1``, or a parent like ``classifier``) and/or ONNX node names; a layer
name matches the nodes whose ``pkg.torch.onnx.name_scopes`` metadata (written by the dynamo exporter) puts them inside
that module, see ``compress.backends.onnx.export.node_layer``.

Example:
    >>> result = quantize_onnx(QuantizeJob(None, "int8", Path("model.int8.onnx"), Path("model.fp32.onnx"), splits.calibration(256)))
    >>> result.precision, result.techniques
    ('int8', ['ptq:int8-static:minmax:per-channel'])
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from compress.catalog import ExportResult, QuantizeJob, Technique
from compress.data import Dataset
from compress.errors import CompressError, EnvironmentFailure, first_line, UsageError
from compress.backends.onnx.cpu_features import cpu_int8_features, needs_reduce_range
from compress.backends.onnx.export import node_layer, quiet_logger
from compress.catalog import CALIBRATIONS, check_calibration, get as get_format
from compress.catalog import PRECISIONS as PRECISION_RECORDS
from compress.safety.io import atomic_path, disk_full_named
from compress.backends.onnx.session import check_loads_in_child
from compress.backends.onnx.ops import DYNAMIC_OP_TYPES

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Attention", "Gather")
INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulNBits",
               "QLinearConv", "QLinearMatMul", "GatherBlockQuantized")
# Static QDQ covers the weighted ops and the ops that let int8 flow between them; leaving out Add/Mul/Slice/Squeeze/
# Concat (ORT's default includes them) gives fewer Q/DQ pairs: an unrolled RNN comes out 38 % smaller with higher SQNR.
STATIC_OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "MaxPool", "AveragePool", "Relu", "Clip",
                   "Reshape", "Flatten", "Transpose", "Resize", "Pad")
STATIC_DYNAMIC_FALLBACK = ("LSTM", "Attention")  # no QDQ kernel; ORT's dynamic path quantizes them (QAttention)
COVERED_OPS = {  # weighted ops each path quantizes (the rest of WEIGHTED_OPS stays float)
    "int8": ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "LSTM", "Attention"),   # LSTM, Attention: dynamic pass
    "int8-dynamic": ("Conv", "Gemm", "MatMul", "LSTM", "Attention"),
    "fp16": WEIGHTED_OPS,
    "int4-weight": ("Gemm", "MatMul"),
    "int8-weight": ("Gemm", "MatMul"),
}
# onnxruntime 1.32 segfaults creating a CPU session for fp16 Transpose -> MatMul (its NCHWc layout pass, at the
# default optimization level); keeping Transpose in fp32 (Cast -> Transpose -> Cast) avoids it.
FP16_KEEP_FLOAT_OPS = ("Transpose",)
RANDOM_CALIBRATION_SAMPLES = 32
CALIBRATION_BATCH = 32
MINMAX_CALIBRATION_BATCH = 8  # minmax ranges are ReduceMin/ReduceMax nodes over every calibrated tensor: smaller batches
                              # keep each tensor in cache for them (BERT-like encoder, 256 samples: 9.7 → 7.9 s, same ranges)


def quantize_onnx(job: QuantizeJob) -> ExportResult:
    """Write ``job.out``: ``job.fp32`` quantized to ``job.precision``; layers in ``job.exclude`` stay float.

    7-bit weights (reduce_range) are picked only on x86 CPUs without VNNI (see cpu_features); ``job.seed`` draws the
    random calibration inputs used when ``job.calib_data`` is None (with a loud note); ``job.calibration`` names the
    method (compress.backends.calibration). ``job.dynamic_op_types``: with
    ``int8``, these op types (of DYNAMIC_OP_TYPES) are quantized dynamically and the rest static.
    """
    precision, calib_data, exclude, dynamic_op_types = job.precision, job.calib_data, job.exclude, job.dynamic_op_types
    check_precision(precision)
    unknown = [op for op in dynamic_op_types if op not in DYNAMIC_OP_TYPES]
    if unknown:
        raise UsageError(f"op type {unknown[0]!r} cannot be quantized dynamically; choose from {', '.join(DYNAMIC_OP_TYPES)}")
    try:
        check_calibration(job.calibration, "onnx" if PRECISION_RECORDS[precision].calibrated else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fp32_path, out_path = Path(job.fp32), Path(job.out)
    model = onnx.load(str(fp32_path))
    excluded = resolve_exclude(model, exclude)
    notes: list[str] = []
    # onnxruntime writes next to the model it reads (<model>-inferred.onnx, augmented models, caches): it reads a copy
    # in a temporary folder, removed on every exit; disk_full_named measures free space before that cleanup
    with tempfile.TemporaryDirectory(prefix="compress-ort-") as work, atomic_path(out_path) as tmp, quiet_logger(), \
            disk_full_named(out_path.parent, work):
        work = Path(work)
        source = Path(shutil.copyfile(fp32_path, work / "fp32.onnx"))
        reduce_range = False
        if PRECISION_RECORDS[precision].int8_compute:
            reduce_range = needs_reduce_range(cpu_int8_features())
            notes.append(f"reduce_range {'on (7-bit weights)' if reduce_range else 'off'}: chosen for this CPU "
                         f"({_cpu_summary()}); onnxruntime's u8s8 int8 kernels can saturate on x86 without VNNI")
        if precision == "int8":
            if calib_data is None:
                calib_data = random_calibration(fp32_path, job.seed)
                notes.append(f"NO CALIBRATION DATA: activation ranges come from {calib_data.size} random inputs; "
                             "accuracy will suffer and is not measured against real data. Pass --data.")
            products = activation_products(model) if "MatMul" in dynamic_op_types else []
            techniques = _static_int8(source, model, tmp, work, calib_data, job.calibration, job.per_channel, reduce_range,
                                      [*excluded, *products], dynamic_op_types=tuple(dynamic_op_types))
            if products:
                notes.append(f"{len(products)} products of two activations ({', '.join(products[:4])}) stay float: "
                             "no dynamic int8 kernel takes them")
        elif precision == "int8-dynamic":
            techniques = _dynamic_int8(model, tmp, work, job.per_channel, reduce_range, excluded)
        elif precision == "fp16":
            techniques = _fp16(model, tmp, excluded)
        else:
            techniques = _weight_only(model, tmp, PRECISION_RECORDS[precision], excluded)
        quantized = onnx.load(str(tmp))
        float_ops = float_weighted_ops(quantized, precision, set(excluded))
        _strip_graph_annotations(quantized)
        _check(quantized, precision)
        onnx.save(quantized, str(tmp))
        check_loads_in_child(tmp)
    final = "mixed" if len(techniques) > 1 else precision
    integer = None if precision == "fp16" else any(n.op_type in INTEGER_OPS or n.op_type == "DequantizeLinear" for n in quantized.graph.node)
    if integer is False:
        notes.append(f"nothing was quantized: the model has no op that the {precision} path covers")
    return ExportResult(out_path, final, techniques, float_ops, notes, holds_integer_ops=integer)


def check_precision(precision: str) -> None:
    """A UsageError unless the ONNX format implements ``precision``."""
    if precision not in get_format("onnx").precisions:
        raise UsageError(f"unknown ONNX precision {precision!r}; choose one of {', '.join(get_format('onnx').precisions)}")


def resolve_exclude(model: onnx.ModelProto, exclude) -> list[str]:
    """ONNX node names for torch layer names and/or node names; an unknown name is a UsageError listing the layers."""
    layers = node_layers(model)
    nodes: list[str] = []
    for item in exclude:
        hits = [name for name, layer in layers.items()
                if name == item or (layer is not None and (layer == item or layer.startswith(item + ".")))]
        if not hits:
            known = sorted(quantizable_layers(model)) or sorted({layer for layer in layers.values() if layer})
            raise UsageError(f"--exclude {item!r} matches no layer or node of the model; its quantizable layers: {', '.join(known) or 'none'}")
        nodes += [h for h in hits if h not in nodes]
    return nodes


def node_layers(model: onnx.ModelProto) -> dict[str, str | None]:
    """``{node name: torch layer or None}`` for every node of the main graph."""
    initializers = {i.name for i in model.graph.initializer}
    return {node.name: node_layer(node, initializers) for node in model.graph.node}


def random_calibration(fp32_path: Path, seed: int, samples: int = RANDOM_CALIBRATION_SAMPLES) -> Dataset:
    """Random inputs drawn from the model's input spec (only when no data was given: a last resort)."""
    from compress.loading.model import load_model

    return load_model(fp32_path).input_spec.random_dataset(samples, seed)


def analyze_sensitivity(
    fp32_path: str | Path,
    calib_data: Dataset | None,
    eval_inputs: Dataset,
    calibration: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool | None = None,
) -> list[dict]:
    """Quantize one layer at a time (static int8; LSTMs dynamically) and measure fidelity against fp32 on ``eval_inputs``.

    Returns one row per layer, most harmful first: ``{"layer", "nodes", "ops", "sqnr_db", "top1_agreement",
    "max_abs_error", "cosine"}`` (worst value over the model's outputs). Ranges are calibrated once and reused.
    """
    from compress.runtimes.base import run_dataset
    from compress.backends.onnx.session import OrtRunner

    fp32_path = Path(fp32_path)
    model = onnx.load(str(fp32_path))
    calib_data = calib_data if calib_data is not None else random_calibration(fp32_path, 0)
    reduce_range = needs_reduce_range(cpu_int8_features()) if reduce_range is None else reduce_range
    reference = run_dataset(OrtRunner(fp32_path, threads=1), eval_inputs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="compress-sensitivity-") as work, quiet_logger(), disk_full_named(work):
        work = Path(work)
        source = Path(shutil.copyfile(fp32_path, work / "fp32.onnx"))  # onnxruntime writes next to what it reads
        for layer, nodes in quantizable_layers(model).items():
            single = work / "layer.onnx"
            _static_int8(source, model, single, work, calib_data, calibration, per_channel, reduce_range, (), only=nodes)
            outputs = run_dataset(OrtRunner(single, threads=1), eval_inputs)
            ops = sorted({n.op_type for n in model.graph.node if n.name in nodes})
            rows.append({"layer": layer, "nodes": nodes, "ops": ops, **_worst_fidelity(reference, outputs)})
    return sorted(rows, key=lambda r: (r["sqnr_db"], r["top1_agreement"] if r["top1_agreement"] is not None else 1.0))


def quantizable_layers(model: onnx.ModelProto) -> dict[str, list[str]]:
    """``{torch layer (or node name when unknown): [node names]}`` for the weighted ops the int8 path quantizes."""
    initializers = {i.name for i in model.graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in COVERED_OPS["int8"] or not any(i in initializers for i in node.input):
            continue
        if node.op_type == "Gather" and node.input[0] not in initializers:
            continue
        groups.setdefault(node_layer(node, initializers) or node.name, []).append(node.name)
    return groups


def _worst_fidelity(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    from compress.data.evaluate import fidelity

    per_output = [fidelity(r, o) for r, o in zip(reference, outputs)]
    agreements = [f["top1_agreement"] for f in per_output if f["top1_agreement"] is not None]
    return {
        "sqnr_db": min(f["sqnr_db"] for f in per_output),
        "top1_agreement": min(agreements) if agreements else None,
        "max_abs_error": max(f["max_abs_error"] for f in per_output),
        "cosine": min(f["cosine"] for f in per_output),
    }


# --- the precisions -------------------------------------------------------------------------------------------


def _static_int8(fp32_path, model, out, work, calib_data, calibration, per_channel, reduce_range, excluded, only=None,
                 dynamic_op_types: tuple[str, ...] = ()) -> list[Technique]:
    """Static QDQ for the covered ops. LSTMs and fused Attention (no static kernels) and ``dynamic_op_types`` are first
    quantized dynamically.

    That pass comes first because ORT's dynamic quantizer rewrites every Gemm, also already-quantized QDQ ones; the
    Gemms are rewritten beforehand as MatMul + Add under their own names, so ``exclude`` and the ranges still apply.
    """
    kinds = (*STATIC_DYNAMIC_FALLBACK, *dynamic_op_types)
    dynamic_nodes = {n.name: n.op_type for n in model.graph.node if n.op_type in kinds}
    base = Path(fp32_path)
    if dynamic_nodes:
        base = work / "matmul.onnx"
        if not base.exists():
            onnx.save(gemm_to_matmul(model), str(base))
    chosen = {name: op for name, op in dynamic_nodes.items() if name not in excluded and (only is None or name in only)}
    static_only = None if only is None else [name for name in only if name not in dynamic_nodes]
    techniques, source = [], base
    if chosen:
        source = work / "dynamic.onnx"
        op_types = sorted({"MatMul" if op == "Gemm" else op for op in chosen.values()})  # Gemms are MatMuls by now
        _quantize_dynamic(base, source, per_channel, reduce_range, excluded, op_types=op_types, only=list(chosen))
        _rename_dynamic_quantizers(source)
        techniques.append(Technique("ptq", precision="int8", scheme="dynamic", op_types=tuple(k for k in kinds if k in chosen.values())))
    if static_only == []:
        shutil.copyfile(source, out)
        return techniques
    # the fp32 graph's ranges serve when they cover every tensor the static pass reads (the dynamic MatMuls took
    # the products before the bias away): the static and dynamic-MatMul files of one run share one calibration
    covered = source == Path(fp32_path) or calibrated_tensors(onnx.load(str(source))) <= calibrated_tensors(model)
    ranges = calibrate(Path(fp32_path) if covered else base, calib_data, calibration, work)
    _quantize_static(source, out, per_channel, reduce_range, excluded, ranges, only=static_only)
    return [*techniques, Technique("ptq", precision="int8", scheme="static", calibration=calibration, per_channel=per_channel,
                                   reduce_range=reduce_range)]


def _rename_dynamic_quantizers(path: Path) -> None:
    """ORT names a DynamicQuantizeLinear ``<tensor>_QuantizeLinear``, as the static pass names its QuantizeLinear of
    the same tensor (two nodes of one name: an invalid model); suffix the dynamic ones with ``_dynamic``."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            node.name = f"{node.name}_dynamic"
    onnx.save(model, str(path))


def activation_products(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls whose two inputs are both activations (no weight): attention's QKᵀ and AV."""
    weights = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and not weights & set(node.input)]


def calibrated_tensors(model: onnx.ModelProto) -> set[str]:
    """The tensors a calibration of ``model`` measures: inputs and outputs of its static op types' nodes, weights aside."""
    weights = {init.name for init in model.graph.initializer}
    return {name for node in model.graph.node if node.op_type in STATIC_OP_TYPES
            for name in (*node.input, *node.output) if name and name not in weights}


def calibrate(model_path: Path, calib_data: Dataset, calibration: str, work: Path) -> Path:
    """Activation ranges of the tensors static int8 quantizes, saved as an ORT calibration cache (JSON) in ``work``.

    The method's knobs come from compress.backends.calibration ("entropy" is KL divergence here). Calibrating here
    rather than inside ``quantize_static`` lets the histogram methods use 2048 bins: through
    ``quantize_static`` ORT's entropy calibrator gets 128 bins for 128 quantized bins and returns the min/max range.
    Within one run (compress.backends.reuse) the same file, data and method are calibrated once: repair attempts and
    the measured static/dynamic pick reuse the ranges.
    """
    import hashlib

    from compress.backends.reuse import Same, reused

    cache = work / f"ranges.{calibration}.{Path(model_path).stem}.json"
    if cache.exists():  # calibrated earlier in this work folder (sensitivity analysis quantizes many times)
        return cache
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    (ranges,) = reused(("onnx-ranges", digest, Same(calib_data), calibration),
                       lambda: (_measure_ranges(Path(model_path), calib_data, calibration, work),), [])
    cache.write_bytes(ranges)
    return cache


def _measure_ranges(model_path: Path, calib_data: Dataset, calibration: str, work: Path) -> bytes:
    """The ORT calibration cache (JSON bytes) of ``model_path`` on ``calib_data``."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    measured = work / "measured-ranges.json"
    try:
        create = check_calibration(calibration, "onnx").create
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        calibrator = create(model_path, list(STATIC_OP_TYPES), str(work / "augmented.onnx"), dict(CALIBRATIONS[calibration].knobs))
        calibrator.infer_session = _calibration_session(calibrator)
        batch = MINMAX_CALIBRATION_BATCH if calibration == "minmax" else CALIBRATION_BATCH
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress; stdout belongs to --json
            calibrator.collect_data(_DataReader(onnx.load(str(model_path)), calib_data, batch))
            save_tensors_data(calibrator.compute_data(), measured)
    except CompressError:
        raise
    except Exception as exc:
        raise EnvironmentFailure(f"onnxruntime calibration ({calibration}) failed: {first_line(exc)}") from None
    return measured.read_bytes()


def _quantize_static(source, out, per_channel, reduce_range, excluded, ranges: Path, only=None) -> None:
    """ORT static QDQ from calibrated ``ranges`` (tagged with the ORT method that measured them): uint8
    activations, int8 weights; ``only`` limits it to those nodes."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    try:
        quantize_static(str(source), str(out), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(STATIC_OP_TYPES), per_channel=per_channel,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=list(only or []), nodes_to_exclude=list(excluded),
                        calibrate_method=load_tensors_data(ranges).calibration_method, calibration_cache_path=str(ranges))
    except Exception as exc:
        raise EnvironmentFailure(f"onnxruntime static quantization failed: {first_line(exc)}") from None


def _dynamic_int8(model, out, work, per_channel, reduce_range, excluded) -> list[Technique]:
    prepared = work / "matmul.onnx"
    onnx.save(gemm_to_matmul(model), str(prepared))
    _quantize_dynamic(prepared, out, per_channel, reduce_range, excluded, op_types=None)
    return [Technique("ptq", precision="int8", scheme="dynamic", per_channel=per_channel, reduce_range=reduce_range)]


def _quantize_dynamic(source, out, per_channel, reduce_range, excluded, op_types, only=None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(source), str(out), op_types_to_quantize=op_types, per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_quantize=list(only or []),
                         nodes_to_exclude=list(excluded))
    except Exception as exc:
        raise EnvironmentFailure(f"onnxruntime dynamic quantization failed: {first_line(exc)}") from None


def _fp16(model, out, excluded) -> list[Technique]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(excluded),
                                         op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FLOAT_OPS])
    onnx.save(_topologically_sorted(converted), str(out))  # the converter appends the input Casts at the end
    return [Technique("cast", precision="fp16")]


def _weight_only(model, out, precision, excluded) -> list[Technique]:
    """MatMulNBits with the precision's bits, block size and symmetry (compress.catalog)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    bits, block, symmetric = precision.weight_bits, precision.block_size, precision.symmetric
    quantizer = MatMulNBitsQuantizer(gemm_to_matmul(model), bits=bits, block_size=block, is_symmetric=symmetric,
                                     nodes_to_exclude=list(excluded), op_types_to_quantize=("MatMul",))
    try:
        quantizer.process()
    except Exception as exc:
        raise EnvironmentFailure(f"onnxruntime {bits}-bit weight quantization failed: {first_line(exc)}") from None
    quantizer.model.save_model_to_file(str(out), False)
    return [Technique("wq", precision=f"int{bits}-weight", scheme="weight-only", block_size=block, symmetric=symmetric)]


# --- graph helpers --------------------------------------------------------------------------------------------


def _topologically_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every node after the producers of its inputs (onnx_ir's stable TopologicalSortPass)."""
    import onnx_ir as ir
    from onnx_ir.passes.common import TopologicalSortPass

    graph = ir.serde.deserialize_model(model)
    try:
        TopologicalSortPass()(graph)
    except Exception as exc:  # a cycle or a missing input
        raise EnvironmentFailure(f"the converted graph cannot be ordered: {first_line(exc)}") from None
    return ir.serde.serialize_model(graph)


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, W, b) with constant W as MatMul + Add, the form ORT's dynamic and weight-only paths cover.

    The MatMul keeps the Gemm's name and metadata (so ``exclude`` and layer names still apply); the Add is ``<name>_bias``.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    weights = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            array = onnx.numpy_helper.to_array(weights[weight]).T
            weight = f"{weight}_transposed"
            if weight not in weights:
                weights[weight] = onnx.numpy_helper.from_array(np.ascontiguousarray(array), weight)
                graph.initializer.append(weights[weight])
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        matmul = onnx.helper.make_node("MatMul", [node.input[0], weight], [product], name=node.name)
        matmul.metadata_props.extend(node.metadata_props)
        nodes.append(matmul)
        if has_bias:
            add = onnx.helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias")
            add.metadata_props.extend(node.metadata_props)
            nodes.append(add)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return result


def _check(model: onnx.ModelProto, precision: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise EnvironmentFailure(f"the {precision} ONNX model is invalid ({first_line(exc)})") from None


def _strip_graph_annotations(model: onnx.ModelProto) -> None:
    """Deployables need neither per-node torch metadata nor inferred shapes: drop both (the fp32 file keeps the mapping)."""
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.graph.value_info[:]


def float_weighted_ops(model: onnx.ModelProto, precision: str, excluded: set[str]) -> list[dict]:
    """Ops carrying weights (or int8 matmuls) that still compute in float after quantization, with why."""
    initializers = {i.name for i in model.graph.initializer}
    float32 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    producers = {out: node for node in model.graph.node for out in node.output}
    rows = []
    for node in model.graph.node:
        sources = _through_casts(node, producers)
        if node.op_type not in WEIGHTED_OPS or _is_quantized(node, sources, producers, float32, precision):
            continue
        if node.op_type == "Gather" and sources[0] not in initializers:
            continue  # indexing an activation, not an embedding table
        if node.op_type in ("MatMul", "Gemm") and not set(sources) & initializers and precision != "int8":
            continue  # activation x activation matmul: no weight to quantize in this path
        base_name = node.name.removesuffix("_quant")
        reason = "kept in float by --exclude" if base_name in excluded else _float_reason(node.op_type, precision)
        rows.append({"op": node.op_type, "node": node.name, "layer": node_layer(node, initializers), "reason": reason})
    return rows


def _through_casts(node: onnx.NodeProto, producers: dict) -> list[str]:
    """The node's inputs, each traced back through a Cast (fp16 conversion wraps kept-float weights in Casts)."""
    return [producers[name].input[0] if name in producers and producers[name].op_type == "Cast" else name for name in node.input]


def _is_quantized(node, sources, producers, float32_initializers, precision) -> bool:
    """fp16: no float32 weight left. Otherwise: the weight (Gather: the table) comes out of a DequantizeLinear."""
    if precision == "fp16":
        return not any(name in float32_initializers for name in sources)
    weight = node.input[0 if node.op_type == "Gather" else 1] if len(node.input) > 1 else ""
    return weight in producers and producers[weight].op_type == "DequantizeLinear"


def _float_reason(op: str, precision: str) -> str:
    if PRECISION_RECORDS[precision].weight_only:
        return "weight-only quantization covers MatMul/Gemm weights only"
    if op in ("GRU", "RNN"):
        return f"onnxruntime has no int8 kernel for {op} (static or dynamic)"
    if op == "Gather":
        return f"embedding lookups are not quantized by the {precision} path"
    return f"onnxruntime's {precision} quantizer left it in float"


# --- calibration ----------------------------------------------------------------------------------------------


def _calibration_session(calibrator):
    """The augmented model's session as onnxruntime's calibrator opens it (no graph optimization: every calibrated
    tensor stays observable), with idle worker threads sleeping: the second process's conversions share the cores
    (BERT-like encoder, 256 samples beside a busy core: 16.3 s, 17.9 s with spinning threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(calibrator.augmented_model_path, options, providers=calibrator.execution_providers)


class _DataReader:
    """Feeds calibration batches to onnxruntime (the model's fixed batch size where it has one)."""

    def __init__(self, model: onnx.ModelProto, data: Dataset, batch_size: int = CALIBRATION_BATCH):
        initializers = {i.name for i in model.graph.initializer}
        inputs = [v for v in model.graph.input if v.name not in initializers]
        if len(inputs) != len(data.x):
            raise UsageError(f"the calibration data has {len(data.x)} input(s) but the model takes {len(inputs)} "
                             f"({', '.join(v.name for v in inputs)})")
        dims = inputs[0].type.tensor_type.shape.dim
        axis = data.axes[0] if data.axes else 0
        fixed = len(dims) > axis and dims[axis].dim_value > 0
        batch = dims[axis].dim_value if fixed else batch_size
        types = [onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type) for v in inputs]
        whole = data.subset(np.arange(data.size - (data.size % batch if fixed else 0)), data.split_name)
        self._feeds = [dict(zip((v.name for v in inputs), (np.ascontiguousarray(a, dtype=t) for a, t in zip(arrays, types))))
                       for arrays, _ in whole.batches(batch)]
        if not self._feeds:
            raise UsageError(f"calibration needs at least {batch} samples (the model's fixed batch); got {data.size}")
        self._index = 0

    def get_next(self):
        if self._index >= len(self._feeds):
            return None
        self._index += 1
        return self._feeds[self._index - 1]

    def rewind(self):
        self._index = 0

    def __len__(self):
        return len(self._feeds)


# --- small utilities ------------------------------------------------------------------------------------------


def _cpu_summary() -> str:
    features = cpu_int8_features()
    vnni = [k for k in ("avx512_vnni", "avx_vnni", "amx_int8", "dotprod", "i8mm") if features.get(k)]
    return f"{features['arch']}, {'+'.join(vnni) if vnni else 'no int8 dot-product instructions'}"
