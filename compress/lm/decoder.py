"""One interface for running a decoder LM token by token with a KV cache, whatever holds it: the float reference in
torch, or an exported .onnx / .pte / .tflite file in its own runtime.

Example:
    >>> decoder = open_decoder("runs/smollm2/model.int4-weight.onnx", threads=2)
    >>> logits = decoder.prefill([1, 4093, 198])          # (3, vocab), one runtime call
    >>> next_logits = decoder.decode(int(logits[-1].argmax()))
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from compress.errors import UsageError

OPENERS = {".onnx": "compress.lm.onnx_kv:OnnxDecoder", ".pte": "compress.lm.pte_kv:PteDecoder",
           ".tflite": "compress.lm.tflite_kv:TfliteDecoder"}


@runtime_checkable
class Decoder(Protocol):
    """A stateful next-token model: prefill a prompt in one call, then decode one token at a time."""

    vocab_size: int
    max_context: int  # positions the KV cache holds

    def reset(self) -> None: ...

    def prefill(self, ids: Sequence[int]) -> np.ndarray: ...  # float32 (len(ids), vocab)

    def decode(self, token: int) -> np.ndarray: ...  # float32 (vocab,)


class TorchDecoder:
    """The float reference: a transformers ``*ForCausalLM`` with its own KV cache; prefill is one forward pass.

    Example:
        >>> decoder = TorchDecoder(lm.module, max_context=512)
        >>> decoder.prefill([1, 2, 3]).shape
        (3, 49152)
    """

    def __init__(self, module, max_context: int = 512):
        self.module = module.eval()
        self.vocab_size = int(module.config.vocab_size)
        self.max_context = int(min(max_context, getattr(module.config, "max_position_embeddings", max_context) or max_context))
        self.reset()

    def reset(self) -> None:
        self._cache = None
        self.position = 0

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        if self.position + len(ids) > self.max_context:
            raise UsageError(f"{self.position + len(ids)} positions exceed the KV cache's {self.max_context}; "
                             "shorten the prompt or --max-new-tokens")
        with torch.inference_mode():
            out = self.module(torch.tensor([list(ids)], dtype=torch.long), cache=self._cache, use_cache=True)
        self._cache = out.cache
        self.position += len(ids)
        return out.logits[0].float().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not len(ids):
            raise UsageError("an empty prompt: give at least one token")
        self.reset()
        return self._forward(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._forward([int(token)])[-1]


def open_decoder(path, threads: int | None = None) -> Decoder:
    """The Decoder for an exported file, by suffix (the exporter's class, imported only now); UsageError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (give an exported .onnx, .pte or .tflite language model)")
    target = OPENERS.get(path.suffix.lower())
    if target is None:
        raise UsageError(f"{path.name}: not a language-model artifact (compress generate runs {', '.join(OPENERS)} "
                         "files exported by compress quantize, a model directory or a .gguf file)")
    module_name, class_name = target.split(":")
    try:
        opener = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise UsageError(f"{path.name}: this install cannot run {path.suffix} language models ({module_name} is missing)") from None
    return opener(path, threads=threads)
