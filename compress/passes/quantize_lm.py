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

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from compress.errors import UsageError

# The defaults make what passes its gate by construction, in minutes (bench/results/lm_defaults.json, SmolLM2-135M on
# 2 cores: the default run 75 s CPU; int8-weight +1.3 %, int4-weight grid-aware from its Q4_1 GGUF +0.2 %, both in
# onnxruntime). Opt-in (--format pte, --precision 8da4w), measured in the same file: 8da4w's symmetric int4 fails
# the 15 % gate rounded (+26 %, bench/results/lm_algorithms.json) and with GPTQ too (+19 % onnxruntime, +70 %
# ExecuTorch; then AWQ and sensitivity repair, many minutes more); ExecuTorch's lowering of the full model took
# 424 s CPU (25 min wall under load) of the .pte run's 564 s: torch.export/ExecuTorch re-trace every node with fake
# tensors once per pass (profiled on a 2-layer model: 45 % XNNPACK preprocess passes, 43 % edge decompositions),
# where ONNX exports in seconds.
DEFAULT_FORMATS = ("onnx",)
DEFAULT_PRECISIONS = ("int8-weight", "int4-weight")
OPT_IN = {"pte": "its ExecuTorch lowering of a full model takes 7+ CPU minutes (--format onnx,pte)",
          "8da4w": "symmetric int4 with int8 activations needs GPTQ and then repair (--precision 8da4w)"}
BLOCK_SIZES = (16, 32, 64, 128, 256)
# The algorithm each precision gets when --algorithm is not given, from bench/results/lm_algorithms.json (SmolLM2-135M,
# its dequantized Q4_1 as reference) and bench/results/lm_defaults.json: int8 per channel +0.2 % and int4 asymmetric g32
# +0.0 % (grid-aware from a GGUF source, +0.4 % rounded) pass by rounding to nearest; 8da4w's symmetric int4 weights
# are +24 % rounded (+26 % with int8 activations) against a 15 % gate, +7.4 % with GPTQ (151 s; AWQ +8.9 % in 341 s,
# AWQ+GPTQ +4.9 % in 525 s), so 8da4w starts with GPTQ instead of writing a file bound to fail and be repaired.
DEFAULT_ALGORITHMS = {"int8-weight": "rtn", "int4-weight": "rtn", "8da4w": "gptq", "fp32": "rtn"}
_COUNTER = re.compile(r"\s*\b\d+/\d+\b.*$")  # "GPTQ: decoder layer 3/30 (7 linears)" is timed as "GPTQ: decoder layer"


@dataclass
class LMQuantizeConfig:
    """What `compress quantize` makes of a decoder LM. ``max_degradation``: the relative perplexity increase allowed
    (None: each precision's default gate, compress.lm.quality.DEFAULT_GATES); ``algorithm`` None: each precision's
    DEFAULT_ALGORITHMS."""

    formats: list[str] = field(default_factory=lambda: list(DEFAULT_FORMATS))
    precisions: list[str] = field(default_factory=lambda: list(DEFAULT_PRECISIONS))
    block_size: int = 32
    algorithm: str | None = None  # None: each precision's DEFAULT_ALGORITHMS
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
        if self.algorithm is not None and self.algorithm not in ALGORITHMS:
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


def algorithm_for(config: LMQuantizeConfig, precision: str) -> str:
    """The algorithm asked for, else the precision's measured default.

    Example:
        >>> algorithm_for(LMQuantizeConfig(), "8da4w"), algorithm_for(LMQuantizeConfig(algorithm="awq"), "8da4w")
        ('gptq', 'awq')
    """
    return config.algorithm or DEFAULT_ALGORITHMS.get(precision, "rtn")


def phase_clock_step(clock, step: Callable[[str], None] | None) -> Callable[[str], None]:
    """``step`` timed by ``clock`` with counted messages ("window 3/8") in one phase, so report.json ``timings``
    keeps one row per kind of work while the progress line still moves."""
    def timed(message: str) -> None:
        clock.begin(_COUNTER.sub("", message))
        if step is not None:
            step(message)

    return timed


def lm_specs(config: LMQuantizeConfig, grids) -> tuple[list, list[dict]]:
    """(ArtifactSpecs, not made): per format, each precision its ``export_decoder`` takes; the others with why."""
    from compress import catalog
    from compress.build import DECODER, ArtifactSpec, DecoderOptions

    specs, not_made = [], []
    for fmt in map(catalog.get, config.formats):
        for precision in config.precisions:
            if fmt.export_decoder is None or precision not in fmt.decoder_precisions:
                why = (fmt.no_decoder or f"{fmt.name} has no decoder language-model exporter" if fmt.export_decoder is None
                       else f"{fmt.name} writes {', '.join(fmt.decoder_precisions)} for language models")
                not_made.append({"format": fmt.name, "precision": precision, "reason": why})
                continue
            options = DecoderOptions(config.max_context, config.block_size, algorithm_for(config, precision), grids,
                                     config.layer_request())
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
    step = phase_clock_step(clock, step)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    grids = None
    if lm.source_format == "gguf":
        from compress.lm.gguf_reader import lm_grids

        step("reading the GGUF grids")
        grids = lm_grids(lm)
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
    notes += [f"{name} not made by default: {why}" for name, why in OPT_IN.items()
              if name not in config.formats and name not in config.precisions]
    notes += [f"{m['format']} {m['precision']} not made: {m['reason']}" for m in not_made]
    extra = {"command": "quantize", "language_model": True, "not_made": not_made, "notes": notes,
             "config": {**config.__dict__, "threads": list(config.threads),
                        "algorithms": {p: algorithm_for(config, p) for p in config.precisions}},
             "timings": clock.record(), **(extra or {})}
    report = finish_report(run_dir, LMSource(lm), LMSource(lm), reference, built.artifacts, policy, extra,
                           refused=refusals.records(built.artifacts))
    from compress.report.manifest import write_manifest

    write_manifest(run_dir, report)
    return LMQuantizeResult(run_dir, report, not_made)
