"""Write a converted QAT graph (or its PT2E PTQ twin) to int8 ONNX / TFLite / .pte: the GRAPH source of compress.build.

Example:
    >>> spec = qat_spec(trained, QatConfig(), "onnx")
    >>> spec.name, spec.filename
    ('qat-int8-onnx', 'model.qat-int8.onnx')
"""
from __future__ import annotations

from pathlib import Path


def qat_spec(trained, config, fmt: str, float_handle=None, phase: str | None = None):
    """The build spec (compress.build) of the converted QAT graph ``trained`` as ``model.qat-<tag>.<fmt>`` (QDQ ONNX,
    full-integer TFLite or an XNNPACK int8 ``.pte``), ``mixed`` when weights stayed float. ``float_handle`` (the model
    before QAT) names the layers of ops left in float.

    Example:
        >>> qat_spec(trained, QatConfig(), "onnx").name
        'qat-int8-onnx'
    """
    from compress.build import GRAPH, ArtifactSpec

    tag = scheme_tag(config)
    return ArtifactSpec(fmt, "int8", f"qat-{tag}-{fmt}", f"model.qat-{tag}.{fmt}", GRAPH,
                        (*trained.techniques, export_technique(fmt)), tuple(scheme_notes(config)), phase, trained, float_handle)


def scheme_tag(config) -> str:
    """``int8`` for the default scheme, else e.g. ``w4a8-per-tensor``."""
    return "int8" if config.weight_bits == 8 and config.per_channel else config.scheme().replace(":", "-")


def export_technique(fmt: str) -> str:
    from compress.catalog import get

    return get(fmt).qat_technique


def scheme_notes(config) -> list[str]:
    if config.weight_bits == 8:
        return []
    limit = 2 ** (config.weight_bits - 1) - 1
    return [f"weights restricted to the {config.weight_bits}-bit range [-{limit}, {limit}] and stored in int8 "
            "(ONNX and TFLite have no int4 convolutions): this measures accuracy at 4 bits, not 4-bit size"]
