"""What ``compress generate`` runs: a Decoder plus its tokenizer and chat template, from an exported artifact (the
tokenizer files beside it), a model directory or a GGUF file (the float model in torch).

Example:
    >>> session = open_generator("runs/smollm2/model.int4-weight.onnx", threads=2)
    >>> session.runtime, session.eos_ids
    ('onnxruntime', [2])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import UsageError
from compress.lm.decoder import OPENERS


@dataclass
class GeneratorSession:
    decoder: object  # compress.lm.decoder.Decoder
    tokenizer: object  # tokenizers.Tokenizer
    runtime: str  # "torch" or the artifact's runtime (compress.catalog: onnxruntime, executorch, litert)
    chat_template: str | None = None
    bos_id: int | None = None
    eos_ids: list[int] = field(default_factory=list)


def open_generator(source, threads: int | None = None, max_context: int = 2048) -> GeneratorSession:
    """The session for ``source``; UsageError for anything that is not a language model or its artifact."""
    source = Path(source)
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory (give an exported language model, a model directory or a .gguf file)")
    if source.is_file() and source.suffix.lower() in OPENERS:
        from compress.catalog import runtime_of
        from compress.lm.decoder import open_decoder
        from compress.lm.model import read_tokenizer_files

        tokenizer, meta = read_tokenizer_files(source.parent)
        decoder = open_decoder(source, threads=threads)
        eos = [int(i) for i in meta.get("eos_ids") or [] if isinstance(i, int)]
        return GeneratorSession(decoder, tokenizer, runtime_of(source), meta.get("chat_template"), meta.get("bos_id"), eos)
    from compress.lm.model import is_language_model, load_lm

    if not is_language_model(source):
        raise UsageError(f"{source.name}: not a language model (give an exported .onnx/.pte/.tflite language model, a "
                         "model directory with config.json, *.safetensors and tokenizer.json, or a .gguf file)")
    import torch

    from compress.lm.decoder import TorchDecoder

    if threads:
        torch.set_num_threads(threads)
    lm = load_lm(source)
    return GeneratorSession(TorchDecoder(lm.module, max_context=max_context), lm.tokenizer, "torch", lm.chat_template,
                            lm.bos_id, lm.eos_ids)
