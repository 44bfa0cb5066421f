"""The verification step of a decoder language model's file: measured in its runtime against the float reference
on held-out text (compress.lm.quality), timed in tokens (compress.lm.speed), repaired when int4 fails its gate.

The build path (compress.build, source DECODER) writes each file with its format's ``export_decoder`` and hands it
here. The entry is a report.json artifact like any other (size, sha256, ``verified_in``, ``techniques``), with
``metrics.perplexity`` (ratio and its bootstrap interval, top-1 and greedy agreement, a sample generation) in place
of dataset fidelity, ``layers`` (the per-layer choices) and ``tokens`` (TTFT, decode tokens/s, peak RSS, KV bytes).
The gate (compress.steps.gates) judges ``metrics.perplexity``.

Example:
    >>> reference = LMReference.of(lm, max_context=256)
    >>> entry = verify_decoder(run_dir, spec, export, reference)
    >>> entry.metrics.perplexity.perplexity_ratio, entry.verified_in
    (1.004, ['onnxruntime'])
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from compress.report.model import Artifact

ALGORITHMS = ("rtn", "gptq", "awq", "smoothquant")
REPAIRED = ("int4-weight", "8da4w")  # precisions whose failing files are repaired (int8 has room to spare)
CALIBRATION_WINDOWS, WINDOW_LENGTH = 8, 128


@dataclass
class LMReference:
    """The float reference every file is measured against: the loaded model in torch (for a GGUF source, the
    dequantized file)."""

    lm: object  # compress.lm.model.LanguageModel
    max_context: int
    labels: list[str] | None = None  # what was done with labels: a language model is judged on text, never on ``y``
    _memo: "RememberingDecoder | None" = None
    _prepared: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, lm, max_context: int) -> "LMReference":
        return cls(lm, max_context)

    def decoder(self) -> "RememberingDecoder":
        """The torch reference, remembering its logits: every file of the run is compared on the same text, so the
        reference runs once per run, not once per file."""
        if self._memo is None:
            from compress.lm.decoder import TorchDecoder

            self._memo = RememberingDecoder(TorchDecoder(self.lm.module, max_context=self.max_context))
        return self._memo

    def prepared(self, precision: str, algorithm: str, block_size: int, keep_int8: list | None = None,
                 progress: Callable[[str], None] = lambda message: None):
        """:func:`prepared` once per (precision, algorithm, block size) in a run: the ONNX and .pte 8da4w files share
        one GPTQ pass (the plan does not depend on the format). Plans with ``keep_int8`` are not remembered."""
        if keep_int8 is not None:
            return prepared(self.lm, precision, algorithm, block_size, keep_int8, progress)
        key = (precision, algorithm, block_size)
        if key not in self._prepared:
            self._prepared[key] = prepared(self.lm, precision, algorithm, block_size, None, progress)
        else:
            progress(f"{precision}: reusing this run's {algorithm.upper()} weights")
        return self._prepared[key]

    @property
    def what(self) -> str:
        if self.lm.source_quant:
            return (f"the dequantized {self.lm.source_quant} file ({self.lm.source.name}), run in float32 by torch: "
                    f"the source is already {self.lm.source_quant}, so figures are against its own grid")
        return f"{self.lm.source.name} in float32, run by torch"

    def report_dict(self) -> dict:
        params = sum(p.numel() for p in self.lm.module.parameters())
        return {"metrics": {"task": None}, "size_bytes": params * 4, "runtime": "torch",
                "language_model": {"reference": self.what, "source_format": self.lm.source_format,
                                   "source_quant": self.lm.source_quant, "parameters": params,
                                   "model_type": self.lm.module.config.model_type}}


class RememberingDecoder:
    """A deterministic Decoder whose logits are kept by token sequence: asked again for a sequence it has seen, it
    answers without running (the reference's figures are the same for every file of a run).

    Example:
        >>> memo = RememberingDecoder(TorchDecoder(lm.module))
        >>> first = memo.prefill([1, 2, 3]); again = memo.prefill([1, 2, 3])   # the second runs nothing
    """

    def __init__(self, inner):
        self.inner, self.vocab_size, self.max_context = inner, inner.vocab_size, inner.max_context
        self._seen: dict[tuple, object] = {}
        self._tokens: list[int] = []
        self._in_step = False  # whether the inner decoder's cache holds exactly self._tokens

    def reset(self) -> None:
        self._tokens, self._in_step = [], False

    def prefill(self, ids):
        self._tokens = [int(i) for i in ids]
        key = tuple(self._tokens)
        if key not in self._seen:
            self.inner.reset()
            self._seen[key] = self.inner.prefill(self._tokens)
            self._in_step = True
        else:
            self._in_step = False
        return self._seen[key]

    def decode(self, token: int):
        before = list(self._tokens)
        self._tokens.append(int(token))
        key = tuple(self._tokens)
        if key not in self._seen:
            if not self._in_step:  # catch the inner cache up with the tokens so far
                self.inner.reset()
                self.inner.prefill(before)
            self._seen[key] = self.inner.decode(int(token))
            self._in_step = True
        else:
            self._in_step = False
        return self._seen[key]


@dataclass
class LMSource:
    """What finish_report reads of a language-model source (``source_dict``) and of its data (``report_dataset``)."""

    lm: object

    def source_dict(self) -> dict:
        from compress.catalog import file_sha256

        path = Path(self.lm.source)
        files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
        digest = file_sha256(files[0]) if len(files) == 1 else _combined_sha(files)
        return {"path": str(path), "format": self.lm.source_format, "sha256": digest}

    def report_dataset(self) -> dict:
        return {"name": "compress.lm.text evaluation text", "split": "evaluation (never the calibration text)",
                "samples": CALIBRATION_WINDOWS}


def _combined_sha(files: list[Path]) -> str:
    import hashlib

    from compress.catalog import file_sha256

    return hashlib.sha256("".join(f"{p.name} {file_sha256(p)}\n" for p in files).encode()).hexdigest()


def calibration_windows(lm) -> list[list[int]]:
    """Token windows of the calibration text (never the evaluation text) for GPTQ, AWQ, SmoothQuant, sensitivity."""
    from compress.lm.text import calibration_text, token_windows

    return token_windows(lm.tokenizer, calibration_text(), WINDOW_LENGTH, CALIBRATION_WINDOWS)


def prepared(lm, precision: str, algorithm: str, block_size: int, keep_int8: list | None = None,
             progress: Callable[[str], None] = lambda message: None):
    """(module, layers, techniques): ``lm.module`` as ``algorithm`` leaves it for ``precision`` (a copy; rtn: the
    module itself and no plan, so the exporter plans); ``keep_int8``: a plan whose sensitive layers stay int8."""
    from compress.catalog import Technique

    if algorithm == "rtn" and keep_int8 is None:
        return lm.module, None, []
    module = copy.deepcopy(lm.module)
    layers = keep_int8 or decoder_plan(module, precision, block_size)
    windows = calibration_windows(lm)
    if algorithm == "gptq":
        from compress.lm.gptq import gptq_

        layers = gptq_(module, layers, windows, progress=progress)
    elif algorithm == "awq":
        from compress.lm.awq import awq_

        layers = awq_(module, layers, windows, progress=progress)
    elif algorithm == "smoothquant":
        from compress.lm.smoothquant import smoothquant_

        layers = smoothquant_(module, layers, windows, progress=progress)
    return module, layers, [Technique("algorithm", method=algorithm)] if algorithm != "rtn" else []


def decoder_plan(module, precision: str, block_size: int) -> list:
    """The per-layer plan an algorithm works on: every linear and the head at ``precision`` (int8-weight stays
    int8-weight; 8da4w's head 8da4w too, int4 symmetric: the one plan both ONNX and .pte write), the embedding table
    left to the exporter (a float Gather in ONNX)."""
    from compress.lm.schemes import plan_layers

    symmetric = True if precision == "8da4w" else None
    head = "int8-weight" if precision == "int8-weight" else "int4-weight"
    plan = [c for c in plan_layers(module, precision, block_size, symmetric, embeddings="fp32", head=head)
            if c.kind != "embedding"]
    if precision == "8da4w":  # the head's grid is 8da4w's (int4 symmetric); .pte builds no int4 weight-only layer
        plan = [dataclasses.replace(c, precision="8da4w") if c.kind == "head" and c.precision == "int4-weight" else c
                for c in plan]
    return plan


def layer_records(layers) -> list[dict]:
    """report.json ``layers``: one record per LayerChoice."""
    return [dataclasses.asdict(c) for c in layers]


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def quality_record(quality) -> dict:
    """``metrics.perplexity``: LMQuality's figures, non-finite numbers as null (a note names them)."""
    record = quality.to_dict()
    for key in ("perplexity", "reference_perplexity", "perplexity_ratio", "perplexity_increase"):
        if not math.isfinite(record[key]):
            record["notes"].append(f"{key} is not finite (the file's logits overflow or are NaN)")
            record[key] = None
    record["ratio_interval"] = [_finite(v) for v in record["ratio_interval"]]
    return record


def verify_decoder(run_dir: Path, filename: str, fmt: str, precision: str, export, reference: LMReference, *,
                   name: str, techniques=(), notes=(), max_increase: float | None = None, bench: dict | None = None,
                   progress: Callable[[str], None] = lambda message: None) -> Artifact:
    """The artifact entry (compress.report.model.Artifact) of the staged ``filename`` (written by ``export``, an LMExport): measured in its runtime
    against ``reference`` on held-out text; moved to ``failed/`` when it cannot load or generate; timed in tokens
    with ``bench`` (``{"threads": (1, 2)}``; None: not timed)."""
    from compress.catalog import artifact_sha256, artifact_size, get, technique_record
    from compress.lm.decoder import open_decoder
    from compress.report.model import Artifact
    from compress.lm.quality import evaluate_lm
    from compress.safety.io import disk_full_cause
    from compress.safety.rundir import fail, publish, staged

    run_dir = Path(run_dir)
    path = staged(run_dir, filename)
    lm = reference.lm
    entry = Artifact(name=name, path=filename, format=fmt, precision=export.precision,
                     techniques=[technique_record(t) for t in [*techniques, *export.techniques]],
                     size_bytes=artifact_size(path), sha256=artifact_sha256(path), verified_in=[],
                     metrics={"task": None, "degradation": None, "fidelity": None, "perplexity": None}, latency=[],
                     float_ops=[], notes=[*notes, *export.notes], layers=layer_records(export.layers))
    try:
        decoder = open_decoder(path)
        progress(f"{precision} {fmt}: perplexity and generation in {get(fmt).runtime}")
        quality = evaluate_lm(decoder, reference.decoder(), lm.tokenizer, precision, max_increase=max_increase,
                              eos_ids=lm.eos_ids, progress=lambda message: progress(f"{precision} {fmt}: {message}"))
    except Exception as exc:
        cause = disk_full_cause(exc, run_dir)
        if cause is not None:
            raise cause from exc
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        entry.path, entry.status, entry.failure = str(fail(run_dir, filename).relative_to(run_dir)), "failed", reason
        entry.notes = [*entry.notes, f"FAILED verification, kept in {entry.path} for debugging: {reason}"]
        return entry
    entry.metrics.perplexity = quality_record(quality)
    entry.verified_in = [get(fmt).runtime]
    final = publish(run_dir, filename)
    genai = staged(run_dir, filename).with_suffix(".genai")
    if genai.is_dir():  # onnxruntime-genai's folder for this file (one config per folder: one folder per file)
        import shutil

        shutil.rmtree(run_dir / genai.name, ignore_errors=True)
        genai.replace(run_dir / genai.name)
        entry.notes = [*entry.notes, f"onnxruntime-genai: og.Model('{genai.name}') runs {filename} (its genai_config.json)"]
    if bench is not None:
        entry.tokens = measure_tokens(final, bench, progress)
    return entry


def is_decoder_artifact(path) -> bool:
    """An exported decoder language model: a .onnx/.pte/.tflite file with the tokenizer.json and lm_meta.json that
    `compress quantize` writes beside it.

    Example:
        >>> is_decoder_artifact("runs/smollm2/model.int4-weight.onnx"), is_decoder_artifact("runs/mnist/model.int8.onnx")
        (True, False)
    """
    from compress.lm.decoder import OPENERS
    from compress.lm.model import LM_META

    path = Path(path)
    return path.suffix.lower() in OPENERS and (path.parent / LM_META).is_file() and (path.parent / "tokenizer.json").is_file()


def measure_tokens(path: Path, bench: dict, progress: Callable[[str], None] = lambda message: None) -> dict:
    """``tokens``: compress.lm.speed's figures (TTFT for a 128-token prompt, decode tokens/s and peak RSS per thread
    count, KV-cache bytes, roofline estimates) for the published file."""
    from compress.lm.speed import measure_speed

    progress(f"timing {path.name}: time to first token and decode tokens/s")
    speed = measure_speed(path, threads=tuple(bench.get("threads") or (1, 2))).to_dict()
    for key in ("ttft_s", "decode_tokens_per_s", "peak_rss_bytes"):
        speed[key] = {str(k): v for k, v in speed[key].items()}
    return speed


def perplexity_gate_failed(entry: Artifact, policy) -> bool:
    """Whether ``entry`` fails its perplexity gate under ``policy`` (gates on)."""
    from compress.steps.gates import perplexity_gate

    return entry.status == "failed" or not perplexity_gate(entry, policy).passed


def repair_decoder(attempt: Callable[[str, str, list | None], Artifact], entry: Artifact, precision: str, algorithm: str,
                   policy, lm, block_size: int, step: Callable[[str], None]) -> Artifact:
    """A failing int4/8da4w file repaired: GPTQ, then AWQ (each unless it was the algorithm asked for), then the most
    sensitive layers kept at int8 (compress.lm.sensitivity); the first that passes its perplexity gate is kept, every
    attempt recorded in ``entry.repair``. ``attempt(label, algorithm, layers)`` writes and verifies one file."""
    from compress.steps.gates import perplexity_gate

    def record(label: str, made: Artifact) -> dict:
        gate = perplexity_gate(made, policy) if made.status != "failed" else None
        judged = ({"gate": gate.name, "value": gate.value, "limit": gate.limit, "passed": gate.passed, "reason": gate.reason} if gate
                  else {"gate": "max_perplexity_increase", "value": None, "limit": None, "passed": False,
                        "reason": f"failed verification: {made.failure}"})
        return {"step": label, "techniques": made.techniques, "size_bytes": made.size_bytes, "passed": judged["passed"],
                "gates": [judged]}

    steps = [record("as configured", entry)]
    tries = [(f"{name.upper()}", name, None) for name in ("gptq", "awq") if name != algorithm]
    kept = None
    for label, name, _ in tries:
        step(f"{precision}: repair: {label}")
        made = attempt(label, name, None)
        steps.append(record(label, made))
        if steps[-1]["passed"]:
            kept = made
            break
    if kept is None:
        from compress.lm.sensitivity import mix_by_sensitivity

        step(f"{precision}: repair: ranking layers by sensitivity")
        layers = decoder_plan(lm.module, precision, block_size)
        mixed = mix_by_sensitivity(copy.deepcopy(lm.module), layers, calibration_windows(lm), progress=step)
        label = "most sensitive layers kept at int8"
        made = attempt(label, "rtn", mixed)
        steps.append(record(label, made))
        if steps[-1]["passed"]:
            kept = made
    result = kept or attempt("as configured (nothing passed)", algorithm, None)
    result.repair = {"steps": steps, "kept": next((s["step"] for s in steps[1:] if s["passed"]), None),
                     "summary": (f"repaired by {next(s['step'] for s in steps[1:] if s['passed'])}" if kept else
                                 "nothing passed its perplexity gate: the file as configured stays")}
    return result


def lm_pick(candidates: list[Artifact]) -> dict | None:
    """The language-model artifact to ship: the fastest decode at 1 thread among those timed, else the smallest."""
    if not candidates:
        return None
    timed = [a for a in candidates if a.tokens and a.tokens.decode_tokens_per_s.get("1")]
    if timed:
        best = max(timed, key=lambda a: a.tokens.decode_tokens_per_s["1"])
        why = f"fastest decode at 1 thread ({best.tokens.decode_tokens_per_s['1']:.1f} tokens/s)"
    else:
        best = min(candidates, key=lambda a: a.size_bytes)
        why = f"smallest ({best.size_bytes:,} bytes; not timed)"
    ppl = best.metrics.perplexity
    return {"artifact": best.name, "why": f"{why} of the files that passed their perplexity gate, perplexity ratio "
                                          f"{ppl.perplexity_ratio:.4f} vs the float reference"}
