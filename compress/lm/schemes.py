"""Quantization schemes for decoder LMs: which grid each layer gets, and that grid applied to the float weights.

``plan_layers`` chooses a precision per layer (linear / embedding / head) and says why; ``quantize_weight`` is THE
integer grid of each choice (exporters write its integers and scales, so their files reproduce it);
``snap_weights_`` rounds the chosen weights onto that grid in place (fake-quant, float storage): the float model the
accuracy algorithms optimise and the exported files must match. Given the grids of a GGUF source, a target grid that
can hold the source grid (Q4_1 -> int4 asymmetric g32 with a float zero, Q8_0 -> int8 g32) reuses the source's scales,
so the weights do not move (no second rounding).

Example:
    >>> import torch, transformers
    >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
    ...                                num_attention_heads=4, num_key_value_heads=2)
    >>> model = transformers.LlamaForCausalLM(cfg).eval()
    >>> layers = plan_layers(model, "int4-weight", block_size=32)
    >>> [(c.block_size, c.reason) for c in layers if c.name.endswith("q_proj")]
    [(None, 'width 48 is not a multiple of 32: per output channel')]
    >>> applied = snap_weights_(model, layers)
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from compress.catalog import PRECISIONS, Technique
from compress.errors import UsageError

LM_PRECISIONS = ("fp32", "int8-weight", "int4-weight", "8da4w")
BLOCK_SIZES = (32, 64, 128)
_WEIGHT_PRECISIONS = ("fp32", "int8-weight", "int4-weight")  # what embeddings and the head may take


@dataclass
class LayerChoice:
    """One layer's precision and grid, and why.

    Example:
        >>> LayerChoice("lm_head", "head", "int8-weight", None, True, "head at int8 per channel (default)").precision
        'int8-weight'
    """

    name: str  # torch module name, e.g. "model.layers.0.self_attn.q_proj", "lm_head", "model.embed_tokens"
    kind: str  # "linear" | "embedding" | "head"
    precision: str  # one of LM_PRECISIONS (fp32 = kept float)
    block_size: int | None  # group along the input width; None = one group per output channel (per channel)
    symmetric: bool | None
    reason: str


@dataclass
class LMExport:
    """What an LM exporter returns: the file, its precision, the per-layer choices it wrote, techniques and notes.

    Example:
        >>> LMExport(Path("m.onnx"), "fp32", [], [Technique("export", args=("onnx", "kv-cache"))], []).precision
        'fp32'
    """

    path: Path
    precision: str
    layers: list[LayerChoice]
    techniques: list[Technique]  # e.g. export:onnx:kv-cache, ptq:int4-weight:block32:asymmetric:MatMulNBits:compute=float
    notes: list[str]


def weights_technique(precision: str, kind: str = "ptq", **fields) -> Technique:
    """The record of a decoder's weights put on ``precision``'s grid, its scheme from the precision (``weight-only``;
    8da4w: ``dynamic``, int8 activations quantized on every call); ``fields`` as ``Technique`` takes them.

    Example:
        >>> weights_technique("int4-weight", block_size=32, symmetric=False, op_types=("MatMulNBits",)).label
        'ptq:int4-weight:block32:asymmetric:MatMulNBits'
        >>> weights_technique("8da4w", block_size=32, symmetric=True, args=("xnnpack",)).as_dict()["scheme"]
        'dynamic'
    """
    record = PRECISIONS[precision]
    scheme = "weight-only" if record.weight_only else record.activations
    return Technique(kind, precision=precision, scheme=scheme, written=precision, **fields)


@dataclass
class QuantizedWeight:
    """A weight on its integer grid: ``float = scale * q + offset`` per group (``offset`` None when symmetric).

    ``q`` is int8 [out, in] (int4 values lie in [-8, 7] symmetric or [0, 15] asymmetric); ``scale`` and ``offset``
    are float32 [out, groups]. An exporter with an integer zero point uses ``zero = -offset / scale``.

    Example:
        >>> qw = quantize_weight(torch.tensor([[0.5, 1.0, -2.0, 4.0]]), "int4-weight", None, True)
        >>> qw.q.tolist(), qw.dequantize().tolist()
        ([[-1, -2, 4, -8]], [[0.5, 1.0, -2.0, 4.0]])
    """

    q: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor | None
    block_size: int  # the group width actually used (the full input width when per channel)

    def dequantize(self) -> torch.Tensor:
        out, width = self.q.shape
        q = self.q.to(torch.float32).reshape(out, width // self.block_size, self.block_size)
        w = q * self.scale.unsqueeze(-1)
        if self.offset is not None:
            w = w + self.offset.unsqueeze(-1)
        return w.reshape(out, width)


def _check_precision(precision: str, allowed: Sequence[str], what: str) -> None:
    if precision not in allowed:
        raise UsageError(f"unknown {what} precision {precision!r}: use one of {', '.join(allowed)}")


def _block_for(width: int, block_size: int) -> tuple[int | None, str | None]:
    """The group for a width: the requested one, else the largest standard group below it that divides the width,
    else per channel (None); the second value says why when it is not the requested one."""
    if width % block_size == 0:
        return block_size, None
    for smaller in sorted((b for b in BLOCK_SIZES if b < block_size), reverse=True):
        if width % smaller == 0:
            return smaller, f"width {width} is not a multiple of {block_size}: block {smaller}"
    return None, f"width {width} is not a multiple of {block_size}: per output channel"


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """A layer's weight as [out, in] (a view): nn.Linear and nn.Embedding as stored, GPT-2's Conv1D transposed.

    Example:
        >>> weight_matrix(nn.Linear(3, 2)).shape
        torch.Size([2, 3])
    """
    if type(layer).__name__ == "Conv1D":  # transformers.pytorch_utils.Conv1D stores [in, out]
        return layer.weight.data.t()
    return layer.weight.data


def _quantizable(module: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    embed = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    for name, layer in module.named_modules():
        if layer is head:
            yield name, layer, "head"
        elif isinstance(layer, nn.Linear) or type(layer).__name__ == "Conv1D":
            yield name, layer, "linear"
        elif isinstance(layer, nn.Embedding):
            yield name, layer, "embedding" if layer is embed else "position-embedding"


def plan_layers(module: nn.Module, precision: str, block_size: int = 32, symmetric: bool | None = None,
                embeddings: str | None = None, head: str | None = None,
                keep_float: Sequence[str] = ()) -> list[LayerChoice]:
    """Choose each layer's precision and grid, with the reason.

    Linear layers get ``precision``; int4 groups run along the input width (``block_size``; a width it does not
    divide gets the largest standard group that does, or per channel, and the reason says so). int4-weight is
    asymmetric (float zero) unless ``symmetric``; 8da4w is always symmetric (XNNPACK runs asymmetric int4 to
    garbage, so asking for it is refused). The token embedding defaults to int8 per row and the head to int8 per
    channel for quantized precisions (as llama.cpp keeps output.weight at 6-8 bits); ``embeddings`` / ``head`` take
    "fp32", "int8-weight" or "int4-weight". ``keep_float`` names layers (fnmatch patterns) kept float.

    Example:
        >>> import transformers
        >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
        ...                                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
        >>> plan = plan_layers(transformers.LlamaForCausalLM(cfg), "8da4w", keep_float=["*.down_proj"])
        >>> [(c.name, c.precision) for c in plan if c.kind != "linear" or "down" in c.name]
        [('model.embed_tokens', 'int8-weight'), ('model.layers.0.mlp.down_proj', 'fp32'), ('lm_head', 'int8-weight')]
    """
    _check_precision(precision, LM_PRECISIONS, "layer")
    if block_size not in BLOCK_SIZES:
        raise UsageError(f"block size {block_size} is not supported: use one of {', '.join(map(str, BLOCK_SIZES))}")
    if precision == "8da4w" and symmetric is False:
        raise UsageError("8da4w needs symmetric int4 weights (XNNPACK runs asymmetric ones to garbage): "
                         "drop the asymmetric option, or use int4-weight")
    default = "int8-weight" if precision != "fp32" else "fp32"
    notes = {"linear": "", "embedding": "" if embeddings else " (default)", "head": "" if head else " (default)"}
    embeddings, head = embeddings or default, head or default
    _check_precision(embeddings, _WEIGHT_PRECISIONS, "embedding")
    _check_precision(head, _WEIGHT_PRECISIONS, "head")
    candidates = list(_quantizable(module))
    for pattern in keep_float:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _, _ in candidates):
            example = candidates[0][0] if candidates else "lm_head"
            raise UsageError(f"no layer matches {pattern!r} to keep float (names look like {example!r})")
    choices = []
    for name, layer, kind in candidates:
        if any(fnmatch.fnmatchcase(name, p) for p in keep_float):
            choices.append(LayerChoice(name, "head" if kind == "head" else "embedding" if "embedding" in kind
                                       else "linear", "fp32", None, None, "kept float: requested"))
            continue
        if kind == "position-embedding":
            choices.append(LayerChoice(name, "embedding", "fp32", None, None,
                                       "position embeddings kept float (small, added to every token)"))
            continue
        wanted = {"linear": precision, "embedding": embeddings, "head": head}[kind]
        choices.append(_choose(name, kind, wanted, weight_matrix(layer).shape[1], block_size, symmetric,
                               notes[kind]))
    return choices


def _choose(name: str, kind: str, precision: str, width: int, block_size: int, symmetric: bool | None,
            note: str) -> LayerChoice:
    if precision == "fp32":
        return LayerChoice(name, kind, "fp32", None, None, "kept float")
    if precision == "int8-weight":
        return LayerChoice(name, kind, precision, None, True, f"int8 per output channel{note}")
    sym = True if precision == "8da4w" else bool(symmetric)
    block, why = _block_for(width, block_size)
    grid = f"int4 {'symmetric' if sym else 'asymmetric'} {'g' + str(block) if block else 'per channel'}"
    return LayerChoice(name, kind, precision, block, sym, why or grid)


def quantize_weight(weight: torch.Tensor, precision: str, block_size: int | None, symmetric: bool | None,
                    scale: torch.Tensor | None = None, offset: torch.Tensor | None = None) -> QuantizedWeight:
    """Round a [out, in] weight onto a precision's integer grid (see QuantizedWeight), optionally with given scales.

    int8-weight: symmetric, scale = max|w| / 127 per group (q in [-127, 127]; -128 only from a Q8_0 source's
    scale). int4 symmetric: q in [-8, 7], scale = (the group's largest-magnitude value) / -8, so that value is exact
    (as llama.cpp's Q4_0; the scale may be negative). int4 asymmetric: q in [0, 15], scale = (max - min) / 15,
    offset = min (a float zero, as Q4_1). Given ``scale`` (and ``offset``) they are used as
    they are: the grid-aware path that keeps a GGUF source's values.

    Example:
        >>> quantize_weight(torch.tensor([[1.0, 3.0]]), "int4-weight", None, False).dequantize().tolist()
        [[1.0, 3.0]]
    """
    _check_precision(precision, LM_PRECISIONS[1:], "weight")
    w = weight.detach().to(torch.float32)
    out, width = w.shape
    block = block_size or width
    if width % block:
        raise UsageError(f"block size {block} does not divide width {width}: plan the layer with plan_layers")
    groups = w.reshape(out, width // block, block)
    if precision == "int8-weight" or symmetric:
        qmin, qmax = (-128, 127) if precision == "int8-weight" else (-8, 7)  # -128: Q8_0 sources use it
        if scale is None:
            if precision == "int8-weight":
                scale = groups.abs().amax(-1) / 127
            else:
                pick = groups.abs().argmax(-1, keepdim=True)
                scale = groups.gather(-1, pick).squeeze(-1) / -8
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.clamp(torch.round(groups / safe.unsqueeze(-1)), qmin, qmax)
        return QuantizedWeight(q.reshape(out, width).to(torch.int8), scale, None, block)
    if scale is None:
        offset = groups.amin(-1)
        scale = (groups.amax(-1) - offset) / 15
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round((groups - offset.unsqueeze(-1)) / safe.unsqueeze(-1)), 0, 15)
    return QuantizedWeight(q.reshape(out, width).to(torch.int8), scale, offset, block)


def align_to_source(layers: Sequence[LayerChoice], module: nn.Module,
                    grids: Mapping[str, object] | None) -> list[LayerChoice]:
    """The choices, each moved onto its GGUF source grid where that grid can hold it, with the reason said.

    ``grids`` maps torch parameter names ("model.layers.0.mlp.up_proj.weight") to BlockGrid records with
    ``quant_type``, ``block_size``, ``scales`` [out, in/block] and ``mins`` (Q4_1) or None. Q4_1 g32 is held
    exactly by int4 asymmetric g32 (float zero); Q8_0 g32 by int8 g32. Any other pairing is re-rounded, and the
    reason says the second rounding.

    Example:
        >>> kept = LayerChoice("lm_head", "head", "fp32", None, None, "kept float")
        >>> align_to_source([kept], nn.Module(), {})[0].reason
        'kept float'
    """
    if not grids:
        return list(layers)
    names: dict[int, list[str]] = {}  # a tied head finds its grid under the embedding's name
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    aligned = []
    for choice in layers:
        weight = module.get_submodule(choice.name).weight
        grid = next((grids[n] for n in [choice.name + ".weight", *names.get(id(weight), [])] if n in grids), None)
        if grid is None or choice.precision == "fp32":
            aligned.append(choice)
            continue
        source = f"{grid.quant_type} g{grid.block_size}"
        if grid.quant_type == "Q4_1" and choice.precision == "int4-weight" and not choice.symmetric \
                and grid.block_size in (choice.block_size, None) and choice.block_size == 32:
            aligned.append(dataclasses.replace(choice, reason=f"grid-aware: source {source} held exactly by "
                                                              "int4 asymmetric g32 (its scales and mins reused)"))
        elif grid.quant_type == "Q8_0" and choice.precision == "int8-weight" and grid.block_size == 32 \
                and weight_matrix(module.get_submodule(choice.name)).shape[1] % 32 == 0:
            aligned.append(dataclasses.replace(choice, block_size=32, reason=f"grid-aware: source {source} held "
                                                                             "exactly by int8 g32 (its scales reused)"))
        else:
            aligned.append(dataclasses.replace(choice, reason=f"{choice.reason}; re-rounded from source {source} "
                                                              "(a second rounding error: the target grid cannot "
                                                              "hold it)"))
    return aligned


def _source_scales(module: nn.Module, choice: LayerChoice,
                   grids: Mapping[str, object]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if not choice.reason.startswith("grid-aware"):
        return None, None
    weight = module.get_submodule(choice.name).weight
    names = [n for n, p in module.named_parameters(remove_duplicate=False) if p is weight]
    grid = next(grids[n] for n in [choice.name + ".weight", *names] if n in grids)
    mins = None if grid.mins is None else torch.as_tensor(grid.mins, dtype=torch.float32)
    return torch.as_tensor(grid.scales, dtype=torch.float32), mins


def _untie_if_needed(module: nn.Module, layers: Sequence[LayerChoice]) -> None:
    """Give the head its own weight when it is tied to the embedding but gets another grid."""
    if not (hasattr(module, "get_output_embeddings") and hasattr(module, "get_input_embeddings")):
        return
    head, embed = module.get_output_embeddings(), module.get_input_embeddings()
    if head is None or embed is None or head.weight is not embed.weight:
        return
    by_module = {id(module.get_submodule(c.name)): c for c in layers}
    h, e = by_module.get(id(head)), by_module.get(id(embed))
    grid = lambda c: None if c is None else (c.precision, c.block_size, c.symmetric)  # noqa: E731
    if grid(h) != grid(e):
        head.weight = nn.Parameter(head.weight.detach().clone())
        if getattr(module, "config", None) is not None:
            module.config.tie_word_embeddings = False


def snap_weights_(module: nn.Module, layers: Sequence[LayerChoice],
                  grids: Mapping[str, object] | None = None) -> list[LayerChoice]:
    """Round each chosen weight onto its integer grid, in place (fake-quant: values on the grid, float storage).

    With ``grids`` (from a GGUF source) layers whose target grid holds the source grid reuse its scales, so their
    values do not move. A head tied to the embedding but given another grid is untied first. Returns the choices as
    applied (reasons say grid-aware or re-rounded).

    Example:
        >>> lin = nn.Sequential(nn.Linear(64, 4))
        >>> done = snap_weights_(lin, [LayerChoice("0", "linear", "int4-weight", 32, True, "")])
        >>> bool((quantize_weight(lin[0].weight, "int4-weight", 32, True).dequantize() == lin[0].weight).all())
        True
    """
    applied = align_to_source(layers, module, grids) if grids else list(layers)
    _untie_if_needed(module, applied)
    with torch.no_grad():
        for choice in applied:
            if choice.precision == "fp32":
                continue
            w = weight_matrix(module.get_submodule(choice.name))
            scale, offset = _source_scales(module, choice, grids or {})
            qw = quantize_weight(w, choice.precision, choice.block_size, choice.symmetric, scale, offset)
            w.copy_(qw.dequantize().to(w.dtype))
    return applied


def fake_quantize_tokens(x: torch.Tensor) -> torch.Tensor:
    """int8 dynamic activation quantization per token (asymmetric, as 8da4w's XNNPACK kernels), dequantized.

    Example:
        >>> x = torch.tensor([[0.0, 0.3, 1.0]])
        >>> float((fake_quantize_tokens(x) - x).abs().max()) < 1 / 255
        True
    """
    lo = x.amin(-1, keepdim=True).clamp(max=0)
    hi = x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-12)
    zero = torch.round(-128 - lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero, -128, 127)
    return (q - zero) * scale


@contextlib.contextmanager
def quantized_activations(module: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Within the block, the inputs of the named layers are int8-quantized per token (what 8da4w / W8A8 run).

    Example:
        >>> lin = nn.Sequential(nn.Linear(4, 2))
        >>> with quantized_activations(lin, ["0"]):
        ...     _ = lin(torch.randn(3, 4))
    """
    handles = [module.get_submodule(n).register_forward_pre_hook(lambda _m, args: (fake_quantize_tokens(args[0]),)
                                                                 + tuple(args[1:])) for n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
