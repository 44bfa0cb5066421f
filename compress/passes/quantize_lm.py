"""`compress quantize` for a decoder language model: each format × precision written with its KV cache by the
format's ``export_decoder``, verified on held-out text in its runtime, gated on perplexity, repaired, timed in
tokens, and reported by the same build path (compress.build, source DECODER) and report code as any model.

Example:
    >>> from compress.lm.model import load_lm
    >>> config = LMQuantizeConfig(formats=["onnx"], precisions=["int4-weight"])
    >>> result = quantize_lm(load_lm("SmolLM2-135M-Instruct.Q4_1.gguf"), config, "runs/smollm2")
    >>> result.report["artifacts"][0]["metrics"]["perplexity"]["verdict"]
    'pass'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from compress.errors import UsageError

DEFAULT_FORMATS = ("onnx", "pte")
# int4-weight is ONNX's (MatMulNBits); .pte makes fp32 and 8da4w, so the default asks each format for what it runs
DEFAULT_PRECISIONS = ("int8-weight", "int4-weight", "8da4w")
BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass
class LMQuantizeConfig:
    """What `compress quantize` makes of a decoder LM. ``max_degradation``: the relative perplexity increase allowed
    (None: each precision's default gate, compress.lm.quality.DEFAULT_GATES)."""

    formats: list[str] = field(default_factory=lambda: list(DEFAULT_FORMATS))
    precisions: list[str] = field(default_factory=lambda: list(DEFAULT_PRECISIONS))
    block_size: int = 32
    algorithm: str = "rtn"
    max_context: int = 512
    max_degradation: float | None = None
    auto_fallback: bool = True
    bench: bool = True
    threads: tuple[int, ...] = (1, 2)
    keep_int8: list[str] = field(default_factory=list)   # layer name patterns kept at int8 (compress.lm.layer_request)
    keep_float: list[str] = field(default_factory=list)  # layer name patterns kept in float
    embeddings: str | None = None                         # the token table: fp32, int8-weight, int4-weight

    def layer_request(self):
        """The per-layer request these settings make (compress.lm.layer_request.LayerRequest)."""
        from compress.lm.layer_request import LayerRequest

        return LayerRequest(tuple(self.keep_int8), tuple(self.keep_float), self.embeddings)

    def __post_init__(self) -> None:
        from compress import catalog
        from compress.lm.schemes import LM_PRECISIONS
        from compress.steps.lm_verify import ALGORITHMS

        for name in self.formats:
            if name not in [f.name for f in catalog.formats()]:
                raise UsageError(f"--format: unknown format {name!r}; a language model goes to {', '.join(catalog.decoder_formats())}")
        for precision in self.precisions:
            if precision not in LM_PRECISIONS:
                raise UsageError(f"--precision: {precision!r} is not a language-model precision; choose from "
                                 f"{', '.join(LM_PRECISIONS)}")
        if self.block_size not in BLOCK_SIZES:
            raise UsageError(f"--block-size: give one of {', '.join(map(str, BLOCK_SIZES))} (got {self.block_size})")
        if self.algorithm not in ALGORITHMS:
            raise UsageError(f"--algorithm: give one of {', '.join(ALGORITHMS)} (got {self.algorithm!r})")
        self.layer_request()  # an unknown embedding precision is refused here
        if self.embeddings not in (None, "fp32") and set(self.formats) - {"onnx", "pte"}:
            raise UsageError(f"--embeddings {self.embeddings}: quantized embedding tables are written to ONNX "
                             "(GatherBlockQuantized) and .pte (quantized embedding ops) only: use --format onnx,pte, "
                             "or drop --embeddings")
        if self.algorithm == "smoothquant" and set(self.precisions) - {"8da4w"}:
            raise UsageError("--algorithm smoothquant smooths activations for int8 activation quantization: use it "
                             "with --precision 8da4w only")


@dataclass
class LMQuantizeResult:
    run_dir: Path
    report: dict
    not_made: list[dict] = field(default_factory=list)


def lm_specs(config: LMQuantizeConfig, grids) -> tuple[list, list[dict]]:
    """(ArtifactSpecs, not made): per format, each precision its ``export_decoder`` takes; the others with why."""
    from compress import catalog
    from compress.build import DECODER, ArtifactSpec, DecoderOptions

    options = DecoderOptions(config.max_context, config.block_size, config.algorithm, grids, config.layer_request())
    specs, not_made = [], []
    for fmt in map(catalog.get, config.formats):
        for precision in config.precisions:
            if fmt.export_decoder is None or precision not in fmt.decoder_precisions:
                why = (fmt.no_decoder or f"{fmt.name} has no decoder language-model exporter" if fmt.export_decoder is None
                       else f"{fmt.name} writes {', '.join(fmt.decoder_precisions)} for language models")
                not_made.append({"format": fmt.name, "precision": precision, "reason": why})
                continue
            specs.append(ArtifactSpec(fmt.name, precision, f"{precision}-{fmt.name}", fmt.filename(precision), DECODER,
                                      phase=f"{precision} {fmt.name}: export with KV cache and verify", decoder=options))
    if not specs:
        raise UsageError("no format makes the precisions asked for: " + "; ".join(
            f"{m['format']} {m['precision']}: {m['reason']}" for m in not_made))
    return specs, not_made


def quantize_lm(lm, config: LMQuantizeConfig, out_dir: str | Path, step: Callable[[str], None] | None = None,
                policy=None, extra: dict | None = None) -> LMQuantizeResult:
    """Build, verify, gate, repair and time every file of ``lm`` (a compress.lm.model.LanguageModel) into
    ``out_dir`` with report.json/md/html; tokenizer.json and lm_meta.json beside them for `compress generate`.
    ``extra``: more report fields (a recipe run's ``command``, ``recipe``, ``stages``)."""
    from compress.build import BuildContext, Refusals, build
    from compress.lm.model import save_tokenizer_files
    from compress.steps.gates import GatePolicy
    from compress.steps.lm_verify import LMReference, LMSource
    from compress.steps.phases import PhaseClock
    from compress.steps.pipeline import finish_report

    clock = PhaseClock()
    step = clock.wrap(step)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    grids = None
    if lm.source_format == "gguf":
        from compress.lm.gguf_reader import gguf_grids

        step("reading the GGUF grids")
        grids = gguf_grids(lm.source)
        if getattr(lm.module.config, "tie_word_embeddings", False) and "model.embed_tokens.weight" in grids:
            grids.setdefault("lm_head.weight", grids["model.embed_tokens.weight"])  # the tied head is the table's grid
    specs, not_made = lm_specs(config, grids)
    request = config.layer_request()
    if request.asks():  # a pattern that matches no layer is refused before anything is written
        for spec in {s.format: s for s in specs}.values():
            request.plan(lm.module, spec.format, spec.precision, config.block_size, grids)
    save_tokenizer_files(lm, run_dir)
    policy = policy or GatePolicy(max_degradation=config.max_degradation)
    reference = LMReference.of(lm, config.max_context)
    refusals = Refusals(list(dict.fromkeys(s.format for s in specs)), list(dict.fromkeys(s.precision for s in specs)), run_dir)
    bench = {"threads": config.threads} if config.bench else None
    context = BuildContext(run_dir, None, None, config, reference, policy, repair=config.auto_fallback, bench=bench,
                           refusals=refusals, step=step, clock=clock)
    built = build(lm, specs, context)
    notes = [f"reference: {reference.what}"]
    notes += [f"{m['format']} {m['precision']} not made: {m['reason']}" for m in not_made]
    extra = {"command": "quantize", "language_model": True, "not_made": not_made, "notes": notes,
             "config": {**config.__dict__, "threads": list(config.threads)}, "timings": clock.record(), **(extra or {})}
    report = finish_report(run_dir, LMSource(lm), LMSource(lm), reference, built.artifacts, policy, extra,
                           refused=refusals.records(built.artifacts))
    return LMQuantizeResult(run_dir, report, not_made)
