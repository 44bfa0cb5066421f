"""The ``quantize_lm`` recipe stage: `compress quantize` of a decoder language model (a model directory or a .gguf
file) as a typed config, and the fields `compress tune` searches on one (precision, algorithm, block size, how many
of the most sensitive layers stay at int8 or in float, the embedding table's precision).

Example:
    >>> config = QuantizeLMConfig(formats=["onnx"], precisions=["int4-weight"], keep_int8=["lm_head"])
    >>> config.to_config().layer_request().keep_int8
    ('lm_head',)
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compress.errors import UsageError
from compress.limits import MAX_LAYERS, MAX_THREADS
from compress.passes.registry import searchable
from compress.steps.gates import max_degradation_field

LM_ALGORITHMS = ["rtn", "gptq", "awq", "smoothquant"]
LM_BLOCK_SIZES = [16, 32, 64, 128, 256]
LM_PRECISION_CHOICES = ["fp32", "int8-weight", "int4-weight", "8da4w"]
EMBEDDING_CHOICES = ["fp32", "int8-weight", "int4-weight"]
_FIELDS = {"--format": "formats", "--precision": "precisions", "--block-size": "block_size", "--algorithm": "algorithm",
           "--max-context": "max_context", "--embeddings": "embeddings", "--format onnx,pte": "formats: [onnx, pte]"}


class QuantizeLMConfig(BaseModel):
    """A decoder LM's files: formats × precisions, each verified on held-out text in its runtime (the same settings as
    `compress quantize MODEL_DIR|FILE.gguf`)."""

    model_config = ConfigDict(extra="forbid")

    formats: list[str] = Field(default_factory=lambda: ["onnx", "pte"], description="onnx, pte, tflite (what writes decoders).")
    precisions: list[str] = Field(
        default_factory=lambda: ["int8-weight", "int4-weight", "8da4w"], description=f"Any of {', '.join(LM_PRECISION_CHOICES)}.",
        json_schema_extra=searchable("lm_precisions", ["int4-weight", "8da4w"], options=LM_PRECISION_CHOICES,
                                     description="Language models: the precision each trial writes."))
    algorithm: Literal["rtn", "gptq", "awq", "smoothquant"] = Field(
        "rtn", description="How int4 weights are rounded (smoothquant: 8da4w only).",
        json_schema_extra=searchable("lm_algorithms", ["rtn", "gptq"], options=LM_ALGORITHMS[:3],
                                     description="Language models: rounding algorithms tried."))
    block_size: int = Field(32, description="Weights per int4 scale (16, 32, 64, 128, 256).",
                            json_schema_extra=searchable("lm_block_sizes", [32, 64], options=LM_BLOCK_SIZES,
                                                         description="Language models: int4 block sizes tried."))
    keep_int8: list[str] = Field(default_factory=list, description=(
        "Layer name patterns (fnmatch, e.g. model.layers.*.mlp.down_proj, lm_head) kept at int8 (float in a .pte)."),
        json_schema_extra=searchable("lm_keep_int8_max", 4, kind="max", le=MAX_LAYERS, description=(
            "Language models: up to this many of the most sensitive layers stay at int8.")))
    keep_float: list[str] = Field(default_factory=list, description="Layer name patterns kept in float.",
                                  json_schema_extra=searchable("lm_keep_float_max", 0, kind="max", le=MAX_LAYERS, description=(
                                      "Language models: up to this many of the most sensitive layers stay in float.")))
    embeddings: Literal["fp32", "int8-weight", "int4-weight"] | None = Field(
        None, description="The token table's precision (ONNX GatherBlockQuantized; default: float).",
        json_schema_extra=searchable("lm_embeddings", ["fp32"], options=EMBEDDING_CHOICES,
                                     description="Language models: embedding-table precisions tried (onnx)."))
    max_context: int = Field(512, ge=2, le=32768, description="Positions the exported KV cache holds.")
    max_degradation: float | None = max_degradation_field()
    auto_fallback: bool = Field(True, description="Repair a failing int4/8da4w file (GPTQ, AWQ, sensitive layers at int8).")
    bench: bool = Field(True, description="Time each file in tokens (TTFT, decode tokens/s, peak RSS).")
    threads: list[int] = Field(default_factory=lambda: [1, 2], min_length=1,
                               description=f"Thread counts decode is timed at (each at most {MAX_THREADS}).")

    @model_validator(mode="after")
    def _a_valid_lm_config(self) -> "QuantizeLMConfig":
        try:
            self.to_config()
        except UsageError as exc:
            message = str(exc)
            for option in sorted(_FIELDS, key=len, reverse=True):  # the CLI's wording, in the recipe's field names
                message = message.replace(option, _FIELDS[option])
            raise ValueError(message) from None
        if any(not 1 <= t <= MAX_THREADS for t in self.threads):
            raise ValueError(f"threads {self.threads}: each between 1 and {MAX_THREADS}")
        return self

    def to_config(self):
        """The compress.passes.quantize_lm.LMQuantizeConfig these settings mean."""
        from compress.passes.quantize_lm import LMQuantizeConfig

        return LMQuantizeConfig(formats=list(self.formats), precisions=list(self.precisions), block_size=self.block_size,
                                algorithm=self.algorithm, max_context=self.max_context,
                                max_degradation=self.max_degradation, auto_fallback=self.auto_fallback, bench=self.bench,
                                threads=tuple(self.threads), keep_int8=list(self.keep_int8),
                                keep_float=list(self.keep_float), embeddings=self.embeddings)


def outside_a_language_model(context, config: QuantizeLMConfig) -> dict:
    """The registered handler: a recipe whose model is not a language model never reaches it (the recipe schema
    refuses it); called anyway, it says what to do."""
    raise UsageError("quantize_lm runs on a decoder language model (model.source: a directory with config.json or a "
                     ".gguf file); use a quantize stage for this model")
