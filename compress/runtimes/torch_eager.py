"""Eager PyTorch as a runner (the reference, and `compress bench --runtime torch`).

Example:
    >>> TorchRunner.from_module(model, ["image"]).run((x,))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.training import as_tuple, set_mode


class TorchRunner:
    name = "torch"

    def __init__(self, path: Path, threads: int | None = None, module: nn.Module | None = None, input_names: list[str] | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path)
        if module is None:
            from compress.model import load_model

            handle = load_model(path)
            module, input_names = handle.module, handle.input_spec.names
        set_mode(module, False)  # modules unlifted from torch.export refuse .eval()
        self.module = module
        self.input_names = list(input_names or [])

    @classmethod
    def from_module(cls, module: nn.Module, input_names: list[str]) -> "TorchRunner":
        return cls(Path("<memory>"), module=module, input_names=input_names)

    @torch.no_grad()
    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        outputs = as_tuple(self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)))
        return [o.detach().float().numpy() for o in outputs]
