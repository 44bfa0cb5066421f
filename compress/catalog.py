"""The catalog: every name compress knows, as typed records — formats (suffixes, runtimes), precisions, calibration
methods and runtimes — in one module that imports nothing from compress or third parties, so any module may read it.

Behaviour registers into it. Each backend (compress/backends/<format>/adapter.py) registers an ``ArtifactFormat`` that
carries its exporter, its quantizer per precision (a format's precisions are derived from these), pre-flight and
runtime; a calibration method registers one implementation per calibration backend (the built-in ones in
compress.backends.calibration) and is refused where one is missing; a runtime registers its runner class by name.
The built-in backends register on the first lookup (``_builtins`` imports ``compress.backends`` by name).

A precision says how weights and activations are stored; a format implements it by registering a quantizer for it
(``ArtifactFormat.quantizers``: the built-in formats in their own modules, a plugin with ``register_precision(...,
quantizers={format: quantize})``), so ``precision.formats`` is derived, never listed. An artifact may be several
files (``ArtifactFormat.files``): its size and sha256 cover all of them.

Example:
    >>> PRECISIONS["int4-weight"].block_size, PRECISIONS["int4-weight"].weight_only
    (32, True)
    >>> quantized()
    ('int8', 'int8-dynamic', 'fp16', 'int8-weight', 'int4-weight', '8da4w')
    >>> format_of("runs/x/model.int8.tflite").name, runtime_of("m.onnx"), get("onnx").filename("int8")
    ('tflite', 'onnxruntime', 'model.int8.onnx')
"""
from __future__ import annotations

import importlib
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

usage_error: type[Exception] = ValueError  # compress.errors puts its UsageError (exit 2) here when it loads
_LOADED: list[bool] = []


def _builtins() -> None:
    """Register the built-in backends (formats, calibration implementations, runtimes) once, before a lookup."""
    if not _LOADED:
        _LOADED.append(True)
        try:
            importlib.import_module("compress.backends")
        except BaseException:
            _LOADED.clear()
            raise


Activations = Literal["float", "static", "dynamic", "mixed"]


@dataclass(frozen=True)
class Precision:
    """``weight_bits``: bits per stored weight; ``activations``: float, static (calibrated ranges), dynamic (ranges
    measured on every call) or mixed (a result: several schemes in one file). ``block_size``/``symmetric``: the
    weight-only block quantization knobs (ONNX MatMulNBits; TFLite's ai-edge-quantizer quantizes per channel).
    ``tunable``: a candidate precision of `compress tune`'s search (its trials draw the calibration knobs only for a
    precision with int8 compute)."""

    name: str
    summary: str
    weight_bits: int
    activations: Activations
    block_size: int | None = None
    symmetric: bool | None = None
    selectable: bool = True          # False: a result only ("mixed"), never asked for
    tunable: bool = False

    @property
    def formats(self) -> tuple[str, ...]:
        """The registered formats that implement this precision."""
        return tuple(f.name for f in formats() if self.name in f.precisions or self.name == "fp32" and f.export_fp32)

    @property
    def weight_only(self) -> bool:
        return self.activations == "float" and self.weight_bits <= 8

    @property
    def float_only(self) -> bool:
        """Float weights and activations: a plain export or a cast (no calibration, no integer kernels)."""
        return self.activations == "float" and self.weight_bits >= 16

    @property
    def int8_compute(self) -> bool:
        """Runs integer kernels (its speed depends on the CPU's int8 support)."""
        return self.activations in ("static", "dynamic", "mixed")

    @property
    def calibrated(self) -> bool:
        return self.activations == "static"


PRECISIONS: dict[str, Precision] = {}


def register_precision(precision: Precision, quantizers: dict[str, Callable] | None = None) -> Precision:
    """Add ``precision`` to the registry, with ``quantizers``: format name -> ``quantize(job)`` that makes it there
    (a format lists only the precisions it has a quantizer for).

    Example:
        >>> register_precision(Precision("int4-weight-sym", "4-bit symmetric weights", 4, "float", block_size=64,
        ...                              symmetric=True), {"onnx": get("onnx").quantizers["int4-weight"]}).formats
        ('onnx',)
    """
    PRECISIONS[precision.name] = precision
    if quantizers:
        for fmt, quantize in quantizers.items():
            add_quantizer(fmt, precision.name, quantize)
    return precision


def unregister_precision(name: str) -> None:
    """Remove a registered precision and every format's quantizer for it (a plugin's tests clean up with it)."""
    for fmt in list(FORMATS):
        remove_quantizer(fmt, name)
    PRECISIONS.pop(name, None)


for _precision in (
    Precision("fp32", "float32 everywhere: the plain export", 32, "float"),
    Precision("int8", "static int8: int8 weights, activations calibrated on train+val samples", 8, "static", tunable=True),
    Precision("int8-dynamic", "int8 weights, activation ranges measured on every call", 8, "dynamic", tunable=True),
    Precision("fp16", "float16 weights (and compute where the runtime has fp16 kernels)", 16, "float"),
    Precision("int8-weight", "8-bit weights dequantized before float compute", 8, "float", block_size=32, symmetric=False),
    Precision("int4-weight", "4-bit weights dequantized before float compute", 4, "float", block_size=32, symmetric=False),
    Precision("8da4w", "int4 symmetric grouped weights, int8 activations quantized on every call (decoder language "
              "models: ExecuTorch XNNPACK, onnxruntime MatMulNBits)", 4, "dynamic", block_size=32, symmetric=True),
    Precision("mixed", "several schemes in one file (layers kept float, or static next to dynamic)", 8, "mixed",
              selectable=False),
):
    register_precision(_precision)


def names(where=lambda p: True) -> tuple[str, ...]:
    """Registered precision names, in registry order, that satisfy ``where``."""
    return tuple(p.name for p in PRECISIONS.values() if where(p))


def quantized() -> tuple[str, ...]:
    """What `compress quantize --precision` takes."""
    return names(lambda p: p.selectable and p.name != "fp32")


def exported() -> tuple[str, ...]:
    """What an ``export`` stage writes: float files without quantization (fp32, fp16)."""
    return names(lambda p: p.selectable and p.float_only)


def tunable() -> tuple[str, ...]:
    """What `compress tune` may search over: the precisions that declare themselves ``tunable`` (built in: int8 and
    int8-dynamic)."""
    return names(lambda p: p.selectable and p.tunable)


def check_precisions(value: list[str], choices) -> list[str]:
    """``value`` when every name is one of ``choices()`` (and there is one); a ValueError naming them otherwise."""
    unknown = [p for p in value if p not in choices()]
    if unknown:
        raise ValueError(f"unknown precision {unknown[0]!r}; choose from {', '.join(choices())}")
    if not value:
        raise ValueError("give at least one precision")
    return value

@dataclass
class QuantizeJob:
    """One file to write: ``handle`` quantized to ``precision`` at ``out``.

    ``fp32``: the format's fp32 file when the format quantizes from it (``quantizes_fp32_file``), else None.
    ``calibration``: the calibration method's name; ``calib_data``: the samples it calibrates on (None: random).
    ``output_kinds``: each output's kind from the run's reference (compress.data.outputs), for choices that compare files
    by fidelity; None where unknown. Every exporter and quantizer takes one job (``export_pte(job)``,
    ``quantize_onnx(job)``), so a setting walks from the CLI to the backend without being listed again.

    Example:
        >>> job = QuantizeJob(handle, "int8", Path("model.int8.tflite"), calib_data=splits.calibration(256))
        >>> export_tflite(job).precision
        'int8'
    """

    handle: Any
    precision: str
    out: Path
    fp32: Path | None = None
    calib_data: Any = None
    calibration: str = "minmax"
    per_channel: bool = True
    exclude: list[str] = field(default_factory=list)
    seed: int = 0
    dynamic_op_types: list[str] = field(default_factory=list)
    output_kinds: list[str] | None = None


@dataclass(frozen=True)
class Technique:
    """One technique applied to a model or file, built where it happens; ``label`` and ``as_dict()`` (the report.json
    record) are derived from the fields, never parsed back.

    ``kind`` (export, ptq, wq, cast, keep-float, prune, qat, distill, train, ...), ``precision`` with its ``scheme``
    (static, dynamic, weight-only) or ``variant``, ``calibration``, ``per_channel``, ``reduce_range``, ``block_size``,
    ``symmetric``, ``op_types``, ``layer``, ``method``, ``sparsity``, ``scope``, ``value``, ``settings`` (key=value
    pairs, in order) and ``args`` (further words). ``written``: how the label spells the precision where it is not
    ``{precision}-{scheme}`` (``int8-qdq``); it stays out of the record. ``Technique.named(label)`` wraps a plain
    label (kind and words) for callers that have no fields to give.

    Example:
        >>> Technique("ptq", precision="int8", scheme="static", calibration="minmax", per_channel=True).label
        'ptq:int8-static:minmax:per-channel'
        >>> Technique("prune", method="l1-structured", sparsity=0.5, scope="layer", settings=(("finetune", 2),)).as_dict()
        {'kind': 'prune', 'method': 'l1-structured', 'sparsity': 0.5, 'scope': 'layer', 'finetune': 2, 'label': 'prune:l1-structured:0.5:layer:finetune=2'}
    """

    kind: str
    precision: str | None = None
    scheme: str | None = None
    variant: str | None = None
    calibration: str | None = None
    per_channel: bool | None = None
    reduce_range: bool = False
    block_size: int | None = None
    symmetric: bool | None = None
    op_types: tuple[str, ...] = ()
    layer: str | None = None
    method: str | None = None
    sparsity: float | None = None
    scope: str | None = None
    value: float | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    args: tuple[str, ...] = ()
    written: str | None = None

    @classmethod
    def named(cls, label: str) -> "Technique":
        """A record for a plain label: its kind and the words after it (``export:onnx:kv-cache``)."""
        kind, *words = label.split(":")
        return cls(kind, args=tuple(words))

    @property
    def label(self) -> str:
        return ":".join([self.kind, *(text for text, _ in self._parts())])

    def as_dict(self) -> dict:
        record: dict = {"kind": self.kind}
        for _, fields in self._parts():
            for key, value in fields.items():
                record[key] = [*record[key], *value] if key == "args" and key in record else value
        return {**record, "label": self.label}

    def _parts(self) -> list[tuple[str, dict]]:
        """Each word of the label with the record fields it stands for, in label order."""
        parts: list[tuple[str, dict]] = []
        granularity = ([("per-channel" if self.per_channel else "per-tensor", {"per_channel": self.per_channel})]
                       if self.per_channel is not None else [])
        if self.method is not None:
            parts.append((self.method, {"method": self.method}))
        if self.precision is not None:
            scheme = {"scheme": self.scheme} if self.scheme else {}
            variant = {"variant": self.variant} if self.variant else {}
            parts.append((self.written or self._precision_word(), {"precision": self.precision, **scheme, **variant}))
        if self.scheme is None:  # the PT2E form puts the granularity first: ptq:int8:per-channel:minmax:pt2e
            parts, granularity = parts + granularity, []
        if self.calibration is not None:
            parts.append((self.calibration, {"calibration": self.calibration}))
        parts += granularity
        if self.reduce_range:
            parts.append(("reduce-range", {"reduce_range": True}))
        if self.block_size is not None:
            parts.append((f"block{self.block_size}", {"block_size": self.block_size}))
        if self.symmetric is not None:
            parts.append(("symmetric" if self.symmetric else "asymmetric", {"symmetric": self.symmetric}))
        if self.op_types:
            parts.append(("+".join(self.op_types), {"op_types": list(self.op_types)}))
        for name, number in (("sparsity", self.sparsity), ("value", self.value)):
            if number is not None:
                parts.append((f"{number:g}", {name: _plain_number(number)}))
        if self.scope is not None:
            parts.append((self.scope, {"scope": self.scope}))
        if self.layer is not None:
            parts.append((self.layer, {"layer": self.layer}))
        parts += [(f"{key}={_word(value)}", {key: _plain_number(value)}) for key, value in self.settings]
        parts += [(word, {"args": [word]}) for word in self.args]
        return parts

    def _precision_word(self) -> str:
        scheme = f"-{self.scheme}" if self.scheme in ("static", "dynamic") else ""
        return f"{self.precision}{scheme}" + (f"-{self.variant}" if self.variant else "")


FP32_EXPORT = Technique("export", precision="fp32")  # the float file every format writes first


def technique_record(technique: "Technique | dict | str") -> dict:
    """The report.json record of a technique: a record's dict, a dict read back from a file as it is, a plain label
    through ``Technique.named``."""
    if isinstance(technique, Technique):
        return technique.as_dict()
    return technique if isinstance(technique, dict) else Technique.named(technique).as_dict()


def technique_label(technique: "Technique | dict | str") -> str:
    """The one-line form of a record, a record read back from a file or a plain label (older files)."""
    return technique if isinstance(technique, str) else technique["label"] if isinstance(technique, dict) else technique.label


def _word(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain_number(value):
    """A float as its label spells it (``4.0`` -> ``4``), so the record and the label agree."""
    if not isinstance(value, float):
        return value
    text = f"{value:g}"
    return int(text) if text.lstrip("-").isdigit() else float(text)


@dataclass
class ExportResult:
    """What an exporter or quantizer wrote (ONNX, TFLite and .pte alike): the file, the precision it holds, its
    technique records, the weighted ops left in float (``{"op", "node", "layer", "reason", "count"}``) and notes;
    ``coverage`` (.pte): ``{"delegated": {op: n}, "portable": {op: n}}``; ``holds_integer_ops`` (ONNX): False when
    nothing was quantized, None where not checked.

    Example:
        >>> ExportResult(Path("model.int8.onnx"), "int8", [Technique("cast", precision="fp16")]).float_ops
        []
    """

    path: Path
    precision: str
    techniques: list[Technique]
    float_ops: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    coverage: dict = field(default_factory=dict)
    holds_integer_ops: bool | None = None


@dataclass(frozen=True)
class Conversion:
    """A conversion the second process makes (compress.steps.ahead): ``key(module, example, precision, calib_data,
    calibration, per_channel, excluded)`` names it in the run's conversion cache, ``build(...)`` (the same arguments
    and a notes list) makes it."""

    key: Callable
    build: Callable


def reachable(handle) -> None:
    """``ArtifactFormat.unreachable``'s default: every source becomes this format."""
    return None


def one_file(path: Path) -> list[Path]:
    """``ArtifactFormat.files``' default: the artifact is the one file."""
    return [Path(path)]


@dataclass(frozen=True)
class ArtifactFormat:
    """One format. Only ``name``, ``suffixes`` and ``runtimes`` are required: a format without ``export_fp32`` and
    ``quantizers`` is verified and timed but never produced by `compress quantize` (``pt2``, ``torchscript``).

    - ``suffixes``: file-name endings, the first one used for new files (``.onnx``; may have several dots).
    - ``runtimes``: runtime names (compress.runtimes) that load it, the first one by default.
    - ``quantizers``: precision name (compress.catalog) -> ``quantize(job) -> result`` with ``path``,
      ``precision``, ``techniques``, ``float_ops``, ``notes``; the format's ``precisions`` are their names (fp32 is
      ``export_fp32``); ``add_quantizer`` gives a registered format one more.
    - ``export_fp32(handle, out)``: write the fp32 file; ``preflight(job) -> [Finding]`` before verifying anything (the job quantize
      will get, nothing excluded; the fp32 file is exported by then when ``quantizes_fp32_file``);
      ``float_ops(path, precision) -> [dict]``: the weighted ops a file left in float.
    - ``calibrates_with``: the calibration backend (compress.backends.calibration: ``"onnxruntime"``, ``"pt2e"``) whose
      implementation of ``job.calibration`` its quantizer runs; a method without one there is refused. None: the
      quantizer reads ``job.calibration`` itself.
    - ``quantizes_fp32_file``: ``quantize`` reads the fp32 file (exported before pre-flight); otherwise the fp32
      file is exported only when asked for.
    - ``unreachable(handle) -> reason | None``: why this source cannot become this format.
    - ``files(path) -> [paths]``: every file the artifact consists of (default: the one file).
    - ``default``: produced when no ``--format`` is given.
    - ``write_qat(converted, path, float_handle) -> [float op]``: write a converted QAT graph as this format's int8
      file (`compress qat --format`), the weighted ops left in float returned; ``qat_technique``: its export record.
    - ``converted_ahead``: how the second process of `compress quantize` (compress.steps.ahead) converts it from the
      torch module beside the ONNX work; None: not converted there.
    - ``device_tool``: the runtime's own timing binary a remote target runs when it is on the device
      (``benchmark_model``, ``executor_runner``); None: timed by compress's device runner there.
    - ``estimate_costs(path, batch) -> {int8_macs, float_macs, bytes_moved, ...}``: what `bench --target estimate`
      reads from the file; None: not estimated.
    - ``no_cuda``: why the cuda target cannot time it (skipped with that line); None: it can.
    - ``export_decoder(module, out, precision, *, max_context, block_size, layers, grids, progress) -> LMExport``:
      write a decoder language model with its KV cache (compress.lm); ``decoder_precisions``: the precisions it takes;
      ``no_decoder``: why a format has none (a decoder LM asked for it is refused with this reason).
    - ``packages``: the distributions whose versions can change its files (reports, manifests and the stage cache
      record them); ``loggers``: its libraries' loggers, quiet unless ``--debug``.
    """

    name: str
    suffixes: tuple[str, ...]
    runtimes: tuple[str, ...]
    quantizers: dict[str, Callable] = field(default_factory=dict)
    export_fp32: Callable | None = None
    preflight: Callable | None = None
    float_ops: Callable | None = None
    calibrates_with: str | None = None
    quantizes_fp32_file: bool = False
    unreachable: Callable[[Any], str | None] = reachable
    files: Callable[[Path], list[Path]] = one_file
    default: bool = False
    write_qat: Callable | None = None
    qat_technique: Technique | None = None
    converted_ahead: Conversion | None = None
    device_tool: str | None = None
    estimate_costs: Callable[[Path, int], dict] | None = None
    no_cuda: str | None = None
    export_decoder: Callable | None = None
    decoder_precisions: tuple[str, ...] = ()
    no_decoder: str | None = None
    packages: tuple[str, ...] = ()
    loggers: tuple[str, ...] = ()

    def filename(self, precision: str) -> str:
        return f"model.{precision}{self.suffixes[0]}"

    @property
    def precisions(self) -> tuple[str, ...]:
        """What ``quantize`` makes: the precisions this format registers a quantizer for."""
        return tuple(self.quantizers)

    def quantize(self, job: QuantizeJob):
        """``job`` through the quantizer of its precision; a usage error (compress.errors.UsageError) naming this format's precisions otherwise."""
        if job.precision not in self.quantizers:
            raise usage_error(f"--precision {job.precision} is not available for {self.name}; "
                             f"it makes {', '.join(self.precisions) or 'no quantized file'}")
        return self.quantizers[job.precision](job)

    @property
    def runtime(self) -> str:
        return self.runtimes[0]


FORMATS: dict[str, ArtifactFormat] = {}
SOURCE_FORMATS = ("zoo", "torchscript", "exported_program", "state_dict", "pickle", "onnx", "hf", "gguf")  # what a model comes in as



def schema_choices(names: Callable[[], Any]) -> dict:
    """pydantic ``Field`` keywords that list ``names()`` as the JSON schema's enum, read each time a schema is
    generated, so a format, precision or method registered later is listed (and accepted by report validation)."""
    return {"json_schema_extra": lambda schema: schema.update(enum=list(names()))}


def register(fmt: ArtifactFormat) -> ArtifactFormat:
    """Add ``fmt`` (replacing a format of that name); its precisions must be registered ones."""
    unknown = [p for p in fmt.precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"format {fmt.name}: unknown precision {unknown[0]!r} (register it in compress.catalog)")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    FORMATS.pop(name, None)


def add_quantizer(name: str, precision: str, quantize: Callable) -> ArtifactFormat:
    """Give the registered format ``name`` a quantizer for ``precision`` (a registered one), or replace its own.

    Example:
        >>> add_quantizer("onnx", "int8", get("onnx").quantizers["int8"]).precisions[0]
        'int8'
    """
    return register(replace(get(name), quantizers={**get(name).quantizers, precision: quantize}))


def remove_quantizer(name: str, precision: str) -> None:
    """Undo ``add_quantizer`` (a plugin's tests clean up with it)."""
    if name in FORMATS:
        FORMATS[name] = replace(FORMATS[name], quantizers={p: q for p, q in FORMATS[name].quantizers.items() if p != precision})


def formats() -> list[ArtifactFormat]:
    _builtins()
    return list(FORMATS.values())


def get(name: str) -> ArtifactFormat:
    """The format called ``name``; a ValueError naming the choices otherwise."""
    _builtins()
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(quantizable())}")
    return FORMATS[name]


def quantizable() -> tuple[str, ...]:
    """Formats `compress quantize` can produce (they have an fp32 exporter)."""
    _builtins()
    return tuple(f.name for f in FORMATS.values() if f.export_fp32)


def decoder_formats() -> tuple[str, ...]:
    """Formats `compress quantize` writes a decoder language model to (they have an ``export_decoder``)."""
    _builtins()
    return tuple(f.name for f in FORMATS.values() if f.export_decoder)


def qat_formats() -> tuple[str, ...]:
    """Formats `compress qat` writes (they have a QAT writer)."""
    _builtins()
    return tuple(f.name for f in FORMATS.values() if f.write_qat)


def estimated_suffixes() -> list[str]:
    """The suffixes `bench --target estimate` reads (formats with an ``estimate_costs``)."""
    _builtins()
    return [s for f in FORMATS.values() if f.estimate_costs for s in f.suffixes]


def format_packages() -> list[str]:
    """Every format's ``packages``, in registration order, each once."""
    _builtins()
    return list(dict.fromkeys(p for f in FORMATS.values() for p in f.packages))


def format_loggers() -> list[str]:
    """Every format's ``loggers``, each once."""
    _builtins()
    return list(dict.fromkeys(name for f in FORMATS.values() for name in f.loggers))


def default_formats() -> list[str]:
    _builtins()
    return [f.name for f in FORMATS.values() if f.default]


def find_format(path: str | Path) -> ArtifactFormat | None:
    """The format whose suffix ``path`` ends with (the longest suffix wins: ``.toy.onnx`` before ``.onnx``)."""
    _builtins()
    name = Path(path).name
    matches = [(len(s), f) for f in FORMATS.values() for s in f.suffixes if name.endswith(s)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def format_of(path: str | Path) -> ArtifactFormat:
    """The format of ``path``; a ValueError naming the known suffixes otherwise."""
    found = find_format(path)
    if found is None:
        known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
        raise ValueError(f"{path}: not an artifact compress knows (suffixes: {known})")
    return found


def runtime_of(path: str | Path) -> str:
    return format_of(path).runtime


def runtime_by_suffix() -> dict[str, str]:
    """``{suffix: default runtime}`` over every format (what the device runner's own table must agree with)."""
    _builtins()
    return {s: f.runtime for f in FORMATS.values() for s in f.suffixes}


def artifact_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in artifact_files(path))


def artifact_sha256(path: str | Path) -> str:
    """The file's sha256; for a multi-file artifact, the sha256 of its files' ``name sha256`` lines."""
    files = artifact_files(path)
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_files(path: str | Path) -> list[Path]:
    """Every file the artifact at ``path`` consists of (its format's ``files``; one file for unknown suffixes)."""
    found = find_format(path)
    return found.files(Path(path)) if found else [Path(path)]


@dataclass(frozen=True)
class OrtCalibrater:
    """onnxruntime's implementation: ``create(model_path, op_types, augmented_model_path, extra_options)`` returns a
    calibrater (``onnxruntime.quantization.calibrate.CalibraterBase``) with its augmented graph and session made;
    its ``compute_data()`` names the ORT method the ranges are tagged with."""

    runs_as: str
    create: Callable[..., Any]


@dataclass(frozen=True)
class Pt2eObserver:
    """The PT2E implementation (TFLite, ``.pte``): ``observer()`` returns the activation observer class."""

    runs_as: str
    observer: Callable[[], type]


@dataclass(frozen=True)
class CalibrationMethod:
    """``knobs``: the method's settings (onnxruntime calibraters take them as ``extra_options``, PT2E observers
    read the same values); ``implementations``: backend (``"onnxruntime"``, ``"pt2e"``) -> ``OrtCalibrater`` or
    ``Pt2eObserver``."""

    name: str
    summary: str
    knobs: dict = field(default_factory=dict)
    implementations: dict[str, OrtCalibrater | Pt2eObserver] = field(default_factory=dict)

    @property
    def formats(self) -> tuple[str, ...]:
        """The registered formats whose calibration backend implements this method."""
        return tuple(f.name for f in formats() if f.calibrates_with in self.implementations)

    @property
    def runs_as(self) -> dict[str, str]:
        """Runtime name (each implementing format's default runtime) -> what really computes the range there."""
        return {get(fmt).runtime: self.implementation(fmt).runs_as for fmt in self.formats}

    def implementation(self, fmt: str) -> OrtCalibrater | Pt2eObserver:
        """What runs this method for format ``fmt``; a ValueError naming the formats that have one otherwise."""
        backend = get(fmt).calibrates_with
        if backend not in self.implementations:
            raise ValueError(f"calibration {self.name!r} has no implementation for {fmt}; implemented for: "
                             f"{', '.join(self.formats) or 'no format'}")
        return self.implementations[backend]


CALIBRATIONS: dict[str, CalibrationMethod] = {}


def register_calibration(method: CalibrationMethod) -> CalibrationMethod:
    """Add ``method`` (replacing one of that name); only the formats whose backend it implements accept it."""
    CALIBRATIONS[method.name] = method
    return method


def unregister_calibration(name: str) -> None:
    CALIBRATIONS.pop(name, None)


def calibration_names(fmt: str | None = None) -> tuple[str, ...]:
    """Registered method names; with ``fmt``, those that format can run (all, for a format without a backend)."""
    _builtins()
    return tuple(name for name, method in CALIBRATIONS.items() if fmt is None or _runs_on(method, fmt))


def _runs_on(method: CalibrationMethod, fmt: str) -> bool:
    return get(fmt).calibrates_with in (None, *method.implementations)


def check_calibration(name: str, fmt: str | None = None):
    """The record for ``name``; with ``fmt``, its implementation for that format (None for a format that names no
    backend: its quantizer reads ``job.calibration`` itself). A ValueError saying what to choose otherwise."""
    _builtins()
    if name not in CALIBRATIONS:
        raise ValueError(f"unknown calibration method {name!r}; choose one of {', '.join(CALIBRATIONS)}")
    if fmt is None:
        return CALIBRATIONS[name]
    return None if get(fmt).calibrates_with is None else CALIBRATIONS[name].implementation(fmt)


RUNTIME_MODULES = {  # runtime name -> its runner class; the formats say which runs what
    "onnxruntime": "compress.backends.onnx.session:OrtRunner",
    "litert": "compress.backends.tflite.session:LiteRTRunner",
    "torch": "compress.backends.pytorch.session:TorchRunner",
    "executorch": "compress.backends.pte.session:ExecuTorchRunner",
}


def register_runtime(name: str, runner: str) -> None:
    """Make ``runner`` (``"package.module:Class"``, a ``Runner``) the runtime called ``name``."""
    RUNTIME_MODULES[name] = runner
