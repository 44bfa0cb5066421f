"""Artifact formats: one record per format, the one place suffixes, runtimes, exporters and quantizers are named.

Everything that used to be its own list is derived from here: the format of a file (``format_of``), the runtime that
opens it, the CLI's choices, the config validators and report.json's enums. An artifact may be several files
(``ArtifactFormat.files``): its size and sha256 cover all of them.

Example:
    >>> format_of("runs/x/model.int8.tflite").name, runtime_of("m.onnx")
    ('tflite', 'onnxruntime')
    >>> get("onnx").filename("int8")
    'model.int8.onnx'
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from compress.errors import UsageError
from compress.catalog import PRECISIONS


@dataclass
class QuantizeJob:
    """One file to write: ``handle`` quantized to ``precision`` at ``out``.

    ``fp32``: the format's fp32 file when the format quantizes from it (``quantizes_fp32_file``), else None.
    ``calibration``: the calibration method's name; ``calib_data``: the samples it calibrates on (None: random).
    ``output_kinds``: each output's kind from the run's reference (compress.data.outputs), for choices that compare files
    by fidelity; None where unknown.
    """

    handle: Any
    precision: str
    out: Path
    fp32: Path | None
    calib_data: Any
    calibration: str = "minmax"
    per_channel: bool = True
    exclude: list[str] = field(default_factory=list)
    seed: int = 0
    dynamic_op_types: list[str] = field(default_factory=list)
    output_kinds: list[str] | None = None


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
      file (`compress qat --format`), the weighted ops left in float returned; ``qat_technique``: its export label.
    - ``converted_ahead``: how the second process of `compress quantize` (compress.steps.ahead) converts it from the
      torch module beside the ONNX work; None: not converted there.
    - ``device_tool``: the runtime's own timing binary a remote target runs when it is on the device
      (``benchmark_model``, ``executor_runner``); None: timed by compress's device runner there.
    - ``estimate_costs(path, batch) -> {int8_macs, float_macs, bytes_moved, ...}``: what `bench --target estimate`
      reads from the file; None: not estimated.
    - ``no_cuda``: why the cuda target cannot time it (skipped with that line); None: it can.
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
    qat_technique: str | None = None
    converted_ahead: Conversion | None = None
    device_tool: str | None = None
    estimate_costs: Callable[[Path, int], dict] | None = None
    no_cuda: str | None = None
    packages: tuple[str, ...] = ()
    loggers: tuple[str, ...] = ()

    def filename(self, precision: str) -> str:
        return f"model.{precision}{self.suffixes[0]}"

    @property
    def precisions(self) -> tuple[str, ...]:
        """What ``quantize`` makes: the precisions this format registers a quantizer for."""
        return tuple(self.quantizers)

    def quantize(self, job: QuantizeJob):
        """``job`` through the quantizer of its precision; a UsageError naming this format's precisions otherwise."""
        if job.precision not in self.quantizers:
            raise UsageError(f"--precision {job.precision} is not available for {self.name}; "
                             f"it makes {', '.join(self.precisions) or 'no quantized file'}")
        return self.quantizers[job.precision](job)

    @property
    def runtime(self) -> str:
        return self.runtimes[0]


FORMATS: dict[str, ArtifactFormat] = {}
SOURCE_FORMATS = ("zoo", "torchscript", "exported_program", "state_dict", "pickle", "onnx")  # what a model comes in as


def note_static_only(job: QuantizeJob, result, hint: str = ""):
    """``result`` with a note when ``job.dynamic_op_types`` (an ONNX-only knob) asked for dynamic ops in an int8 file
    this format writes static throughout; ``hint`` says what to use instead."""
    if job.dynamic_op_types and job.precision == "int8":
        result.notes.append(f"dynamic_op_types ({', '.join(job.dynamic_op_types)}) applies to ONNX only: "
                            f"this file is static int8 throughout{hint}")
    return result


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
    return list(FORMATS.values())


def get(name: str) -> ArtifactFormat:
    """The format called ``name``; a ValueError naming the choices otherwise."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(quantizable())}")
    return FORMATS[name]


def quantizable() -> tuple[str, ...]:
    """Formats `compress quantize` can produce (they have an fp32 exporter)."""
    return tuple(f.name for f in FORMATS.values() if f.export_fp32)


def qat_formats() -> tuple[str, ...]:
    """Formats `compress qat` writes (they have a QAT writer)."""
    return tuple(f.name for f in FORMATS.values() if f.write_qat)


def estimated_suffixes() -> list[str]:
    """The suffixes `bench --target estimate` reads (formats with an ``estimate_costs``)."""
    return [s for f in FORMATS.values() if f.estimate_costs for s in f.suffixes]


def format_packages() -> list[str]:
    """Every format's ``packages``, in registration order, each once."""
    return list(dict.fromkeys(p for f in FORMATS.values() for p in f.packages))


def format_loggers() -> list[str]:
    """Every format's ``loggers``, each once."""
    return list(dict.fromkeys(name for f in FORMATS.values() for name in f.loggers))


def default_formats() -> list[str]:
    return [f.name for f in FORMATS.values() if f.default]


def find_format(path: str | Path) -> ArtifactFormat | None:
    """The format whose suffix ``path`` ends with (the longest suffix wins: ``.toy.onnx`` before ``.onnx``)."""
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
    return {s: f.runtime for f in FORMATS.values() for s in f.suffixes}


def artifact_files(path: str | Path) -> list[Path]:
    """Every file the artifact at ``path`` consists of (its format's ``files``; one file for unknown suffixes)."""
    found = find_format(path)
    return found.files(Path(path)) if found else [Path(path)]


def artifact_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in artifact_files(path))


def artifact_sha256(path: str | Path) -> str:
    """The file's sha256; for a multi-file artifact, the sha256 of its files' ``name sha256`` lines."""
    from compress.safety.io import sha256_file

    files = artifact_files(path)
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{p.name} {sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()
