"""torch.export capture for PT2E quantization (PTQ to TFLite, and QAT): strict first, non-strict when dynamo cannot trace.

Strict mode (TorchDynamo) records ``source_fn_stack``, which lets the quantizer find add/mul/cat; a non-strict graph
quantizes the rest and leaves those float, and says so in the returned note.

Example:
    >>> graph, note = capture(module, example, "PT2E quantization")
    >>> note is None                      # strict capture worked
    True
"""
from __future__ import annotations

import torch

from compress.errors import EnvironmentFailure, first_line


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
