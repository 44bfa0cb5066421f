"""Quantization-aware training with PT2E, exported to the same int8 ONNX (QDQ) and int8 TFLite files as PTQ.

How it runs:
1. ``torch.export`` captures the model with a dynamic batch axis (strict mode first, so the quantizer sees
   add/cat; non-strict where TorchDynamo cannot trace it).
2. ``prepare_qat_pt2e`` with litert-torch's ``PT2EQuantizer`` (symmetric int8 weights, per channel by default;
   asymmetric int8 activations; ``weight_bits`` < 8 narrows the weight range, e.g. [-7, 7] for 4 bits) inserts
   fake-quantize modules whose moving-average min/max observers follow the activations during training.
   **Batch norm is folded here in QAT form**: each conv+BN pair is rewritten so the weight fake-quantizer sees the
   conv weight scaled by gamma / sqrt(running_var), i.e. the folded weight the int8 file will hold, while BN still
   normalises with batch statistics.
3. Fine-tuning on the train split (Adam). After ``freeze_bn_after`` epochs BN switches to its running statistics
   (the scale folded into the weights stops moving); after ``freeze_observers_after`` epochs the observers stop
   updating, so the last epoch(s) train the weights against the exact scales and zero points that will be exported.
4. ``convert_pt2e`` folds BN into the conv weights and bias **for good** and turns fake-quantize into
   quantize/dequantize pairs. The module kept in the handle is that Q/DQ graph (weights still float followed by
   quantize->dequantize); it runs in eager PyTorch with the int8 rounding of the deployed model.

Export (see :func:`export_int8_onnx`, :func:`export_int8_tflite`, :func:`export_int8_pte`):
- ONNX: the weight quantize ops are constant-folded to int8 initializers, then the dynamo exporter translates
  ``quantized_decomposed`` ops to QuantizeLinear/DequantizeLinear (onnxscript's torch_lib): a QDQ file with int8
  weights and int8 activations that onnxruntime fuses into integer kernels.
- TFLite: litert-torch converts the *unfolded* graph in its STATIC QDQ mode (strict, as for PTQ) into a
  full-integer file. Folding first does not work: litert-torch 0.10 fails with "'stablehlo.uniform_dequantize'
  op operand #0 must be ranked tensor of per-tensor integer quantized or per-axis integer quantized values, but
  got 'tensor<32x1x3x3xi8>'" (a folded int8 weight is a plain i8 constant without a quantized type).
- ``.pte``: the weight-folded graph (as for ONNX) is lowered to the XNNPACK delegate, whose int8 patterns read the
  int8 weights and quantize/dequantize pairs directly (litert-torch's scheme, symmetric int8 weights and asymmetric
  int8 activations, is one XNNPACK runs); unfolded weight quantize ops would have no ExecuTorch kernel.
- Work-around: litert-torch 0.10's QAT conv+BN annotator hands a plain function to ``torch.export.export``,
  which torch 2.13 refuses ("Expected `mod` to be an instance of `torch.nn.Module`"); the pattern is wrapped in a
  module while annotating.

Example:
    >>> qat = apply(load_model("mnist_cnn.pt"), QatConfig(epochs=3), splits)
    >>> export_int8_onnx(qat, "model.qat.int8.onnx"), export_int8_tflite(qat, "model.qat.int8.tflite")
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from compress.compat import litert_qat_annotation_fix
from compress.catalog import Technique
from compress.data import Dataset, Splits
from compress.errors import UsageError
from compress.loading.model import ModelHandle
from compress.passes.training import fit, predict, set_graph_training, set_mode
from compress.limits import MAX_BATCH, MAX_EPOCHS

EpochCallback = Callable[[dict], None]
EXPORT_BATCH = 1


class QatConfig(BaseModel):
    """Quantization-aware training settings (one object for the CLI, the Python API and recipe stages)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(3, ge=1, le=MAX_EPOCHS, description=f"Fine-tuning epochs with fake quantization (at most {MAX_EPOCHS:,}).")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (small: the model is already trained).")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description=f"Training batch size (at most {MAX_BATCH:,}).")
    per_channel: bool = Field(True, description="Per-channel weight scales (per-tensor when false).")
    weight_bits: int = Field(8, ge=2, le=8, description="Weight bits (stored in int8; < 8 narrows the range, e.g. 4 -> [-7, 7]).")
    freeze_bn_after: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="Epochs before BN uses running statistics (default: half).")
    freeze_observers_after: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="Epochs before quantization ranges freeze (default: all but the last).")
    seed: int = 0

    @model_validator(mode="after")
    def _within_epochs(self) -> "QatConfig":
        for name in ("freeze_bn_after", "freeze_observers_after"):
            value = getattr(self, name)
            if value is not None and value > self.epochs:
                raise ValueError(f"{name}={value} is past the last epoch ({self.epochs})")
        return self

    @property
    def bn_freeze_epoch(self) -> int:
        return self.freeze_bn_after or max(1, self.epochs // 2)

    @property
    def observer_freeze_epoch(self) -> int:
        return self.freeze_observers_after or max(1, self.epochs - 1)

    def scheme(self) -> str:
        """``int8`` or e.g. ``w4a8``, plus the weight granularity."""
        return f"{self.bits()}:{'per-channel' if self.per_channel else 'per-tensor'}"

    def technique(self) -> Technique:
        """Labelled e.g. ``qat:int8:per-channel:epochs=3``."""
        return Technique("qat", precision=self.bits(), per_channel=self.per_channel, settings=(("epochs", self.epochs),))

    def bits(self) -> str:
        """``int8``, or e.g. ``w4a8`` for 4-bit weights."""
        return "int8" if self.weight_bits == 8 else f"w{self.weight_bits}a8"


def quantizer(config: QatConfig, qat: bool = True):
    """litert-torch's PT2EQuantizer with ``config``'s scheme; ``qat=False`` gives the PTQ twin (observers, no fake-quant)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    base = get_symmetric_quantization_config(is_per_channel=config.per_channel, is_qat=qat)
    if config.weight_bits != 8:
        limit = 2 ** (config.weight_bits - 1) - 1
        weight = dataclasses.replace(base.weight, quant_min=-limit, quant_max=limit)
        base = dataclasses.replace(base, weight=weight)
    return PT2EQuantizer().set_global(base)


def apply(handle: ModelHandle, config: QatConfig, data: Splits | None = None,
          on_epoch: EpochCallback | None = None) -> ModelHandle:
    """Fine-tune a fake-quantized copy of ``handle.module`` on ``data.train``; return the converted Q/DQ model.

    ``metrics["qat"]`` records the scheme, when BN and observers froze, and per-epoch loss and validation metric
    (fake-quantized). ``on_epoch`` gets ``{"epoch", "epochs", "loss", "val", "bn_frozen", "observers_frozen"}``.
    """
    from torchao.quantization.pt2e import disable_observer, quantize_pt2e

    if data is None or not data.train.labeled:
        raise UsageError("quantization-aware training needs labeled training data: pass --data")
    module = _float_module(handle)
    handle.input_spec.check(data.train.x, f"data {data.train.name!r}")
    graph, capture_note = _capture(module, handle)
    had_batch_norm = _has_batch_norm(graph)
    with litert_qat_annotation_fix():
        prepared = quantize_pt2e.prepare_qat_pt2e(graph, quantizer(config))
    trainer = _QatTrainer(prepared)
    heads = data.train.heads
    history = []
    for epoch in range(config.epochs):
        if epoch == config.bn_freeze_epoch:
            trainer.bn_frozen = True
        if epoch == config.observer_freeze_epoch:
            prepared.apply(disable_observer)
        losses: list[float] = []
        fit(trainer, data.train, heads, 1, config.lr, config.batch_size, config.seed + epoch,
            on_epoch=lambda _, loss: losses.append(loss))
        row = {"epoch": epoch + 1, "epochs": config.epochs, "loss": round(losses[-1], 6), "val": _val(trainer, data),
               "bn_frozen": trainer.bn_frozen, "observers_frozen": epoch >= config.observer_freeze_epoch}
        history.append(row)
        if on_epoch:
            on_epoch(row)
    set_mode(trainer, False)
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    set_mode(converted, False)
    summary = {"scheme": config.scheme(), "epochs": config.epochs, "lr": config.lr,
               "bn_frozen_after_epoch": config.bn_freeze_epoch, "observers_frozen_after_epoch": config.observer_freeze_epoch,
               "batch_norm_folded_into_conv": had_batch_norm, "history": history, "notes": [capture_note] if capture_note else []}
    result = handle.with_module(converted, config.technique())
    return replace(result, metrics={**handle.metrics, "qat": summary})


def ptq(handle: ModelHandle, config: QatConfig, calibration: Dataset) -> ModelHandle:
    """The PTQ twin of :func:`apply`: the same quantizer scheme, calibrated on ``calibration`` and never trained.

    It isolates what training adds (same bits, granularity, capture and export path).
    """
    from torchao.quantization.pt2e import quantize_pt2e

    graph, _ = _capture(_float_module(handle), handle)
    prepared = quantize_pt2e.prepare_pt2e(graph, quantizer(config, qat=False))
    with torch.no_grad():
        for inputs, _ in calibration.batches(64):
            prepared(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    set_mode(converted, False)
    return handle.with_module(converted, Technique("ptq", precision=config.bits(), per_channel=config.per_channel,
                                                   calibration="minmax", args=("pt2e",)))


def is_quantized(module: nn.Module | None) -> bool:
    """True for a converted PT2E graph (quantize/dequantize ops in it)."""
    if not isinstance(module, torch.fx.GraphModule):
        return False
    return any(node.op == "call_function" and getattr(node.target, "namespace", "") == "quantized_decomposed" for node in module.graph.nodes)


def export_int8_onnx(handle: ModelHandle, path: str | Path) -> Path:
    """A QDQ ONNX file from the converted graph: int8 weight initializers, Quantize/DequantizeLinear activations."""
    from compress.backends.onnx.export import export_onnx

    _require_quantized(handle)
    from compress.catalog import get

    return export_onnx(handle.with_module(_weights_folded(handle.module), get("onnx").qat_technique), path)


def export_int8_pte(handle: ModelHandle, path: str | Path):
    """An XNNPACK-delegated int8 ``.pte`` from the converted graph (weights folded to int8 constants, as for ONNX,
    so the partitioner sees its int8 convolution/linear patterns), at a fixed batch of 1. Returns the lowered program
    (compress.backends.pte.export.Lowered: delegate coverage, the ops left in float)."""
    from compress.backends.pte.export import lower
    from compress.safety.io import atomic_path

    _require_quantized(handle)
    lowered = lower(_weights_folded(handle.module), handle.input_spec.example_inputs(batch=EXPORT_BATCH, seed=0))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(lowered.content)
    return lowered


def export_int8_tflite(handle: ModelHandle, path: str | Path) -> Path:
    """A full-integer TFLite file from the converted graph, converted by litert-torch in STATIC QDQ mode."""
    from litert_torch.quantize.quant_config import QuantConfig

    from compress.compat import litert_strict_qdq
    from compress.backends.tflite.export import convert, quiet
    from compress.safety.io import atomic_path

    _require_quantized(handle)
    module = handle.module
    for part in module.modules():  # the flag only feeds litert-torch's mode check; the graph is already in eval form
        part.training = False
    example = handle.input_spec.example_inputs(batch=EXPORT_BATCH, seed=0)
    static = quantizer(QatConfig(), qat=False)  # litert-torch reads only "static" from it: the graph carries the scales
    with quiet(), litert_strict_qdq():
        content = convert(module, example, QuantConfig(pt2e_quantizer=static))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return path


# --- helpers ------------------------------------------------------------------------------------------------------


def _weights_folded(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of the converted graph with its weight quantize ops constant-folded to int8 tensors (activation
    quantizes stay)."""
    from torchao.quantization.pt2e.constant_fold import constant_fold

    folded = copy.deepcopy(graph)
    constant_fold(folded, _is_quantize_op)
    folded.recompile()
    return folded


class _QatTrainer(nn.Module):
    """Owns train/eval for the prepared graph: dropout follows the mode, batch norm too until it is frozen."""

    def __init__(self, graph: torch.fx.GraphModule):
        super().__init__()
        self.graph = graph
        self.bn_frozen = False

    def forward(self, *inputs):
        return self.graph(*inputs)

    def train(self, mode: bool = True):
        self.training = mode
        set_graph_training(self.graph, dropout=mode, batch_norm=mode and not self.bn_frozen)
        return self


def _has_batch_norm(graph: torch.fx.GraphModule) -> bool:
    return any(node.op == "call_function" and "batch_norm" in str(node.target) for node in graph.graph.nodes)


def _val(model: nn.Module, data: Splits) -> float | None:
    """The validation metric of the fake-quantized model (observers paused: validation data never sets a range)."""
    from compress.data.evaluate import task_metrics

    if not data.val.size or not data.val.labeled:
        return None
    with _observers_paused(model):
        metric = task_metrics(data.val.heads, predict(model, data.val), data.val.y)
    return metric["value"] if metric else None


@contextlib.contextmanager
def _observers_paused(model: nn.Module):
    """Fake-quantizers observe whenever observation is enabled, in eval mode too; pause them and restore after."""
    saved = [(part, part.observer_enabled.clone()) for part in model.modules() if isinstance(getattr(part, "observer_enabled", None), torch.Tensor)]
    for part, _ in saved:
        part.observer_enabled.fill_(0)
    try:
        yield
    finally:
        for part, state in saved:
            part.observer_enabled.copy_(state)


def check_quantizable(handle: ModelHandle) -> None:
    """UsageError unless ``handle`` holds a float torch module that torch.export can capture."""
    if handle.module is None:
        raise UsageError(f"{handle.source_path} is an ONNX model: QAT needs the torch model (zoo checkpoint, state_dict with --arch or .pt2)")
    if isinstance(handle.module, torch.jit.ScriptModule):
        raise UsageError(f"{handle.source_path} is TorchScript: PT2E needs torch.export; save a state_dict (with --arch) or a .pt2")
    if is_quantized(handle.module):
        raise UsageError(f"{handle.source_path} is already quantized (it holds quantize/dequantize ops); run QAT on the float model")


def _float_module(handle: ModelHandle) -> nn.Module:
    check_quantizable(handle)
    module = copy.deepcopy(handle.module)
    set_mode(module, False)
    return module


def _capture(module: nn.Module, handle: ModelHandle) -> tuple[torch.fx.GraphModule, str | None]:
    """torch.export with a dynamic batch axis: strict first (the quantizer then sees add/cat), non-strict if needed."""
    from compress.loading.capture import capture

    example = handle.input_spec.example_inputs(batch=2)
    dims = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in example)
    return capture(module, example, "QAT", dynamic_shapes=dims)


def _is_quantize_op(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in (
        torch.ops.quantized_decomposed.quantize_per_tensor.default,
        torch.ops.quantized_decomposed.quantize_per_channel.default,
    )


def _require_quantized(handle: ModelHandle) -> None:
    if not is_quantized(handle.module):
        raise UsageError("this model holds no quantize/dequantize ops: run QAT (compress.passes.qat.apply) or PTQ first")
