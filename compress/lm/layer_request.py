"""The per-layer precision a user (``--embeddings``, a recipe's ``quantize_lm`` stage) or a tune trial asks for,
turned into the plan (a LayerChoice per layer) a format's decoder exporter writes: layers kept at int8 or in float
above the file's precision, and the token embedding's own grid.

The plan starts from the format's own default plan (ONNX: every linear and the head at the precision, a GGUF
source's grid where the target holds it; ``.pte``: every linear at the precision); each change says why in its
reason. A ``.pte`` has no int8 weight-only linear (XNNPACK computes it wrong, compress.lm.pte_kv), so a layer kept
at int8 is kept in float there, and the reason says so.

Example:
    >>> request = LayerRequest(keep_int8=("*.down_proj",), embeddings="int8-weight")
    >>> plan = request.plan(model, "onnx", "int4-weight", 32)                  # doctest: +SKIP
    >>> sorted({c.precision for c in plan})                                     # doctest: +SKIP
    ['int4-weight', 'int8-weight']
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Mapping

from compress.errors import UsageError
from compress.lm.schemes import LayerChoice

EMBEDDING_PRECISIONS = ("fp32", "int8-weight", "int4-weight")
READERS = {"onnx": "GatherBlockQuantized", "pte": "ExecuTorch's quantized_decomposed embedding op"}


@dataclass(frozen=True)
class LayerRequest:
    """``keep_int8`` / ``keep_float``: fnmatch patterns of torch layer names (``model.layers.*.mlp.down_proj``,
    ``lm_head``); ``embeddings``: the token table's precision (None: the format's default, a float table)."""

    keep_int8: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ()
    embeddings: str | None = None
    embedding_block: int = 32

    def __post_init__(self) -> None:
        if self.embeddings not in (None, *EMBEDDING_PRECISIONS):
            raise UsageError(f"--embeddings: give one of {', '.join(EMBEDDING_PRECISIONS)} (got {self.embeddings!r})")

    def asks(self) -> bool:
        return bool(self.keep_int8 or self.keep_float or self.embeddings)

    def plan(self, module, fmt: str, precision: str, block_size: int,
             grids: Mapping[str, object] | None = None) -> list[LayerChoice]:
        """The format's default plan for ``precision`` with this request applied."""
        base = _format_plan(module, fmt, precision, block_size, grids)
        _check_patterns(base, {"keep_int8": self.keep_int8, "keep_float": self.keep_float})
        plan = [self._changed(choice, fmt) for choice in base]
        if not self.embeddings:
            return plan
        return [self._embedding(module, fmt), *(c for c in plan if c.kind != "embedding")]

    def _changed(self, choice: LayerChoice, fmt: str) -> LayerChoice:
        if choice.kind == "embedding":
            return choice
        floated = _matching(choice.name, self.keep_float)
        if floated:
            return dataclasses.replace(choice, precision="fp32", block_size=None, symmetric=None,
                                       reason=f"kept float: asked (keep_float {floated!r})")
        kept = _matching(choice.name, self.keep_int8)
        if not kept or choice.precision in ("fp32", "int8-weight"):
            return choice
        if fmt == "pte":
            return dataclasses.replace(choice, precision="fp32", block_size=None, symmetric=None,
                                       reason=f"kept float: asked at int8 (keep_int8 {kept!r}), and a .pte has no "
                                              "int8 weight-only linear (XNNPACK computes it wrong)")
        return dataclasses.replace(choice, precision="int8-weight", symmetric=True,
                                   reason=f"kept at int8 g{choice.block_size}: asked (keep_int8 {kept!r})")

    def _embedding(self, module, fmt: str) -> LayerChoice:
        from compress.lm.onnx_embedding import embedding_block

        name = next(n for n, m in module.named_modules() if m is module.get_input_embeddings())
        if self.embeddings == "fp32":
            return LayerChoice(name, "embedding", "fp32", None, None, "kept float: asked (embeddings fp32)")
        if fmt not in READERS:
            raise UsageError(f"--embeddings {self.embeddings}: quantized embedding tables are written to ONNX and "
                             f".pte only; {fmt} keeps a float table: drop --embeddings or use --format onnx,pte")
        width = module.get_input_embeddings().weight.shape[1]
        block = embedding_block(width, self.embedding_block)
        if block is None:
            return LayerChoice(name, "embedding", "fp32", None, None, f"kept float: asked at {self.embeddings}, but "
                               f"no block of 16 or more divides the hidden width {width} ({READERS[fmt]})")
        symmetric = self.embeddings == "int8-weight" or fmt == "pte"  # ExecuTorch's ops take no zero point
        why = "" if block == self.embedding_block else f" (width {width} is not a multiple of {self.embedding_block})"
        return LayerChoice(name, "embedding", self.embeddings, block, symmetric,
                           f"asked: {self.embeddings} g{block}{why} {'symmetric' if symmetric else 'asymmetric'} "
                           f"table, read by {READERS[fmt]}")


def _format_plan(module, fmt: str, precision: str, block_size: int, grids) -> list[LayerChoice]:
    if fmt == "onnx":
        from compress.lm.onnx_families import read_decoder
        from compress.lm.onnx_kv import plan_onnx_layers

        return plan_onnx_layers(read_decoder(module), precision, block_size, None, grids or {})
    if fmt == "pte":
        from compress.lm.pte_kv import plan_linears

        return plan_linears(module, precision, block_size)
    raise UsageError(f"per-layer precision (keep_int8, keep_float, embeddings) is planned for onnx and pte; {fmt} "
                     "writes its own plan: drop them for this format")


def _matching(name: str, patterns) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def _check_patterns(plan: list[LayerChoice], asked: dict[str, tuple[str, ...]]) -> None:
    names = [c.name for c in plan if c.kind != "embedding"]
    for key, patterns in asked.items():
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise UsageError(f"{key} {pattern!r} matches no linear layer of this model (they are named like "
                                 f"{names[0]}, ..., {names[-1]})")
