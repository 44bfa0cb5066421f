"""Pruning: unstructured magnitude, structured channel removal (torch-pruning) and N:M semi-structured sparsity.

Methods:
  ``magnitude``      zero the smallest |w| of every weight tensor (per layer, or one global threshold). The zeros
                     are written into the weights themselves: no masks, buffers or parametrizations are left, so
                     the exported model is a plain dense model. Its dense file does NOT shrink; what shrinks is the
                     compressed download (see :func:`compressed_size`).
  ``l1-structured``  remove whole output channels/units (L1 or L2 group norm as importance) with torch-pruning's
  ``l2-structured``  dependency graph, which keeps every coupled layer consistent (the next layer's inputs,
                     norms, residual adds, flatten). The model gets physically smaller and faster.
  ``N:M`` (``2:4``)  in every group of M consecutive weights along the reduction axis (input channels; NHWC
                     order ``kh, kw, cin`` for convolutions) keep the N largest |w|. :func:`check_n_m` verifies it.

Gradual pruning: with ``finetune_epochs`` the sparsity ramps on a polynomial (cubic) schedule over the first
epochs (see ``compress.passes.schedule``), each step followed by an epoch of fine-tuning on the train split with
the pruned weights held at zero; the last epochs fine-tune at the target.

What structured pruning leaves alone: the output layers (their size is the model's contract), attention
projections (modules with a ``heads``/``num_heads`` attribute, and ``nn.MultiheadAttention``: torch-pruning would
need the head count and the module's reshape bookkeeping updated after pruning, so heads are kept whole and
their surroundings pruned), and recurrent layers (torch-pruning 1.6 fails on batch-first LSTMs).

Example:
    >>> pruned = apply(load_model("mnist_cnn.pt"), PruneConfig(method="l1-structured", sparsity=0.5, finetune_epochs=3), splits)
    >>> pruned.metrics["prune"]["params_after"] < 0.3 * pruned.metrics["prune"]["params_before"]
    True
"""
from __future__ import annotations

import copy
import re
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from compress.catalog import Technique
from compress.data import Splits
from compress.errors import EnvironmentFailure, UsageError, first_line
from compress.loading.model import ModelHandle
from compress.passes.registry import searchable
from compress.passes.schedule import POWERS, polynomial_schedule, ramp_epochs, torch_pruning_scheduler
from compress.passes.training import set_mode
from compress.limits import MAX_BATCH, MAX_EPOCHS

STRUCTURED = ("l1-structured", "l2-structured")
NAMED_METHODS = ("magnitude", *STRUCTURED)
N_M_PATTERN = re.compile(r"^(\d+):(\d+)$")
RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)

EpochCallback = Callable[[dict], None]


class PruneConfig(BaseModel):
    """Pruning settings (one object for the CLI, the Python API and recipe stages)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("magnitude", description="magnitude, l1-structured, l2-structured, or N:M such as 2:4.", json_schema_extra=searchable(
        "prune_methods", ["none", "l1-structured"], options=["none", "l1-structured", "magnitude"], off="none"))
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="Fraction of weights (magnitude) or channels (structured) removed; N:M fixes it at 1 - N/M.",
                            json_schema_extra=searchable("prune_sparsity", [0.2, 0.6], kind="range"))
    scope: Literal["layer", "global"] = Field("layer", description="layer: every layer at the target; global: one ranking across layers.")
    layer_sparsity: dict[str, float] = Field(default_factory=dict, description="Per-layer targets overriding `sparsity`, e.g. {features.0: 0.2}.")
    skip: list[str] = Field(default_factory=list, description="Layers never pruned (torch module names; a parent name covers its children).")
    finetune_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description=f"Epochs of fine-tuning on the train split while sparsity ramps to the target (at most {MAX_EPOCHS:,}).",
                                 json_schema_extra=searchable("finetune_epochs", [2, 4], description=f"Fine-tuning epochs after pruning (each at most {MAX_EPOCHS:,})."))
    schedule: Literal["cubic", "linear", "one-shot"] = Field("cubic", description="How sparsity ramps during fine-tuning.")
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description=f"Training batch size (at most {MAX_BATCH:,}).")
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        value = value.strip().lower()
        found = N_M_PATTERN.match(value)
        if found:
            n, m = int(found.group(1)), int(found.group(2))
            if not 0 < n < m:
                raise ValueError(f"N:M sparsity needs 0 < N < M (keep N of every M weights), got {value}; use e.g. 2:4")
            return value
        if value not in NAMED_METHODS:
            raise ValueError(f"unknown pruning method {value!r}; choose {', '.join(NAMED_METHODS)} or N:M such as 2:4")
        return value

    @field_validator("layer_sparsity")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for layer, ratio in value.items():
            if not 0.0 <= ratio < 1.0:
                raise ValueError(f"sparsity of layer {layer!r} must be in [0, 1), got {ratio}")
        return value

    @model_validator(mode="after")
    def _n_m_fixes_sparsity(self) -> "PruneConfig":
        if self.n_m and "sparsity" in self.model_fields_set and abs(self.sparsity - self.n_m_sparsity) > 1e-9:
            raise ValueError(f"{self.method} always removes {self.n_m_sparsity:g} of the weights; drop sparsity "
                             f"(got {self.sparsity:g})")
        if self.n_m and self.layer_sparsity:
            raise ValueError(f"{self.method} has one fixed pattern; per-layer sparsity does not apply (use skip)")
        return self

    @property
    def n_m(self) -> tuple[int, int] | None:
        found = N_M_PATTERN.match(self.method)
        return (int(found.group(1)), int(found.group(2))) if found else None

    @property
    def n_m_sparsity(self) -> float:
        n, m = self.n_m
        return 1.0 - n / m

    @property
    def structured(self) -> bool:
        return self.method in STRUCTURED

    def technique(self) -> Technique:
        """The record kept in ``ModelHandle.techniques``, labelled e.g. ``prune:l1-structured:0.5:layer:finetune=3``."""
        tuned = (("finetune", self.finetune_epochs),) if self.finetune_epochs else ()
        if self.n_m:
            return Technique("prune", method=self.method, sparsity=self.n_m_sparsity, settings=tuned)
        return Technique("prune", method=self.method, sparsity=self.sparsity, scope=self.scope, settings=tuned)


def apply(handle: ModelHandle, config: PruneConfig, data: Splits | None = None,
          on_epoch: EpochCallback | None = None) -> ModelHandle:
    """Prune a copy of ``handle.module`` (``handle`` is left as is) and fine-tune it on ``data.train``.

    The returned handle's ``metrics["prune"]`` holds the per-layer report (see :func:`layer_report`), the
    fine-tuning history and, for N:M, the result of :func:`check_n_m` on every pruned layer. ``on_epoch`` is
    called after every fine-tuning epoch with ``{"epoch", "epochs", "sparsity", "loss", "val"}``.
    """
    module = _module_copy(handle)
    if config.finetune_epochs and (data is None or not data.train.labeled):
        raise UsageError("fine-tuning needs labeled data: pass --data (a dataset with labels) or --finetune-epochs 0")
    layers = weight_layers(module)
    _check_names(module, layers, [*config.skip, *config.layer_sparsity], config)
    counts_before = parameter_counts(module)
    pruner = _make_pruner(module, handle, config, layers)
    history = _prune_and_finetune(module, pruner, config, data, on_epoch)
    pruner.reapply()
    _check_outputs(module, handle, pruner.reference_shapes)
    rows = layer_report(counts_before, module, pruner.pruned_layers)
    summary = {
        "method": config.method,
        "target_sparsity": config.n_m_sparsity if config.n_m else config.sparsity,
        "scope": config.scope,
        "params_before": sum(r["params_before"] for r in rows),
        "params_after": sum(r["params_after"] for r in rows),
        "nonzero_after": sum(r["nonzero_after"] for r in rows),
        "pruned_layers": pruner.pruned_layers,
        "layers": rows,
        "finetune": history,
        "n_m_check": check_n_m(module, *config.n_m, pruner.pruned_layers) if config.n_m else None,
        "notes": pruner.notes,
    }
    set_mode(module, False)
    pruned = handle.with_module(module, config.technique())
    return replace(pruned, metrics={**handle.metrics, "prune": summary})


# --- layers and names -----------------------------------------------------------------------------------------


def weight_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Modules that own a weight of two or more dimensions (convs, linears, recurrent, embeddings), by name."""
    return {name: layer for name, layer in module.named_modules()
            if name and any(p.dim() >= 2 for p in layer.parameters(recurse=False))}


def _covers(name: str, selectors: list[str]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in selectors)


def _check_names(module: nn.Module, layers: dict[str, nn.Module], names: list[str], config: PruneConfig) -> None:
    known = {name for name, _ in module.named_modules() if name}
    for name in names:
        if name not in known:
            raise UsageError(f"unknown layer {name!r}; layers with weights: {', '.join(layers) or '(none)'}")
    if not [name for name in layers if not _covers(name, config.skip)]:
        raise UsageError(f"--skip leaves no layer to prune; layers with weights: {', '.join(layers)}")


def parameter_counts(module: nn.Module) -> dict[str, tuple[int, str]]:
    """Layer name -> (parameter count, type name) for every module with parameters of its own."""
    counts = {}
    for name, layer in module.named_modules():
        own = list(layer.parameters(recurse=False))
        if own:
            counts[name or "(model)"] = (sum(p.numel() for p in own), type(layer).__name__)
    return counts


def layer_report(counts_before: dict[str, tuple[int, str]], after: nn.Module, pruned: list[str]) -> list[dict]:
    """One row per layer: parameters before and after, non-zeros after, and sparsity (1 - non-zeros / before)."""
    modules = dict(after.named_modules())
    rows = []
    for name, (before, kind) in counts_before.items():
        own = list(modules[name if name != "(model)" else ""].parameters(recurse=False))
        count = sum(p.numel() for p in own)
        nonzero = int(sum(int(torch.count_nonzero(p)) for p in own))
        rows.append({"layer": name, "type": kind, "pruned": name in pruned, "params_before": before, "params_after": count,
                     "nonzero_after": nonzero, "sparsity": round(1.0 - nonzero / before, 6) if before else 0.0})
    return rows


def compressed_size(path: str | Path, level: int = 9) -> int:
    """Bytes of ``path`` after deflate (what an APK or a zipped download carries); zeros compress, dense files do not.

    Example:
        >>> compressed_size("model.fp32.onnx") < Path("model.fp32.onnx").stat().st_size
        True
    """
    return len(zlib.compress(Path(path).read_bytes(), level))


# --- N:M ------------------------------------------------------------------------------------------------------


def _reduction_layout(weight: torch.Tensor) -> torch.Tensor:
    """(out, reduction) view with the reduction axis last: convs in NHWC order (kh, kw, cin), linears as they are."""
    if weight.dim() > 2:
        weight = weight.movedim(1, -1)
    return weight.reshape(weight.shape[0], -1)


def _from_reduction_layout(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() > 2:
        moved = like.movedim(1, -1)
        return flat.reshape(moved.shape).movedim(-1, 1)
    return flat.reshape(like.shape)


def n_m_eligible(weight: torch.Tensor, m: int) -> bool:
    return weight.dim() >= 2 and _reduction_layout(weight).shape[1] % m == 0


def n_m_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every group of ``m`` consecutive weights along the reduction axis."""
    flat = _reduction_layout(weight.detach()).abs().reshape(-1, m)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(1, torch.topk(flat, n, dim=1, sorted=False).indices, True)
    return _from_reduction_layout(keep.reshape(weight.shape[0], -1), weight)


def check_n_m(module: nn.Module, n: int, m: int, layers: list[str] | None = None) -> dict[str, bool]:
    """For every layer (default: all eligible ones) whether each group of ``m`` weights has at most ``n`` non-zeros.

    Example:
        >>> all(check_n_m(pruned.module, 2, 4, pruned.metrics["prune"]["pruned_layers"]).values())
        True
    """
    found = weight_layers(module)
    names = layers if layers is not None else [k for k, v in found.items() if all(n_m_eligible(p, m) for p in _weights(v))]
    result = {}
    for name in names:
        ok = True
        for weight in _weights(found[name]):
            if not n_m_eligible(weight, m):
                ok = False
                break
            groups = _reduction_layout(weight.detach()).reshape(-1, m)
            ok = ok and bool(((groups != 0).sum(dim=1) <= n).all())
        result[name] = ok
    return result


# --- the three pruners ----------------------------------------------------------------------------------------


def _weights(layer: nn.Module) -> list[nn.Parameter]:
    return [p for p in layer.parameters(recurse=False) if p.dim() >= 2]


class _MaskPruner:
    """Unstructured and N:M pruning: zeros written into the weights, kept at zero after every optimizer step."""

    def __init__(self, layers: dict[str, nn.Module], config: PruneConfig):
        self.config = config
        self.notes: list[str] = []
        self.masks: dict[nn.Parameter, torch.Tensor] = {}
        candidates = {name: layer for name, layer in layers.items() if not _covers(name, config.skip)}
        if config.n_m:
            n, m = config.n_m
            skipped = [name for name, layer in candidates.items() if not all(n_m_eligible(p, m) for p in _weights(layer))]
            if skipped:
                self.notes.append(f"{config.method}: left dense {', '.join(skipped)} (reduction axis not a multiple of {m})")
            candidates = {k: v for k, v in candidates.items() if k not in skipped}
            if not candidates:
                raise UsageError(f"no layer has a reduction axis divisible by {m}: {config.method} cannot apply to this model")
        self.layers = candidates
        self.pruned_layers = list(candidates)
        self.reference_shapes = None

    def prune(self, step: int, steps: int) -> float:
        if self.config.n_m:
            n, m = self.config.n_m
            self.masks = {p: n_m_mask(p, n, m) for layer in self.layers.values() for p in _weights(layer)}
            target = self.config.n_m_sparsity
        else:
            target = _step_target(self.config.sparsity, step, steps, self.config.schedule)
            self.masks = self._magnitude_masks(target, step, steps)
        self.reapply()
        return target

    def _magnitude_masks(self, target: float, step: int, steps: int) -> dict[nn.Parameter, torch.Tensor]:
        masks = {}
        shared = []
        for name, layer in self.layers.items():
            own = _layer_target(name, self.config.layer_sparsity)
            if own is not None or self.config.scope == "layer":
                final = self.config.sparsity if own is None else own
                amount = _step_target(final, step, steps, self.config.schedule)
                for p in _weights(layer):
                    masks[p] = _smallest_off(p.detach().abs().reshape(-1), amount).reshape(p.shape)
            else:
                shared += _weights(layer)
        if shared:
            flat = torch.cat([p.detach().abs().reshape(-1) for p in shared])
            keep = _smallest_off(flat, target)
            for p, part in zip(shared, torch.split(keep, [p.numel() for p in shared])):
                masks[p] = part.reshape(p.shape)
        return masks

    @torch.no_grad()
    def reapply(self) -> None:
        for p, mask in self.masks.items():
            p.mul_(mask)


def _layer_target(name: str, targets: dict[str, float]) -> float | None:
    """The most specific per-layer target covering ``name`` (``features`` covers ``features.3``), else None."""
    covering = [key for key in targets if name == key or name.startswith(key + ".")]
    return targets[max(covering, key=len)] if covering else None


def _smallest_off(magnitudes: torch.Tensor, fraction: float) -> torch.Tensor:
    """A keep-mask that turns off exactly round(fraction * n) of the smallest magnitudes (stable order on ties)."""
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    count = int(round(fraction * magnitudes.numel()))
    if count:
        keep[torch.argsort(magnitudes, stable=True)[:count]] = False
    return keep


def _step_target(final: float, step: int, steps: int, schedule: str) -> float:
    if schedule == "one-shot" or steps <= 1:
        return final
    return polynomial_schedule(final, steps, 0.0, POWERS[schedule])[step - 1]


class _ChannelPruner:
    """Structured pruning with torch-pruning's dependency graph: channels are removed, not zeroed."""

    def __init__(self, module: nn.Module, handle: ModelHandle, layers: dict[str, nn.Module], config: PruneConfig, steps: int):
        import torch_pruning as tp

        if isinstance(module, (torch.fx.GraphModule, torch.jit.ScriptModule)):
            raise UsageError(f"{handle.source_path}: structured pruning needs the model's Python class (a zoo checkpoint, "
                             "or a state_dict with --arch); torch.export/TorchScript graphs can only use --method magnitude or 2:4")
        self.notes: list[str] = []
        self.config = config
        example = handle.input_spec.example_inputs(batch=2)
        named = dict(module.named_modules())
        outputs = output_layers(module, example)
        kept = [*outputs, *(n for n in layers if _covers(n, config.skip))]
        attention = [n for n, m in named.items() if n and (isinstance(m, nn.MultiheadAttention)
                     or isinstance(getattr(m, "heads", None), int) or isinstance(getattr(m, "num_heads", None), int))]
        recurrent = [n for n, m in named.items() if isinstance(m, RECURRENT)]
        ignored = [m for n, m in named.items() if n and (_covers(n, kept) or _covers(n, attention) or n in recurrent)]
        self.notes.append(f"kept whole: output layers {', '.join(outputs)}" + (f"; attention {', '.join(attention)} (heads not pruned)" if attention else "")
                          + (f"; recurrent {', '.join(recurrent)}" if recurrent else ""))
        ratios = {named[name]: ratio for name, ratio in config.layer_sparsity.items()}
        importance = tp.importance.MagnitudeImportance(p=1 if config.method == "l1-structured" else 2)
        power = POWERS.get(config.schedule, 1)
        with torch.no_grad():
            self.reference_shapes = _output_shapes(module, example)
        try:
            self.pruner = tp.pruner.BasePruner(
                module, example, importance=importance, global_pruning=config.scope == "global",
                pruning_ratio=config.sparsity, pruning_ratio_dict=ratios or None, ignored_layers=ignored,
                iterative_steps=steps, iterative_pruning_ratio_scheduler=torch_pruning_scheduler(power),
                root_module_types=[nn.modules.conv._ConvNd, nn.Linear],
            )
        except Exception as exc:
            raise EnvironmentFailure(f"torch-pruning could not trace the model's dependencies: {first_line(exc, 240)}") from None
        self.module = module
        self.pruned_layers: list[str] = []
        self._shapes = {n: _shape_of(m) for n, m in named.items() if n}

    def prune(self, step: int, steps: int) -> float:
        try:
            self.pruner.step()
        except Exception as exc:
            raise EnvironmentFailure(f"torch-pruning failed to remove channels: {first_line(exc, 240)}") from None
        self.pruned_layers = [n for n, m in self.module.named_modules() if n and _shape_of(m) != self._shapes.get(n)]
        if not self.pruned_layers:
            raise UsageError("structured pruning found no channel it may remove (every layer is an output, skipped, "
                             "attention or recurrent); try --method magnitude")
        return _step_target(self.config.sparsity, step, steps, self.config.schedule)

    def reapply(self) -> None:
        """Nothing to hold: removed channels are gone."""


def _shape_of(module: nn.Module) -> tuple:
    return tuple(tuple(p.shape) for p in module.parameters(recurse=False))


def output_layers(module: nn.Module, example: tuple) -> list[str]:
    """Names of the modules whose output is a model output (else the last weighted module run before it)."""
    produced: list[tuple[str, object]] = []
    hooks = [layer.register_forward_hook(lambda mod, args, out, name=name: produced.append((name, out)))
             for name, layer in module.named_modules() if name and any(True for _ in layer.parameters(recurse=False))]
    try:
        with torch.no_grad():
            outputs = module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    names = []
    for output in outputs:
        exact = [name for name, out in produced if out is output]
        names.append(exact[-1] if exact else produced[-1][0])
    return list(dict.fromkeys(names))


def _output_shapes(module: nn.Module, example: tuple) -> list[tuple]:
    outputs = module(*example)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [tuple(o.shape) for o in outputs]


def _check_outputs(module: nn.Module, handle: ModelHandle, expected: list[tuple] | None) -> None:
    if expected is None:
        return
    example = handle.input_spec.example_inputs(batch=2)
    with torch.no_grad():
        try:
            got = _output_shapes(module, example)
        except Exception as exc:
            raise EnvironmentFailure(f"the pruned model no longer runs ({first_line(exc, 240)}); skip the layer with --skip") from None
    if got != expected:
        raise EnvironmentFailure(f"pruning changed the model's outputs {expected} -> {got}; skip the output layer with --skip")


def _make_pruner(module: nn.Module, handle: ModelHandle, config: PruneConfig, layers: dict[str, nn.Module]):
    if config.structured:
        return _ChannelPruner(module, handle, layers, config, _steps(config))
    return _MaskPruner(layers, config)


def _steps(config: PruneConfig) -> int:
    if not config.finetune_epochs or config.schedule == "one-shot" or config.n_m:
        return 1
    return ramp_epochs(config.finetune_epochs)


# --- fine-tuning ------------------------------------------------------------------------------------------------


def _prune_and_finetune(module: nn.Module, pruner, config: PruneConfig, data: Splits | None,
                        on_epoch: EpochCallback | None) -> list[dict]:
    from compress.data.evaluate import task_metrics
    from compress.passes.training import fit, predict

    steps = _steps(config)
    if not config.finetune_epochs:
        pruner.prune(1, 1)
        return []
    history = []
    heads = data.train.heads
    for epoch in range(config.finetune_epochs):
        sparsity = pruner.prune(epoch + 1, steps) if epoch < steps else history[-1]["sparsity"]
        losses: list[float] = []
        fit(module, data.train, heads, 1, config.lr, config.batch_size, config.seed + epoch,
            on_epoch=lambda _, loss: losses.append(loss), after_step=pruner.reapply)
        val = task_metrics(heads, predict(module, data.val), data.val.y) if data.val.size and data.val.labeled else None
        row = {"epoch": epoch + 1, "epochs": config.finetune_epochs, "sparsity": round(sparsity, 6),
               "loss": round(losses[-1], 6), "val": val["value"] if val else None}
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return history


def check_prunable(handle: ModelHandle) -> None:
    """UsageError unless ``handle`` holds a trainable torch module."""
    if handle.module is None:
        raise UsageError(f"{handle.source_path} is an ONNX model: pruning needs the torch model (a zoo checkpoint, "
                         "a state_dict with --arch, or a .pt2)")
    if isinstance(handle.module, torch.jit.ScriptModule):
        raise UsageError(f"{handle.source_path} is TorchScript: pruning needs a trainable torch module; save a state_dict "
                         "(with --arch) or a torch.export .pt2 instead")


def _module_copy(handle: ModelHandle) -> nn.Module:
    check_prunable(handle)
    module = copy.deepcopy(handle.module)
    for p in module.parameters():
        p.requires_grad_(True)
    return module


