"""Decoder LMs to ONNX with a KV cache (fp32, int8-weight, int4-weight, 8da4w as MatMulNBits), and the onnxruntime
Decoder that runs such a file (a whole prompt in one run, then one run per token).

Precisions: ``int4-weight`` = MatMulNBits 4-bit blocks (asymmetric with a uint8 zero point by default, symmetric on
request), float compute; ``int8-weight`` = MatMulNBits 8-bit symmetric blocks (g32 by default), int8 compute;
``8da4w`` = MatMulNBits 4-bit symmetric with ``accuracy_level=4``: onnxruntime quantizes the activations to int8
per block at run time and multiplies in int8. With ``grids`` (a GGUF source's blocks, per parameter name), a layer
whose source grid the target can hold (Q4_1 → int4 g32 with zero point 0 plus a block-min term, Q4_0 → symmetric
int4 g32, Q8_0 → int8 g32) is written from that grid, so the file holds exactly the source's values. Attention is onnxruntime's
GroupQueryAttention by default (rotary, cache append and causal softmax in one node), or standard ops.

Example:
    >>> export = export_onnx_lm(module, Path("run/model.int4-weight.onnx"), "int4-weight", block_size=32)  # doctest: +SKIP
    >>> dec = OnnxDecoder(export.path)                                                               # doctest: +SKIP
    >>> logits = dec.prefill([1, 2, 3]); nxt = dec.decode(int(logits[-1].argmax()))                 # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from compress.catalog import Technique
from compress.errors import UsageError
from compress.lm.onnx_families import DecoderSpec, Linear, read_decoder
from compress.lm.onnx_embedding import BITS as EMBEDDING_BITS
from compress.lm.onnx_embedding import embedding_block, embedding_blocks, emit_gather_block_quantized
from compress.lm.onnx_graph import GraphWriter
from compress.lm.onnx_kv_graph import build_decoder_graph, emit_float_linear
from compress.lm.onnx_nbits import GRID_BITS, NBitsWeight, emit_matmul_nbits, from_grid, quantize_blocks
from compress.lm.schemes import LayerChoice, LMExport, weights_technique

ONNX_PRECISIONS = ("fp32", "int8-weight", "int4-weight", "8da4w")
BLOCK_SIZES = (16, 32, 64, 128, 256)

_EXTERNAL_DATA_BYTES = 1_800_000_000   # protobuf's 2 GB limit, with room
_GENAI_TYPES = {"gpt2": "llama"}      # genai's own "gpt2" type expects another graph; its generic decoder runs ours


def export_onnx_lm(module, out: Path, precision: str, *, max_context: int = 512, block_size: int = 32,
                   symmetric: bool | None = None, layers: list[LayerChoice] | None = None, grids=None,
                   accuracy_level: int | None = None, attention: str = "gqa") -> LMExport:
    """Write ``module`` (a transformers causal LM) as ONNX with past/present key-values at ``out``, a
    ``genai_config.json`` for onnxruntime-genai in ``<stem>.genai/`` beside it, and return what was done per layer.

    ``accuracy_level`` is the compute of the 4-bit int4-weight layers: 0 (default) = float activations, 4 = int8
    activations (rounded per block at run time; ~4x faster kernels). 8da4w and every 8-bit layer always run 4:
    onnxruntime 1.32's 8-bit float-compute path is ~100x slower (bench/lm_onnx.py, kernel_us_576x1536_t1).
    ``attention``: "gqa" (default: onnxruntime's fused GroupQueryAttention, measured ~1.5x faster prefill and decode
    on SmolLM2, bench/lm_onnx.py) or "matmul" (standard ONNX ops only, for runtimes without com.microsoft ops).
    """
    if attention not in ("matmul", "gqa"):
        raise UsageError(f"attention {attention!r} is not one of matmul, gqa")
    if precision not in ONNX_PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(ONNX_PRECISIONS)} for ONNX decoders")
    if block_size not in BLOCK_SIZES:
        raise UsageError(f"block size {block_size} is not one MatMulNBits runs (use one of {BLOCK_SIZES})")
    if accuracy_level not in (None, 0, 4):
        raise UsageError(f"accuracy_level {accuracy_level} is not one compress writes (0 float compute, 4 int8)")
    if max_context < 1:
        raise UsageError(f"max_context must be positive, got {max_context}")
    spec = read_decoder(module)
    if spec.positions is not None and max_context > len(spec.positions):
        raise UsageError(f"max_context {max_context} exceeds the model's {len(spec.positions)} learned positions")
    grids = grids or {}
    choices = {c.name: _in_blocks(c, block_size)
               for c in (layers or plan_onnx_layers(spec, precision, block_size, symmetric, grids))}
    notes: list[str] = []
    techniques = [Technique("export", args=("onnx", "kv-cache"))]
    _check_choices(spec, choices)
    embed_choice = choices.get(spec.embed_name)
    emit_embedding, table = None, "the embedding table stays a float Gather"
    if embed_choice is not None and embed_choice.precision != "fp32":
        table_weight = embedding_blocks(spec.embed, embed_choice.precision, embed_choice.block_size,
                                        bool(embed_choice.symmetric))
        emit_embedding = lambda g, ids: emit_gather_block_quantized(g, ids, table_weight, "embed_tokens")  # noqa: E731
        techniques.append(weights_technique(embed_choice.precision, layer=embed_choice.name, block_size=embed_choice.block_size,
                                            symmetric=bool(embed_choice.symmetric), op_types=("GatherBlockQuantized",)))
        table = (f"the embedding table is its own {embed_choice.precision} GatherBlockQuantized table "
                 f"(g{embed_choice.block_size})")
    if spec.tied and choices["lm_head"].precision != "fp32":
        notes.append(f"tied embedding untied: lm_head is quantized as its own MatMulNBits weight, {table}")
    elif spec.tied:
        notes.append(f"tied embedding untied: lm_head is stored as its own transposed float weight, {table}")

    def emit(g: GraphWriter, x: str, lin: Linear) -> str:
        choice = choices[lin.name]
        if choice.precision == "fp32":
            return emit_float_linear(g, x, lin)
        level = _accuracy_level(choice.precision, accuracy_level)
        weight, how = _quantized_weight(lin, choice, grids.get(f"{lin.name}.weight"), "int8" if level == 4 else "float")
        if how not in techniques:
            techniques.append(how)
        y = emit_matmul_nbits(g, x, weight, lin.name, level)
        return y if lin.bias is None else g.op("Add", y, g.init(f"{lin.name}.bias", lin.bias))

    metadata = {"max_context": max_context, "num_layers": spec.num_layers, "num_heads": spec.num_heads,
                "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim, "vocab_size": spec.vocab_size,
                "hidden_size": spec.hidden_size, "family": spec.family, "precision": precision,
                "kv_layout": "past_key_values.{i}.key/value [batch, kv_heads, past, head_dim] -> present.{i}.*"}
    metadata["attention"] = attention
    model = build_decoder_graph(spec, max_context, emit, metadata, attention, emit_embedding)
    if attention == "gqa":
        techniques.append(Technique("attention", op_types=("GroupQueryAttention",)))
    notes += _width_notes(spec, choices)
    if precision == "8da4w":
        notes.append("8da4w: MatMulNBits int4 symmetric with accuracy_level 4: onnxruntime's CPU kernel quantizes "
                     "each activation block to int8 and multiplies in int8")
    if any(t.precision == "int8-weight" and ("compute", "int8") in t.settings for t in techniques):
        notes.append("8-bit layers run MatMulNBits accuracy_level 4 (activations rounded to int8 per block at run "
                     "time): onnxruntime 1.32's 8-bit float-compute path is ~100x slower")
    if precision == "int8-weight":
        notes.append("int8-weight: blocks rather than one scale per output channel: a row-wide block (1024 for "
                     "width 576) makes the int8 activation rounding coarse (+3.7 % perplexity on SmolLM2 vs g32)")
    out = Path(out)
    _save(model, out)
    write_genai_config(spec, out, max_context, getattr(module, "config", None))
    return LMExport(path=out, precision=precision, layers=list(choices.values()), techniques=techniques, notes=notes)


def plan_onnx_layers(spec: DecoderSpec, precision: str, block_size: int, symmetric: bool | None, grids: dict
                     ) -> list[LayerChoice]:
    """One choice per linear layer (head included) plus the embedding (kept float: a Gather reads it; a quantized
    table is asked for through compress.lm.layer_request)."""
    plan = [LayerChoice(spec.embed_name, "embedding", "fp32", None, None, "kept float: read by Gather")]
    for lin in spec.linears():
        plan.append(_default_choice(lin, precision, block_size, symmetric, grids.get(f"{lin.name}.weight")))
    return plan


def _default_choice(lin: Linear, precision: str, block_size: int, symmetric: bool | None, grid) -> LayerChoice:
    if precision == "fp32":
        return LayerChoice(lin.name, lin.kind, "fp32", None, None, "fp32 export")
    if grid is not None and grid.quant_type in GRID_BITS:
        held = _grid_precision(grid.quant_type, precision)
        if held:
            sym = grid.quant_type != "Q4_1"
            return LayerChoice(lin.name, lin.kind, held, grid.block_size, sym,
                               f"source {grid.quant_type} g{grid.block_size}: its own grid, values kept exactly")
    width = lin.weight.shape[1]
    sym = True if precision in ("8da4w", "int8-weight") else bool(symmetric)
    block = block_size
    reason = f"g{block_size}"
    if width % block_size:
        fitting = [b for b in BLOCK_SIZES if width % b == 0 and b < block_size]
        if fitting:
            block = fitting[-1]
            reason = f"width {width} is not a multiple of {block_size}: block {block}"
        else:
            reason = f"width {width} is not a multiple of {block_size}: last block zero-padded"
    return LayerChoice(lin.name, lin.kind, precision, block, sym, reason)


def _grid_precision(quant_type: str, precision: str) -> str | None:
    """The precision that holds a source grid exactly under the asked precision, or None."""
    if quant_type == "Q8_0":
        return "int8-weight" if precision in ("int8-weight", "int4-weight") else None
    if quant_type == "Q4_1":
        return "int4-weight" if precision == "int4-weight" else None
    return precision if precision in ("int4-weight", "8da4w") else None      # Q4_0


def _accuracy_level(precision: str, asked: int | None) -> int:
    if precision in ("8da4w", "int8-weight"):  # int8 compute: 8da4w by definition, 8-bit blocks for speed
        return 4
    return asked or 0


def _in_blocks(choice: LayerChoice, block_size: int) -> LayerChoice:
    """``choice`` as MatMulNBits stores it: a linear layer's int8 per output channel (block None: a layer the
    sensitivity repair promoted) goes in blocks of ``block_size``, a finer grid, said in its reason.

    Example:
        >>> _in_blocks(LayerChoice("lm_head", "head", "int8-weight", None, True, "kept higher"), 32).block_size
        32
    """
    if choice.kind == "embedding" or choice.precision == "fp32" or choice.block_size is not None:
        return choice
    return dataclasses.replace(choice, block_size=block_size,
                               reason=f"{choice.reason}; in blocks of {block_size} (MatMulNBits has no per-channel layout)")


def _check_choices(spec: DecoderSpec, choices: dict) -> None:
    for lin in spec.linears():
        if lin.name not in choices:
            raise UsageError(f"no layer choice for {lin.name}: give one per linear layer and the head")
        c = choices[lin.name]
        if c.precision not in ONNX_PRECISIONS:
            raise UsageError(f"{lin.name}: precision {c.precision!r} is not one of {', '.join(ONNX_PRECISIONS)}")
        if c.precision != "fp32" and (c.block_size is None or c.block_size < 16 or c.block_size & (c.block_size - 1)):
            raise UsageError(f"{lin.name}: block size {c.block_size} is not a power of two >= 16 (MatMulNBits)")
        if c.precision == "8da4w" and c.symmetric is False:
            raise UsageError(f"{lin.name}: 8da4w needs symmetric int4 weights (asymmetric 8da4w is refused)")
    embed = choices.get(spec.embed_name)
    if embed is not None and embed.precision not in ("fp32", *EMBEDDING_BITS):
        raise UsageError(f"{spec.embed_name}: embedding precision {embed.precision!r} is not one of fp32, "
                         f"{', '.join(EMBEDDING_BITS)}")
    if embed is not None and embed.precision != "fp32" and embed.block_size != embedding_block(spec.hidden_size,
                                                                                              embed.block_size or 16):
        raise UsageError(f"{spec.embed_name}: block {embed.block_size} does not divide the hidden width "
                         f"{spec.hidden_size} as GatherBlockQuantized needs (a power of two >= 16)")


def _quantized_weight(lin: Linear, choice: LayerChoice, grid, compute: str) -> tuple[NBitsWeight, Technique]:
    """``lin``'s weight as MatMulNBits blocks: the GGUF ``grid`` itself where it holds the choice's grid, else rounded
    here; the record says which (``compute``: int8 or float, MatMulNBits' accuracy level)."""
    bits = 8 if choice.precision == "int8-weight" else 4
    if grid is not None and grid.quant_type in GRID_BITS and GRID_BITS[grid.quant_type] == bits \
            and grid.block_size == choice.block_size and (choice.symmetric is not False) == (grid.quant_type != "Q4_1"):
        weight = from_grid(lin.weight, grid.quant_type, grid.block_size, np.asarray(grid.scales),
                           None if grid.mins is None else np.asarray(grid.mins))
        err = float(np.abs(weight.dequantize() - lin.weight).max())
        if err > 1e-3 * max(float(np.abs(lin.weight).max()), 1e-12):
            raise UsageError(f"{lin.name}: the {grid.quant_type} grid does not reproduce the model's weights "
                             f"(max error {err:.3g}); was the model loaded from this GGUF?")
        return weight, weights_technique(choice.precision, "grid", method=f"gguf-{grid.quant_type}",
                                         block_size=grid.block_size, symmetric=grid.quant_type != "Q4_1",
                                         op_types=("MatMulNBits",), settings=(("compute", compute),))
    sym = bool(choice.symmetric)
    weight = quantize_blocks(lin.weight, bits, choice.block_size, sym)
    return weight, weights_technique(choice.precision, block_size=choice.block_size, symmetric=sym,
                                     op_types=("MatMulNBits",), settings=(("compute", compute),))


def _width_notes(spec: DecoderSpec, choices: dict) -> list[str]:
    notes = []
    for lin in spec.linears():
        c = choices[lin.name]
        if c.precision != "fp32" and lin.weight.shape[1] % c.block_size:
            notes.append(f"{lin.name}: width {lin.weight.shape[1]} is not a multiple of block {c.block_size}: "
                         f"the last block is zero-padded (MatMulNBits reads only the real columns)")
        elif "not a multiple" in c.reason:
            notes.append(f"{lin.name}: {c.reason}")
    return notes


def _save(model: onnx.ModelProto, out: Path) -> None:
    """Write atomically (a temporary name, then rename); weights go to ``<name>.data`` beside it past ~1.8 GB."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    if model.ByteSize() > _EXTERNAL_DATA_BYTES:
        onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=out.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, tmp)
    os.replace(tmp, out)


def genai_folder(onnx_path: Path) -> Path:
    """The folder onnxruntime-genai opens for ``onnx_path`` (``og.Model(folder)``): ``<stem>.genai`` beside it, with
    the file's own ``genai_config.json`` and the file itself (a hard link: no second copy of the bytes). genai reads
    exactly one config per folder and refuses a filename outside it ("path traversal"), so each ONNX language model
    of a run directory gets its own folder instead of overwriting a shared config.

    Example:
        >>> genai_folder(Path("runs/smollm2/model.int4-weight.onnx"))
        PosixPath('runs/smollm2/model.int4-weight.genai')
    """
    return onnx_path.with_suffix(".genai")


def write_genai_config(spec: DecoderSpec, onnx_path: Path, max_context: int, config) -> Path:
    """``genai_config.json`` in :func:`genai_folder`, beside a hard link to the file (and its external data)."""
    def token(name: str):
        value = getattr(config, name, None)
        return value if value is not None else 0

    decoder = {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": onnx_path.name, "head_size": spec.head_dim, "hidden_size": spec.hidden_size,
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                   "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
        "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"},
        "num_attention_heads": spec.num_heads, "num_hidden_layers": spec.num_layers,
        "num_key_value_heads": spec.num_kv_heads}
    genai = {
        "model": {"bos_token_id": token("bos_token_id"), "context_length": max_context, "decoder": decoder,
                  "eos_token_id": token("eos_token_id"), "pad_token_id": token("pad_token_id") or token("eos_token_id"),
                  "type": _GENAI_TYPES.get(spec.family, spec.family), "vocab_size": spec.vocab_size},
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": max_context, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0}}
    path = genai_folder(onnx_path) / "genai_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for part in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
        if part.exists():
            _link(part, path.parent / part.name)
    path.write_text(json.dumps(genai, indent=2) + "\n")
    return path


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where the file system has no hard links)."""
    import shutil

    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class OnnxDecoder:
    """The Decoder protocol on onnxruntime for a file written by :func:`export_onnx_lm` (or any file with the same
    past/present layout): ``prefill`` runs all its tokens in ONE ``session.run`` and extends the cache, ``decode``
    runs one token, ``reset`` empties the cache. Batch 1.

    Example:
        >>> dec = OnnxDecoder("run/model.int4-weight.onnx", threads=2)   # doctest: +SKIP
        >>> dec.prefill([1, 2, 3]).shape                                # doctest: +SKIP
        (3, 49152)
    """

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no such ONNX file: {path} (check the path)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise UsageError(f"{path} is not an ONNX model onnxruntime can load ({str(exc).splitlines()[0][:200]})")
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        if not self.past_names or "input_ids" not in [i.name for i in self.session.get_inputs()]:
            raise UsageError(f"{path} has no input_ids/past_key_values inputs: not a KV-cache decoder "
                             "(export it with compress)")
        first = self.session.get_inputs()[[i.name for i in self.session.get_inputs()].index(self.past_names[0])]
        self._kv_shape = (1, int(first.shape[1]), 0, int(first.shape[3]))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._present = {o: p for o in self.output_names if o.startswith("present.")
                         for p in [o.replace("present.", "past_key_values.", 1)]}
        meta = self.session.get_modelmeta().custom_metadata_map
        self.vocab_size = int(meta.get("vocab_size") or self.session.get_outputs()[0].shape[-1])
        self.max_context = int(meta.get("max_context", 0)) or 2048
        self.reset()

    def reset(self) -> None:
        self._past = {name: np.zeros(self._kv_shape, np.float32) for name in self.past_names}
        self._length = 0

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Float32 logits ``(len(ids), vocab)`` from one run over all ``ids`` (continuing the cache)."""
        ids = np.asarray(ids, np.int64).reshape(1, -1)
        if ids.shape[1] == 0:
            raise UsageError("prefill needs at least one token")
        if self._length + ids.shape[1] > self.max_context:
            raise UsageError(f"{self._length + ids.shape[1]} tokens exceed this file's context of "
                             f"{self.max_context}; re-export with a larger max_context or shorten the prompt")
        total = self._length + ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                 "position_ids": np.arange(self._length, total, dtype=np.int64)[None, :], **self._past}
        outputs = dict(zip(self.output_names, self.session.run(None, feeds)))
        self._past = {self._present[o]: outputs[o] for o in self._present}
        self._length = total
        return outputs["logits"][0].astype(np.float32, copy=False)

    def decode(self, token: int) -> np.ndarray:
        """Float32 logits ``(vocab,)`` for the position after ``token``."""
        return self.prefill([int(token)])[0]
