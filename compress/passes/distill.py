"""Knowledge distillation: train a small student on a teacher's soft targets, and measure what that bought.

The loss per classification head is ``alpha * T² * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``
(Hinton et al. 2015; the T² keeps the soft-target gradients on the scale of the hard-label ones); regression
heads blend the MSE to the teacher's outputs and to the labels the same way. Optional intermediate-feature
terms (``features={student_layer: teacher_layer}``) add the MSE between a teacher activation and the student's
activation through a learned projection (a 1x1 convolution or a linear map over channels), where the two
activations agree on every axis but channels; the MSE is divided by the teacher activation's mean square so that
the term is scale-free (raw activations can be large enough to swamp the soft targets).

The teacher is any loadable model (torch, TorchScript, torch.export or an ONNX file run in onnxruntime): its
outputs on the train split are computed once. Feature terms need an eager torch teacher (forward hooks).

The **same student trained without distillation** (same architecture, seed, data order, epochs and learning rate,
hard labels only) is trained too, so the benefit of KD is measured rather than assumed; the verdict says plainly
when KD did not help.

Example:
    >>> student = apply(load_model("mnist_cnn.pt"), DistillConfig(student="mnist_cnn:width=0.25", epochs=20), splits)
    >>> student.metrics["distill"]["verdict"]
    'KD helped: test accuracy 0.9638 vs 0.9554 without distillation (+0.84 pt)'
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.nn import functional as F

from compress.catalog import Technique
from compress.data import Dataset, Head, Splits
from compress.errors import UsageError
from compress.loading.model import ModelHandle
from compress.passes.training import as_tuple, fit, predict, set_mode
from compress.limits import MAX_BATCH, MAX_EPOCHS

EpochCallback = Callable[[dict], None]


class DistillConfig(BaseModel):
    """Distillation settings (one object for the CLI, the Python API and recipe stages)."""

    model_config = ConfigDict(extra="forbid")

    student: str = Field(..., description="A zoo architecture with options (mnist_cnn:width=0.25) or package.module:Class.")
    temperature: float = Field(4.0, gt=0, description="Softmax temperature of the soft targets.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the soft-target loss; 1 - alpha goes to the hard labels.")
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description=f"Training epochs of the student (at most {MAX_EPOCHS:,}).")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description=f"Training batch size (at most {MAX_BATCH:,}).")
    seed: int = 0
    features: dict[str, str] = Field(default_factory=dict, description="Intermediate-feature pairs {student_layer: teacher_layer}.")
    feature_weight: float = Field(1.0, ge=0, description="Weight of each feature term.")
    baseline: bool = Field(True, description="Also train the same student without distillation, to measure KD's benefit.")

    @field_validator("student")
    @classmethod
    def _student_form(cls, value: str) -> str:
        parse_student(value)
        return value

    def technique(self) -> Technique:
        """Labelled e.g. ``distill:kd:T=4:alpha=0.7:student=mnist_cnn:width=0.45``."""
        feats = (("features", len(self.features)),) if self.features else ()
        return Technique("distill", method="kd", settings=(("T", self.temperature), ("alpha", self.alpha),
                                                            *student_settings(self.student), *feats))


def parse_student(spec: str) -> tuple[str, dict]:
    """``mnist_cnn:width=0.25`` -> ("mnist_cnn", {"width": 0.25}); ``pkg.mod:Class`` -> ("pkg.mod:Class", {}).

    Options after the architecture are ``key=value`` pairs separated by ``,`` or ``:``; values are YAML scalars.
    """
    import yaml

    from compress.safety import yamlsafe
    from compress.zoo.registry import ZOO

    head, _, rest = spec.strip().partition(":")
    if head in ZOO:
        arch, options = head, rest
    else:
        class_name, _, options = rest.partition(":")
        if "." not in head or not class_name.isidentifier():
            raise ValueError(f"unknown student architecture {spec!r}: use a zoo name ({', '.join(ZOO)}) with options "
                             "like mnist_cnn:width=0.25, or package.module:Class")
        arch = f"{head}:{class_name}"
    kwargs = {}
    for pair in (p for p in options.replace(",", ":").split(":") if p):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"bad student option {pair!r} in {spec!r}; write options as key=value, e.g. mnist_cnn:width=0.25")
        try:
            kwargs[key.strip()] = yamlsafe.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"bad student option {pair!r} in {spec!r}: the value is not valid YAML") from None
    return arch, kwargs


def student_settings(spec: str) -> tuple[tuple[str, object], ...]:
    """The student as technique settings: ``mnist_cnn:width=0.25`` -> (("student", "mnist_cnn"), ("width", 0.25))."""
    arch, options = parse_student(spec)
    return (("student", arch), *options.items())


def build_student(spec: str, seed: int = 0) -> tuple[nn.Module, dict]:
    """A freshly initialised student (``torch.manual_seed(seed)`` first, so two builds are identical) and its arch record."""
    from compress.zoo.registry import ZOO

    arch, kwargs = parse_student(spec)
    torch.manual_seed(seed)
    if arch in ZOO:
        entry = ZOO[arch]
        unknown = set(kwargs) - ({"width"} if not entry.widthless else set())
        if unknown:
            raise UsageError(f"zoo student {arch} takes only width=..., not {', '.join(sorted(unknown))}")
        return entry.build(**kwargs), {"name": arch, "config": {"width": float(kwargs.get("width", 1.0))} if not entry.widthless else {}}
    module_name, _, class_name = arch.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot import student {arch!r} ({exc}); write it as package.module:Class") from None
    try:
        return cls(**kwargs), {"name": arch, "config": kwargs}
    except TypeError as exc:
        raise UsageError(f"student {arch} rejected its options {kwargs}: {exc}") from None


def count_parameters(module: nn.Module | None) -> int | None:
    return None if module is None else sum(p.numel() for p in module.parameters())


@dataclass
class DistillResult:
    student: ModelHandle                 # the distilled student, ``metrics["distill"]`` = ``summary``
    baseline: nn.Module | None           # the same student trained without distillation
    summary: dict


def apply(handle: ModelHandle, config: DistillConfig, data: Splits | None = None,
          on_epoch: EpochCallback | None = None) -> ModelHandle:
    """Train ``config.student`` from the teacher ``handle``; return the student's handle (see :func:`distill`)."""
    return distill(handle, config, data, on_epoch).student


def distill(handle: ModelHandle, config: DistillConfig, data: Splits | None = None,
            on_epoch: EpochCallback | None = None) -> DistillResult:
    """Distill, and train the no-KD baseline. ``on_epoch`` gets ``{"run": "kd"|"baseline", "epoch", "epochs", "loss", "val"}``.

    ``summary`` holds teacher, student (with KD) and baseline (without KD) parameter counts and val/test metrics
    (eager PyTorch), ``param_ratio``, ``kd_gain`` (student minus baseline, in the metric's units) and a one-line
    ``verdict``.
    """
    if data is None or not data.train.labeled:
        raise UsageError("distillation needs labeled training data: pass --data (the teacher's dataset)")
    heads = data.train.heads
    handle.input_spec.check(data.train.x, f"data {data.train.name!r}")
    teacher_train = teacher_outputs(handle, data.train)
    student, arch = build_student(config.student, config.seed)
    _check_compatible(student, handle, teacher_train, config.student)

    targets = Dataset(data.train.name, data.train.x, (*data.train.y, *(t.astype(np.float32) for t in teacher_train)), heads, "train")
    distiller = _Distiller(student, handle, config, _feature_example(handle))
    try:
        fit(distiller, targets, heads, config.epochs, config.lr, config.batch_size, config.seed,
            loss_fn=distiller.loss(heads), on_epoch=_reporter(on_epoch, "kd", config.epochs, student, data))
    finally:
        distiller.close()

    summary = {
        "teacher": _measure(handle.module, handle, data),
        "student": {"spec": config.student, **_measure(student, None, data)},
        "temperature": config.temperature, "alpha": config.alpha, "epochs": config.epochs,
        "features": dict(config.features),
    }
    baseline = None
    if config.baseline:
        baseline, _ = build_student(config.student, config.seed)
        fit(baseline, data.train, heads, config.epochs, config.lr, config.batch_size, config.seed,
            on_epoch=_reporter(on_epoch, "baseline", config.epochs, baseline, data))
        set_mode(baseline, False)
        summary["baseline"] = {"spec": config.student, "distillation": False, **_measure(baseline, None, data)}
    summary.update(_verdict(summary))
    set_mode(student, False)
    distilled = handle.with_module(student, config.technique())
    return DistillResult(replace(distilled, arch=arch, metrics={"distill": summary}, onnx_path=None), baseline, summary)


# --- teacher ----------------------------------------------------------------------------------------------------


def teacher_outputs(handle: ModelHandle, data: Dataset) -> list[np.ndarray]:
    """The teacher's outputs on every sample of ``data``: eager torch, or onnxruntime for an ONNX teacher."""
    if handle.module is not None:
        return predict(handle.module, data)
    from compress.runtimes import open_runner, run_dataset

    return run_dataset(open_runner(handle.onnx_path), data)


def _check_compatible(student: nn.Module, handle: ModelHandle, teacher: list[np.ndarray], spec: str) -> None:
    example = handle.input_spec.example_inputs(batch=2)
    try:
        with torch.no_grad():
            outputs = as_tuple(student.eval()(*example))
    except Exception as exc:
        shapes = ", ".join(f"{t.name} {tuple(t.shape[1:])}" for t in handle.input_spec.tensors)
        raise UsageError(f"student {spec} cannot take the teacher's inputs ({shapes}): {str(exc).splitlines()[0][:160]}") from None
    got = [tuple(o.shape[1:]) for o in outputs]
    want = [tuple(t.shape[1:]) for t in teacher]
    if got != want:
        raise UsageError(f"student {spec} outputs {got} but the teacher outputs {want}: the student must predict the same "
                         "outputs (same heads, same number of classes)")


# --- the distillation loss ----------------------------------------------------------------------------------------


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, head: Head, temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T² * KL(soft teacher || soft student) + (1 - alpha) * hard loss`` for one head."""
    if head.kind != "classification":
        return alpha * F.mse_loss(student, teacher) + (1 - alpha) * F.mse_loss(student, labels)
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature**2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)


class _Distiller(nn.Module):
    """The student plus the feature projections, trained together; ``forward`` is the student's."""

    def __init__(self, student: nn.Module, handle: ModelHandle, config: DistillConfig, example: tuple | None):
        super().__init__()
        self.student = student
        self.config = config
        self._frozen = [handle.module]  # a plain list: the teacher is not a submodule, so it is never trained
        self.projections = nn.ModuleDict()
        self.captured: dict[str, torch.Tensor] = {}
        self.hooks = []
        if config.features:
            self._attach_features(example)

    @property
    def teacher(self) -> nn.Module | None:
        return self._frozen[0]

    def forward(self, *inputs):
        return self.student(*inputs)

    def train(self, mode: bool = True):
        self.student.train(mode)
        self.projections.train(mode)
        self.training = mode
        return self

    def _attach_features(self, example: tuple) -> None:
        if self.teacher is None or isinstance(self.teacher, (torch.jit.ScriptModule, torch.fx.GraphModule)):
            raise UsageError("feature distillation needs an eager torch teacher (a zoo checkpoint or state_dict with --arch) "
                             "to hook its layers; drop --features or load the teacher that way")
        student_layers, teacher_layers = dict(self.student.named_modules()), dict(self.teacher.named_modules())
        for side, names, layers in (("student", self.config.features.keys(), student_layers), ("teacher", self.config.features.values(), teacher_layers)):
            for name in names:
                if name not in layers or not name:
                    raise UsageError(f"unknown {side} layer {name!r}; its layers: {', '.join(n for n in layers if n)}")
        for index, (s_name, t_name) in enumerate(self.config.features.items()):
            self.hooks.append(student_layers[s_name].register_forward_hook(self._keeper(f"s{index}")))
            self.hooks.append(teacher_layers[t_name].register_forward_hook(self._keeper(f"t{index}")))
        with torch.no_grad():
            self.student.eval()(*example)
            self.teacher.eval()(*example)
        for index, (s_name, t_name) in enumerate(self.config.features.items()):
            self.projections[str(index)] = _projection(self.captured[f"s{index}"], self.captured[f"t{index}"], s_name, t_name)

    def _keeper(self, key: str):
        def keep(module, args, output):
            self.captured[key] = output[0] if isinstance(output, tuple) else output

        return keep

    def loss(self, heads: tuple[Head, ...]):
        count = len(heads)
        config = self.config

        def loss_fn(inputs, outputs, labels):
            hard, soft = labels[:count], labels[count:]
            total = sum(kd_loss(o, t, y, h, config.temperature, config.alpha) for o, t, y, h in zip(outputs, soft, hard, heads))
            if config.features:
                with torch.no_grad():
                    self.teacher(*inputs)
                for index in range(len(config.features)):
                    projected, target = self.projections[str(index)](self.captured[f"s{index}"]), self.captured[f"t{index}"]
                    total = total + config.feature_weight * F.mse_loss(projected, target) / (target.pow(2).mean() + 1e-8)
            return total

        return loss_fn

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        self.captured.clear()


def _feature_example(handle: ModelHandle) -> tuple:
    return handle.input_spec.example_inputs(batch=2)


def _projection(student: torch.Tensor, teacher: torch.Tensor, s_name: str, t_name: str) -> nn.Module:
    """A learned map from the student's channels to the teacher's: 1x1 conv for (B, C, ...) maps, linear for (B, ..., C)."""
    s_shape, t_shape = tuple(student.shape[1:]), tuple(teacher.shape[1:])
    if len(s_shape) >= 2 and student.dim() >= 4 and s_shape[1:] == t_shape[1:] and len(s_shape) == len(t_shape):
        conv = {3: nn.Conv2d, 2: nn.Conv1d, 4: nn.Conv3d}[len(s_shape)]
        return conv(s_shape[0], t_shape[0], kernel_size=1)
    if len(s_shape) == len(t_shape) and s_shape[:-1] == t_shape[:-1]:
        return nn.Linear(s_shape[-1], t_shape[-1])
    raise UsageError(f"feature shapes cannot be matched: student {s_name} gives {s_shape}, teacher {t_name} gives {t_shape}; "
                     "pick layers that differ only in channels (same spatial size / sequence length)")


# --- measuring --------------------------------------------------------------------------------------------------


def _metric(module: nn.Module | None, handle: ModelHandle | None, split: Dataset) -> dict | None:
    from compress.data.evaluate import task_metrics

    if not split.size or not split.labeled:
        return None
    outputs = teacher_outputs(handle, split) if handle is not None else predict(module, split)
    return task_metrics(split.heads, outputs, split.y)


def _measure(module: nn.Module | None, handle: ModelHandle | None, data: Splits) -> dict:
    return {"params": count_parameters(module if handle is None else handle.module),
            "val": _metric(module, handle, data.val), "test": _metric(module, handle, data.test)}


def _reporter(on_epoch: EpochCallback | None, run: str, epochs: int, student: nn.Module, data: Splits):
    def report(epoch: int, loss: float) -> None:
        if on_epoch is None:
            return
        val = _metric(student, None, data.val)
        on_epoch({"run": run, "epoch": epoch + 1, "epochs": epochs, "loss": round(loss, 6), "val": val["value"] if val else None})
        set_mode(student, True)

    return report


def _verdict(summary: dict) -> dict:
    """``param_ratio``, ``kd_gain`` and a one-line verdict (plain about KD not helping)."""
    teacher, student, baseline = summary["teacher"], summary["student"], summary.get("baseline")
    result = {"param_ratio": round(student["params"] / teacher["params"], 6) if teacher["params"] else None}
    s_test = (student["test"] or {}).get("value")
    if baseline is None or s_test is None or (baseline["test"] or {}).get("value") is None:
        result.update(kd_gain=None, kd_helped=None, verdict="no baseline measured: the benefit of KD is unknown")
        return result
    b_test = baseline["test"]["value"]
    name = student["test"]["name"]
    gain = round(s_test - b_test, 6)
    helped = gain > 0
    verb = "KD helped" if helped else ("KD did not help" if gain == 0 else "KD did not help (it hurt)")
    result.update(kd_gain=gain, kd_helped=helped,
                  verdict=f"{verb}: test {name} {s_test:.4f} vs {b_test:.4f} without distillation ({gain * 100:+.2f} pt)")
    return result
