"""torch → one self-contained ONNX file, plus the graph facts later steps need (which torch layer a node came from).

The dynamo exporter (``torch.export`` then ONNX translation) is used first; the TorchScript-based
exporter (``dynamo=False``) only where ``torch.export`` cannot capture the model (TorchScript modules,
untraceable Python). Which one ran, and why, is stored in the file's metadata (``export_notes``).

Layer names: the dynamo exporter writes ``pkg.torch.onnx.name_scopes`` on every node, e.g.
``['', 'classifier', 'classifier.1', 'linear']``: the module path is the last scope but one
(``classifier.1``). Nodes without it (TorchScript exports) fall back to their weight's initializer name
(``classifier.1.weight`` → ``classifier.1``). ``node_layer`` implements both.

Example:
    >>> path = export_onnx(load_model("mnist_cnn.pt"), "model.fp32.onnx")
    >>> export_notes(path)
    ['exporter: torch.export (dynamo), opset 18, dynamic batch axis']
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import os
import re
import warnings
from pathlib import Path

import onnx
import torch

from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.safety.io import atomic_path
from compress.safety.jsonsafe import loads
from compress.loading.model import ModelHandle

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
KEPT_NODE_METADATA = (NAME_SCOPES,)  # stack traces, fx dumps and class names are dropped
NOTES_KEY = "compress.export_notes"
BATCH_AXIS = "batch"
FOLD_LIMIT = 1 << 28  # elements: fold weight transforms of any realistic size
MAX_SINGLE_FILE = 2 * 1024**3 - 1  # protobuf limit for one self-contained file


class _UnsupportedOp(Exception):
    """The dynamo exporter has no ONNX translation for ``op`` (raised from the layer ``layer``)."""

    def __init__(self, op: str, layer: str | None):
        super().__init__(op)
        self.op, self.layer = op, layer


def export_onnx(handle: ModelHandle, path: str | Path, opset: int = 18, dynamic_batch: bool = True) -> Path:
    """Export ``handle.module`` to ``path`` (one file, no external data; same model → same bytes)."""
    if handle.module is None:
        raise UsageError(f"{handle.source_path} is already an ONNX model: use it as is (there is no torch module to export)")
    module = _inference_mode(handle.module)
    names = handle.input_spec.names
    spec = handle.input_spec
    example = spec.example_inputs(batch=spec.fixed_batch or _static_batch(module) or (3 if dynamic_batch else 1), seed=0)
    axes = _io_axes(spec, len(_output_names(handle, module, example)))
    outputs = _output_names(handle, module, example)
    if isinstance(module, torch.jit.ScriptModule):
        model = _export_torchscript(module, example, names, outputs, opset, dynamic_batch, axes)
        notes = [f"exporter: TorchScript-based (dynamo=False), opset {opset}: torch.export cannot trace TorchScript modules"]
    else:
        try:
            model, notes = _export_dynamo(module, example, names, outputs, opset, dynamic_batch, axes)
        except _UnsupportedOp as unsupported:
            model, notes = _export_legacy_or_refuse(module, example, names, outputs, opset, dynamic_batch, unsupported, axes)
        except _CaptureFailed as failed:
            try:
                model = _export_torchscript(module, example, names, outputs, opset, dynamic_batch, axes)
            except Exception as exc:
                raise EnvironmentFailure(
                    f"ONNX export failed: torch.export could not capture the model ({failed.reason}) and the "
                    f"TorchScript exporter failed too ({first_line(exc, 240)})"
                ) from None
            notes = [f"exporter: TorchScript-based (dynamo=False), opset {opset}: torch.export failed ({failed.reason})"]
    _finish(model, notes)
    return _save(model, Path(path))


def export_notes(path: str | Path) -> list[str]:
    """The notes ``export_onnx`` stored in the file (which exporter ran, and why)."""
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == NOTES_KEY:
            return loads(prop.value)
    return []


def add_export_note(path: str | Path, note: str) -> None:
    """Append ``note`` to the notes stored in the file (see ``export_notes``)."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, NOTES_KEY: json.dumps([*export_notes(path), note])})
    with atomic_path(Path(path)) as tmp:
        onnx.save_model(model, str(tmp))


def node_layer(node: onnx.NodeProto, initializer_names: set[str] | frozenset[str] = frozenset()) -> str | None:
    """The torch module path a node came from (``classifier.1``), or None when unknown."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            scopes = [s for s in ast.literal_eval(prop.value) if s]
            if len(scopes) >= 2:
                return scopes[-2]
    for name in node.input:
        if name in initializer_names and re.search(r"\.(weight|bias)$", name):
            return name.rsplit(".", 1)[0]
    return None


class _CaptureFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _inference_mode(module: torch.nn.Module) -> torch.nn.Module:
    try:
        return module.eval()
    except NotImplementedError:  # modules unlifted from torch.export programs are always in inference mode
        return module


def _output_names(handle: ModelHandle, module: torch.nn.Module, example: tuple) -> list[str]:
    from compress.data.outputs import output_names

    with torch.no_grad():
        count = len(torch.utils._pytree.tree_leaves(module(*example)))
    return output_names(handle.heads, handle.input_spec.names, count)


def _export_dynamo(module, example, names, outputs, opset, dynamic_batch, axes) -> tuple[onnx.ModelProto, list[str]]:
    with warnings.catch_warnings(), quiet_logger("torch.onnx"), quiet_logger("torch.export"):
        warnings.simplefilter("ignore")
        program, fixed = _capture(module, example, dynamic_batch, axes[0])
        try:
            onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=names, output_names=outputs,
                                             opset_version=opset, optimize=True, external_data=False, verbose=False)
        except Exception as exc:
            unsupported = _unsupported_op(exc, program)
            if unsupported:
                raise unsupported from None
            layer = _failing_layer(exc, program)
            where = f" (layer {layer!r})" if layer else ""
            raise EnvironmentFailure(f"ONNX export failed while translating the model{where}: {_conversion_cause(exc)}") from None
    model = onnx_program.model_proto
    _rename_batch_axis(model, axes[0])
    notes = [f"exporter: torch.export (dynamo), opset {opset}" + (", dynamic batch axis" if dynamic_batch and not fixed else "")]
    if fixed:
        notes.append(f"the batch axis is fixed at {example[0].shape[axes[0][0]]}: {fixed}")
    return model, notes


# what torch.export says when the batch axis cannot be dynamic (torch 2.13 words it the second way for a program saved
# with a fixed batch of 1, which it specializes)
SPECIALIZED = ("Constraints violated", "conflicts between user-specified ranges and inferred ranges")


def _capture(module, example, dynamic_batch, in_axes) -> tuple[torch.export.ExportedProgram, str | None]:
    """``torch.export`` with a dynamic batch axis (each input's own); a fixed one (and why) where the model's code
    specializes it."""
    if dynamic_batch:
        batch = torch.export.Dim.DYNAMIC
        try:
            return torch.export.export(module, example, dynamic_shapes=tuple({axis: batch} for axis in in_axes), strict=False), None
        except Exception as exc:
            if not any(words in str(exc) for words in SPECIALIZED):
                raise _CaptureFailed(first_line(exc, 240)) from None
            fixed = ("the torch.export program was saved with a fixed batch; re-export it with dynamic_shapes={0: Dim('batch')}"
                     if _static_batch(module) else "the model's code specializes it (e.g. a hard-coded reshape)")
    else:
        fixed = None
    try:
        fresh = tuple(t.clone() for t in example)  # the failed attempt left dynamic marks on ``example``
        return torch.export.export(module, fresh, strict=False), fixed
    except Exception as exc:
        raise _CaptureFailed(first_line(exc, 240)) from None


def _static_batch(module: torch.nn.Module) -> int | None:
    """The batch size a module unlifted from a static-shape torch.export program was traced with, else None."""
    if not isinstance(module, torch.fx.GraphModule):
        return None
    for node in module.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(value, torch.Tensor) and value.dim() and isinstance(value.shape[0], int):
            return int(value.shape[0])
    return None


def _unsupported_op(exc: BaseException, program) -> _UnsupportedOp | None:
    """Find 'No ONNX function found for <OpOverload(op='aten.cummax', ...)>' in the exception chain."""
    found = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", _chain_text(exc))
    return _UnsupportedOp(found.group(1), _failing_layer(exc, program)) if found else None


def _failing_layer(exc: BaseException, program) -> str | None:
    """The torch module path of the fx node the ONNX translation failed on ('Error when translating node %name')."""
    node_name = re.search(r"Error when translating node %(\S+) :", _chain_text(exc))
    if not node_name:
        return None
    for node in program.graph.nodes:
        if node.name == node_name.group(1):
            stack = node.meta.get("nn_module_stack") or {}
            return next(reversed(stack.values()))[0] if stack else None
    return None


def _chain_text(exc: BaseException) -> str:
    return " ".join(str(e) for e in _chain(exc))


def _conversion_cause(exc: BaseException) -> str:
    causes = [first_line(e, 240) for e in _chain(exc)]
    return causes[-1] if causes else first_line(exc, 240)


def _chain(exc: BaseException):
    seen = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _export_legacy_or_refuse(module, example, names, outputs, opset, dynamic_batch, unsupported: _UnsupportedOp, axes):
    where = f" (layer {unsupported.layer!r})" if unsupported.layer else ""
    try:
        model = _export_torchscript(module, example, names, outputs, opset, dynamic_batch, axes)
    except Exception:
        raise UsageError(
            f"ONNX cannot express op {unsupported.op}{where}: neither exporter has a translation for it; "
            f"replace that op in the model, or use --format tflite"
        ) from None
    return model, [f"exporter: TorchScript-based (dynamo=False), opset {opset}: the dynamo exporter has no translation for {unsupported.op}{where}"]


def _io_axes(spec, outputs: int) -> tuple[list[int], list[int]]:
    """Each input's and output's batch axis (a state (layers, B, H) has it on 1)."""
    return list(spec.input_axes), list(spec.output_axes or [0] * outputs)


def _export_torchscript(module, example, names, outputs, opset, dynamic_batch, axes) -> onnx.ModelProto:
    in_axes, out_axes = axes
    axes = ({name: {axis: BATCH_AXIS} for name, axis in (*zip(names, in_axes), *zip(outputs, out_axes))}
            if dynamic_batch else None)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _quiet_native_output():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buffer, dynamo=False, input_names=names, output_names=outputs,
                          opset_version=opset, dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def quiet_logger(name: str = ""):
    """Only errors from logger ``name`` (the root logger by default) inside the block: the exporter and
    onnxruntime.quantization log warnings that concern no user ('torchvision is not installed', 'please pre-process')."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _quiet_native_output():
    """Silence the TorchScript exporter, which prints whole graphs from C++ when it fails."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as sink:
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield
        finally:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


def _rename_batch_axis(model: onnx.ModelProto, in_axes: list[int]) -> None:
    """Call the symbolic batch axis of the inputs 'batch' everywhere it appears (dynamo names it s0, s77, ...)."""
    first = {v.type.tensor_type.shape.dim[axis].dim_param for v, axis in zip(model.graph.input, in_axes)
             if len(v.type.tensor_type.shape.dim) > axis and v.type.tensor_type.shape.dim[axis].dim_param}
    if len(first) != 1:
        return
    symbol = first.pop()
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = BATCH_AXIS


def _finish(model: onnx.ModelProto, notes: list[str]) -> None:
    """Share duplicated weights, drop bulky path-dependent node metadata (stack traces), record the notes, validate."""
    _fold_weight_transforms(model)
    _share_duplicate_initializers(model)
    graphs = [model.graph, *(f for f in model.functions)]
    for graph in graphs:
        for node in graph.node:
            kept = [(p.key, p.value) for p in node.metadata_props if p.key in KEPT_NODE_METADATA]
            del node.metadata_props[:]
            for key, value in kept:
                node.metadata_props.add(key=key, value=value)
    props = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, NOTES_KEY: json.dumps(notes)})
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise EnvironmentFailure(f"the exported ONNX model is invalid ({first_line(exc, 240)})") from None


def _fold_weight_transforms(model: onnx.ModelProto) -> None:
    """Constant-fold ops on weights of any size (the exporter stops at 8192 elements), so that e.g. an LSTM's
    gate-reordered weights become initializers a quantizer can see. Quantize/Dequantize nodes are never folded."""
    import onnxscript.optimizer

    folded = onnxscript.optimizer.optimize(model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    model.CopyFrom(folded)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in (attribute.g, *attribute.graphs) if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else ():
                yield from _all_nodes(sub)


def _share_duplicate_initializers(model: onnx.ModelProto) -> None:
    """Keep one copy of byte-identical initializers (the exporter folds e.g. an RNN's transposed weight once per step)."""
    first: dict[bytes, str] = {}
    renamed: dict[str, str] = {}
    kept = []
    outputs = {o.name for o in model.graph.output}
    for tensor in model.graph.initializer:
        nameless = onnx.TensorProto()
        nameless.CopyFrom(tensor)
        nameless.ClearField("name")
        key = nameless.SerializeToString()
        if key in first and tensor.name not in outputs:
            renamed[tensor.name] = first[key]
        else:
            first.setdefault(key, tensor.name)
            kept.append(tensor)
    if not renamed:
        return
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    for node in _all_nodes(model.graph):
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    if model.ByteSize() > MAX_SINGLE_FILE:
        raise UsageError(f"the model is {model.ByteSize() / 1e9:.1f} GB: over ONNX's 2 GB single-file limit; prune or distill it first")
    from compress.backends.onnx.session import check_loads_in_child

    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
        check_loads_in_child(tmp)
    return path
