"""The precisions compress knows: one typed record each, the one list every config, schema and branch reads.

A precision says how weights and activations are stored; a format implements it by registering a quantizer for it
(``ArtifactFormat.quantizers``: the built-in formats in their own modules, a plugin with ``register_precision(...,
quantizers={format: quantize})``), so ``precision.formats`` is derived, never listed.

Example:
    >>> PRECISIONS["int4-weight"].block_size, PRECISIONS["int4-weight"].weight_only
    (32, True)
    >>> quantized()
    ('int8', 'int8-dynamic', 'fp16', 'int8-weight', 'int4-weight')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

Activations = Literal["float", "static", "dynamic", "mixed"]


@dataclass(frozen=True)
class Precision:
    """``weight_bits``: bits per stored weight; ``activations``: float, static (calibrated ranges), dynamic (ranges
    measured on every call) or mixed (a result: several schemes in one file). ``block_size``/``symmetric``: the
    weight-only block quantization knobs (ONNX MatMulNBits; TFLite's ai-edge-quantizer quantizes per channel)."""

    name: str
    summary: str
    weight_bits: int
    activations: Activations
    block_size: int | None = None
    symmetric: bool | None = None
    selectable: bool = True          # False: a result only ("mixed"), never asked for

    @property
    def formats(self) -> tuple[str, ...]:
        """The registered formats that implement this precision."""
        from compress.backends.registry import formats

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
        >>> from compress.backends import get
        >>> register_precision(Precision("int4-weight-sym", "4-bit symmetric weights", 4, "float", block_size=64,
        ...                              symmetric=True), {"onnx": get("onnx").quantizers["int4-weight"]}).formats
        ('onnx',)
    """
    PRECISIONS[precision.name] = precision
    if quantizers:
        from compress.backends.registry import add_quantizer

        for fmt, quantize in quantizers.items():
            add_quantizer(fmt, precision.name, quantize)
    return precision


def unregister_precision(name: str) -> None:
    """Remove a registered precision and every format's quantizer for it (a plugin's tests clean up with it)."""
    from compress.backends.registry import FORMATS, remove_quantizer

    for fmt in list(FORMATS):
        remove_quantizer(fmt, name)
    PRECISIONS.pop(name, None)


for _precision in (
    Precision("fp32", "float32 everywhere: the plain export", 32, "float"),
    Precision("int8", "static int8: int8 weights, activations calibrated on train+val samples", 8, "static"),
    Precision("int8-dynamic", "int8 weights, activation ranges measured on every call", 8, "dynamic"),
    Precision("fp16", "float16 weights (and compute where the runtime has fp16 kernels)", 16, "float"),
    Precision("int8-weight", "8-bit weights dequantized before float compute", 8, "float", block_size=32, symmetric=False),
    Precision("int4-weight", "4-bit weights dequantized before float compute", 4, "float", block_size=32, symmetric=False),
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
    """What `compress tune` searches over: the int8 schemes with int8 compute (static, dynamic)."""
    return names(lambda p: p.selectable and p.weight_bits == 8 and p.activations in ("static", "dynamic"))


def check_precisions(value: list[str], choices) -> list[str]:
    """``value`` when every name is one of ``choices()`` (and there is one); a ValueError naming them otherwise."""
    unknown = [p for p in value if p not in choices()]
    if unknown:
        raise ValueError(f"unknown precision {unknown[0]!r}; choose from {', '.join(choices())}")
    if not value:
        raise ValueError("give at least one precision")
    return value
