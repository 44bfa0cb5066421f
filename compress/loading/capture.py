"""torch.export capture for PT2E quantization (PTQ to TFLite, and QAT): strict first, non-strict when dynamo cannot trace.

Strict mode (TorchDynamo) records ``source_fn_stack``, which lets the quantizer find add/mul/cat; a non-strict graph
quantizes the rest and leaves those float, and says so in the returned note.

Example:
    >>> graph, note = capture(module, example, "PT2E quantization")
    >>> note is None                      # strict capture worked
    True
"""
from __future__ import annotations

import os
import sys

import torch
from torch.overrides import TorchFunctionMode

from compress.errors import EnvironmentFailure, UsageError, first_line

HOST_CALLS = ("numpy", "__array__")  # Tensor methods that hand a tensor's values to numpy
_LIBRARIES = tuple(os.path.dirname(m.__file__) for m in (torch, sys.modules.get("numpy")) if m is not None)


def capture(module: torch.nn.Module, example: tuple, purpose: str, dynamic_shapes=None) -> tuple[torch.fx.GraphModule, str | None]:
    """``(graph module, note)``; the note (None after a strict capture) explains a non-strict fallback."""
    try:
        return torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=True).module(), None
    except Exception as strict_error:
        try:
            graph = torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False).module()
        except Exception as exc:
            raise EnvironmentFailure(f"torch.export could not capture the model for {purpose}: {first_line(exc)}") from None
        return graph, (f"torch.export strict mode failed ({first_line(strict_error, 120)}); captured non-strict, "
                       "where the quantizer cannot see add/mul/cat, so those stay float")


def refuse_host_calls(module: torch.nn.Module, example: tuple, source: str) -> None:
    """UsageError (exit 2) when ``module``'s forward hands a tensor to numpy (``.numpy()``, ``np.asarray``): torch.export
    cannot capture that, and a traced graph would keep the example's values as constants. One forward on ``example``;
    any other failure of it is left to the checks that name it.

    Example:
        >>> refuse_host_calls(model, (torch.zeros(1, 16),), "model.pt")   # a forward of torch ops only: nothing raised
    """
    calls: list[str] = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", None) in HOST_CALLS and not calls:
                calls.append(_caller())
            return func(*args, **(kwargs or {}))

    try:
        with torch.no_grad(), Spy():
            module(*example)
    except Exception:  # the model's own error on these inputs: --input-shape's check and the exporters name it
        pass
    if calls:
        raise UsageError(f"{source}: the model's forward hands a tensor to numpy ({calls[0]}); torch.export cannot capture "
                         "that and a traced graph would freeze its values: use torch operations in forward")


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch, numpy and this module (the model's code)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(_LIBRARIES) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else "numpy call"
