"""Eager PyTorch as a runner (the reference, and `compress bench --runtime torch`).

Example:
    >>> TorchRunner.from_module(model, handle.input_spec).run((x,))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.targets.device_runner import run_in_chunks
from compress.passes.training import as_tuple, set_mode


class TorchRunner:
    """``spec`` (the model's InputSpec) gives the batch axes and, for a fixed-batch program, the one batch it runs at
    (data is then fed in chunks of it, the last padded and the padding dropped)."""

    name = "torch"

    def __init__(self, path: Path, threads: int | None = None, module: nn.Module | None = None, spec=None):
        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path)
        if module is None:
            from compress.loading.model import load_model

            handle = load_model(path)
            module, spec = handle.module, handle.input_spec
        set_mode(module, False)  # modules unlifted from torch.export refuse .eval()
        self.module = module
        self.input_names = list(spec.names if spec else [])
        self.input_axes = list(spec.input_axes if spec else [])
        self.output_axes = list(spec.output_axes or []) if spec else []
        self.fixed_batch = spec.fixed_batch if spec else None

    @classmethod
    def from_module(cls, module: nn.Module, spec) -> "TorchRunner":
        return cls(Path("<memory>"), module=module, spec=spec)

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        axes = self.input_axes or [0] * len(inputs)
        if self.fixed_batch is None or inputs[0].shape[axes[0]] == self.fixed_batch:
            return self._run(inputs)
        return run_in_chunks(self._run, list(inputs), self.fixed_batch, axes, self.output_axes or None)

    @torch.no_grad()
    def _run(self, inputs) -> list[np.ndarray]:
        outputs = as_tuple(self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)))
        return [o.detach().float().numpy() for o in outputs]
