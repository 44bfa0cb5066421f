"""Passes as registered plugins: one typed pydantic config per pass, registered to its handler.

A pass is a recipe stage (``- prune: {...}``). Its config is the very object the CLI verb and the Python API use
and serializes to a plain dict (``config.model_dump(mode="json")``); the recipe runner, the recipe schema and tune's
search space iterate :data:`PASSES`, so a new pass is one module plus one :func:`register_pass` call.

``produces`` says what the runner does with the handler's result:
  ``model``        ``handler(handle, config, splits) -> ModelHandle``; cached as ``model.pt2``, the next stage's input.
  ``artifacts``    ``handler(context, config) -> dict``: the stage record (its ``artifacts`` are copied to the run).
  ``measurement``  ``handler(context, config) -> dict``: run every time (never cached); the dict goes to the log.

A field joins tune's search space through :func:`searchable` (``json_schema_extra={"search": {...}}``).

Example:
    >>> class ToyConfig(BaseModel):
    ...     scale: float = Field(1.0, json_schema_extra=searchable("toy_scales", [0.5, 1.0]))
    >>> register_pass("toy", ToyConfig, lambda handle, config, splits: handle.with_module(handle.module, "toy"))
    >>> PASSES["toy"].config_class().model_fields["scale"].json_schema_extra["search"]["name"]
    'toy_scales'
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

Produces = Literal["model", "artifacts", "measurement"]


def _resolve(target: str | Any) -> Any:
    """``"package.module:name"`` imported on first use (registering loads nothing); an object as is."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Pass:
    name: str
    config: str | type          # the pydantic config class, or "module:Class" (imported on first use)
    handler: str | Callable     # the function, or "module:function"
    produces: Produces = "model"

    def config_class(self) -> type:
        return _resolve(self.config)

    def config_path(self) -> str:
        """``module:Class`` of the config (what ``STAGE_CONFIGS`` maps a stage name to)."""
        if isinstance(self.config, str):
            return self.config
        return f"{self.config.__module__}:{self.config.__qualname__}"

    def run(self, *args, on_epoch: Callable[[dict], None] | None = None):
        """Call the handler; ``on_epoch`` (one row per training epoch) goes to a handler that takes it."""
        handler = _resolve(self.handler)
        if on_epoch is not None and "on_epoch" in inspect.signature(handler).parameters:
            return handler(*args, on_epoch=on_epoch)
        return handler(*args)


PASSES: dict[str, Pass] = {}
_listeners: list[Callable[[], None]] = []


def register_pass(name: str, config: str | type, handler: str | Callable, produces: Produces = "model") -> Pass:
    """Register (or replace) the pass ``name``; the recipe schema and tune's search space are rebuilt to include it."""
    PASSES[name] = Pass(name, config, handler, produces)
    for listener in _listeners:
        listener()
    return PASSES[name]


def unregister_pass(name: str) -> None:
    """Remove a registered pass (a plugin's tests clean up with it)."""
    PASSES.pop(name, None)
    for listener in _listeners:
        listener()


def on_register(listener: Callable[[], None]) -> None:
    """Call ``listener`` after every registration (caches derived from the registry clear themselves)."""
    _listeners.append(listener)


def get_pass(name: str) -> Pass:
    return PASSES[name]


def searchable(name: str, default: Any, kind: Literal["choices", "range", "max"] = "choices", options: list | str | None = None,
               off: Any = None, le: int | None = None, description: str | None = None) -> dict:
    """The ``json_schema_extra`` that puts a config field into tune's search space (``SearchSpace.<name>``).

    ``choices``: a list of values drawn per trial (each validated as this field's value); ``range``: ``[low, high]``;
    ``max``: an upper bound (at most ``le``). ``options`` closes the set of allowed choices: a list, or
    ``"module:function"`` naming a function that returns them when a search is validated (choices that come from
    records registered later, such as a plugin's precision); ``off`` is a choice that switches the pass off (an empty
    list then means off too).

    Example: ``calib_samples: int = Field(256, json_schema_extra=searchable("calib_samples", [128, 256, 512]))``
    """
    spec = {"name": name, "kind": kind, "default": default}
    spec.update({k: v for k, v in (("options", options), ("off", off), ("le", le), ("description", description)) if v is not None})
    return {"search": spec}


def search_options(spec: dict) -> list:
    """The allowed choices of a search spec with ``options`` (a list, or read now from its ``"module:function"``)."""
    options = spec["options"]
    return list(_resolve(options)()) if isinstance(options, str) else options


def search_fields() -> list[tuple[Pass, str, dict]]:
    """``(pass, field name, search spec)`` for every searchable field of every registered pass, in registry order."""
    found = []
    for spec in PASSES.values():
        for field_name, info in spec.config_class().model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if "search" in extra:
                found.append((spec, field_name, extra["search"]))
    return found


# the built-in passes: one registration each (configs and handlers load on first use)
register_pass("prune", "compress.passes.prune:PruneConfig", "compress.passes.prune:apply")
register_pass("distill", "compress.passes.distill:DistillConfig", "compress.passes.distill:apply")
register_pass("qat", "compress.passes.qat:QatConfig", "compress.passes.qat:apply")
register_pass("quantize", "compress.passes.quantize:QuantizeConfig", "compress.passes.stages:quantize_stage", "artifacts")
register_pass("export", "compress.passes.quantize:ExportConfig", "compress.passes.stages:export_stage", "artifacts")
register_pass("evaluate", "compress.passes.stages:EvaluateConfig", "compress.passes.stages:evaluate_stage", "artifacts")
register_pass("quantize_lm", "compress.passes.lm_stage:QuantizeLMConfig", "compress.passes.lm_stage:outside_a_language_model",
              "artifacts")
register_pass("benchmark", "compress.passes.stages:BenchmarkConfig", "compress.passes.stages:benchmark_stage", "measurement")
