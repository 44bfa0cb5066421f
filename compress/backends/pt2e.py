"""What the PT2E exports (TFLite through litert-torch, ``.pte`` through ExecuTorch) share: the capture, the export batch,
the calibration inputs (random ones, loudly noted, when there is no data), the activation observer each calibration
method runs as, the layers kept in float, and eval mode for captured graphs.

Example:
    >>> excluded, calib_data, example, notes = pt2e_inputs(QuantizeJob(handle, "int8", Path("model.int8.tflite")), module)
    >>> notes[0][:19], export_batch(handle)
    ('NO CALIBRATION DATA', 1)
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from compress.data import Dataset
from compress.errors import UsageError
from compress.backends.calibration import PERCENTILE
from compress.catalog import QuantizeJob, check_calibration
from compress.catalog import PRECISIONS as PRECISION_RECORDS
from compress.loading.model import ModelHandle

EXPORT_BATCH = 1
CALIBRATION_BATCH = 32  # samples per call of a dynamic-batch twin (prepared_and_calibrated)
RANDOM_CALIBRATION_SAMPLES = 32
KEPT_BY_EXCLUDE = "kept in float by --exclude"


def pt2e_inputs(job: QuantizeJob, module: nn.Module) -> tuple[list[str], Dataset | None, tuple, list[str]]:
    """What a PT2E export (TFLite, ``.pte``) of ``job`` starts from: ``(excluded layers, calibration data, example
    inputs at the export batch, notes)``. The method name is checked; a calibrated precision without data calibrates
    on random inputs drawn with the job's seed, and the first note says so loudly.
    """
    handle, calib_data = job.handle, job.calib_data
    try:
        check_calibration(job.calibration)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    notes: list[str] = []
    if PRECISION_RECORDS[job.precision].calibrated and calib_data is None:
        calib_data = random_calibration(handle, job.seed)
        notes.append(f"NO CALIBRATION DATA: activation ranges come from {calib_data.size} random inputs; "
                     "accuracy will suffer and is not measured against real data. Pass --data.")
    example = handle.input_spec.example_inputs(batch=export_batch(handle), seed=0)
    return resolve_exclude(module, job.exclude), calib_data, example, notes


def torch_module(handle: ModelHandle, needs: str, converter: str) -> nn.Module:
    """``handle``'s torch module in inference mode; a UsageError for an ONNX or TorchScript source, in the words of the
    format (``torch_module(handle, "a .pte", "ExecuTorch lowers")``)."""
    if handle.module is None:
        raise UsageError(f"{handle.source_path} is an ONNX model: {needs} needs the torch model (use --format onnx)")
    if isinstance(handle.module, torch.jit.ScriptModule):
        raise UsageError(f"{handle.source_path} is TorchScript: {converter} torch.export programs only; "
                         "save the model with torch.export (.pt2) or as a state_dict with --arch, or use --format onnx")
    return eval_mode(handle.module)


def export_batch(handle: ModelHandle) -> int:
    """The batch a TFLite or .pte file is exported at: the program's own fixed batch, else 1."""
    return handle.input_spec.fixed_batch or EXPORT_BATCH


def random_calibration(handle: ModelHandle, seed: int, samples: int = RANDOM_CALIBRATION_SAMPLES) -> Dataset:
    return handle.input_spec.random_dataset(samples, seed)


def fixed_batch_note(batch: int) -> str:
    return f"exported with a fixed batch of {batch}: batches are fed {batch} sample{'s' if batch > 1 else ''} at a time"


def resolve_exclude(module: nn.Module, exclude) -> list[str]:
    """Check that every name in ``exclude`` is a layer of ``module``; an unknown one is a UsageError listing them."""
    names = dict(module.named_modules())
    unknown = [name for name in exclude if name not in names or not name]
    if unknown:
        layers = [n for n, m in module.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
        raise UsageError(f"--exclude {unknown[0]!r} is not a layer of the model; layers with weights: {', '.join(layers)}")
    return list(exclude)


def batch_of(example: tuple, data: Dataset) -> int:
    """The batch ``example`` (model layout) was built at, read on the first input's batch axis."""
    axis = data.axes[0] if data.axes else 0
    return int(example[0].shape[axis])


def capture_for_pt2e(module: nn.Module, example: tuple, notes: list[str]):
    """torch.export for PT2E (compress.loading.capture); a non-strict fallback is noted in ``notes``."""
    from compress.loading.capture import capture

    graph, note = capture(module, example, "PT2E quantization")
    notes.extend([note] if note else [])
    return graph


def prepared_and_calibrated(module: nn.Module, example: tuple, quantizer, calib_data: Dataset, calibration: str,
                            notes: list[str]) -> torch.fx.GraphModule:
    """``module`` captured at the export batch, prepared by PT2E with ``quantizer``, its observers fed every
    calibration sample (ready for ``convert_pt2e``).

    One sample per call is slow (per-call overhead of the graph and observers dominates small models). With min/max
    observers (the range of many samples is the range of their ranges) a twin captured with a dynamic batch axis is
    prepared alike and fed CALIBRATION_BATCH samples per call, and its ranges are copied observer by observer: the
    graph that is converted stays the one captured at the export batch, and the ranges agree up to float rounding
    (a batch's matrix products round differently). When the twins do not match, one sample per call, as before.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    prepared = prepare_pt2e(capture_for_pt2e(module, example, notes), quantizer)
    if not (calibration == "minmax" and _observe_batched(module, example, quantizer, prepared, calib_data)):
        with torch.no_grad(), one_thread():
            for inputs, _ in calib_data.batches(batch_of(example, calib_data), pad=True):
                prepared(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    return prepared


def _observe_batched(module: nn.Module, example: tuple, quantizer, prepared: torch.fx.GraphModule, calib_data: Dataset) -> bool:
    """Fill ``prepared``'s observers from a dynamic-batch twin fed whole batches; False (nothing changed) when the
    export batch is not 1, the model fixes its batch, or the twins' observers differ."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    if calib_data.size < 2 or batch_of(example, calib_data) != 1:
        return False
    axes = calib_data.axes or (0,) * len(example)
    doubled = tuple(torch.cat([tensor, tensor], dim=axis) for tensor, axis in zip(example, axes))
    try:
        twin = torch.export.export(module, doubled, dynamic_shapes=tuple({axis: torch.export.Dim.DYNAMIC} for axis in axes),
                                   strict=True).module()
        twin = _without_size_observers(prepare_pt2e(twin, quantizer))
        pairs = _matching_observers(prepared, twin)
        if pairs is None:
            return False
        with torch.no_grad():
            for inputs, _ in calib_data.batches(CALIBRATION_BATCH):
                twin(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    except Exception:  # the batch is specialized somewhere, or the twin does not run: one sample per call
        return False
    for mine, theirs in pairs:
        mine.load_state_dict(theirs.state_dict())
    return True


def _without_size_observers(twin: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The twin without observers on symbolic sizes (a dynamic batch makes ``x.size(0)`` a graph value, which the
    quantizer may annotate; the export-batch graph has a constant there)."""
    for node, observed in list(_observer_calls(twin)):
        if observed is not None and not isinstance(observed.meta.get("val"), torch.Tensor):
            node.replace_all_uses_with(observed)
            twin.graph.erase_node(node)
    twin.recompile()
    return twin


def _observer_calls(graph: torch.fx.GraphModule):
    """``(observer call node, the node it observes or None)`` for each observer PT2E's prepare inserted."""
    for node in graph.graph.nodes:
        if node.op == "call_module" and str(node.target).startswith("activation_post_process_"):
            yield node, node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None


def _matching_observers(prepared: torch.fx.GraphModule, twin: torch.fx.GraphModule) -> list[tuple[nn.Module, nn.Module]] | None:
    """``(observer, twin's observer)`` pairs, matched by the node each observes; None unless they pair up one to one
    with the same observer classes."""
    def observers(graph: torch.fx.GraphModule) -> dict[tuple[str, int], nn.Module]:
        found: dict[tuple[str, int], nn.Module] = {}
        for node, observed in _observer_calls(graph):
            name = observed.name if observed is not None else ""
            index = sum(1 for key in found if key[0] == name)
            found[(name, index)] = graph.get_submodule(str(node.target))
        return found

    mine, theirs = observers(prepared), observers(twin)
    if not mine or mine.keys() != theirs.keys() or any(type(mine[k]) is not type(theirs[k]) for k in mine):
        return None
    return [(mine[key], theirs[key]) for key in mine]


@contextlib.contextmanager
def one_thread():
    """Observers on batch-1 tensors gain nothing from threads, and on a busy machine thread hand-offs dominate."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def observer(calibration: str, fmt: str):
    """The PT2E activation observer class that runs ``calibration`` for format ``fmt`` (its ``Pt2eObserver``
    implementation, compress.backends.calibration); a UsageError where ``fmt`` has none."""
    try:
        return check_calibration(calibration, fmt).observer()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def minmax_observer() -> type:
    from torchao.quantization.pt2e.observer import MinMaxObserver

    return MinMaxObserver


def histogram_observer() -> type:
    from torchao.quantization.pt2e.observer import HistogramObserver

    return HistogramObserver


def percentile_observer() -> type:
    """An observer whose range is the [100 - p, p] percentiles of the observed values (from the running histogram)."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    class PercentileObserver(HistogramObserver):
        """Range = the [100 - p, p] percentiles of the observed values (from the running histogram)."""

        def _non_linear_param_search(self):
            counts = self.histogram.double()
            cumulative = torch.cumsum(counts, 0) / counts.sum()
            width = (self.max_val - self.min_val) / self.bins
            low_bin = int(torch.searchsorted(cumulative, torch.tensor((100 - PERCENTILE) / 100, dtype=torch.float64)))
            high_bin = int(torch.searchsorted(cumulative, torch.tensor(PERCENTILE / 100, dtype=torch.float64)))
            low = self.min_val + width * low_bin
            high = self.min_val + width * min(high_bin + 1, self.bins)
            return torch.minimum(low, torch.zeros_like(low)), torch.maximum(high, torch.zeros_like(high))

    return PercentileObserver


def node_in(node, layers: list[str]) -> bool:
    paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
    return any(path == layer or path.startswith(layer + ".") for path in paths for layer in layers)


def eval_mode(module: nn.Module) -> nn.Module:
    """``module`` in inference mode; modules unlifted from torch.export programs refuse ``.eval()``."""
    try:
        return module.eval()
    except NotImplementedError:
        from torchao.quantization.pt2e import move_exported_model_to_eval

        return _clear_training(move_exported_model_to_eval(module))


def eval_of_capture(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``eval_mode`` for a graph captured from a module already in eval mode (PT2E's converted model): its dropout
    and batch-norm ops are the eval ones already, so torchao's rewrite, which exports six pattern graphs (about 1 s)
    to match nothing, is skipped; dead code goes and the training flags are cleared as it would."""
    module.graph.eliminate_dead_code()
    module.recompile()
    return _clear_training(module)


def _clear_training(module: nn.Module) -> nn.Module:
    for part in module.modules():  # the flag only feeds litert-torch's training-mode warning
        part.training = False
    return module
