"""Write a converted QAT graph (or its PT2E PTQ twin) to int8 ONNX / TFLite / .pte and verify the file like any artifact.

Example:
    >>> entry = export_qat(trained, QatConfig(), "onnx", run_dir, verifier(run_dir, plan, reference, heads, None))
    >>> entry["name"], entry["precision"]
    ('qat-int8-onnx', 'int8')
"""
from __future__ import annotations

from pathlib import Path

def export_qat(trained, config, fmt: str, run_dir: Path, verify, float_handle=None) -> dict:
    """Export the converted QAT graph ``trained`` to ``model.qat-<tag>.<fmt>`` (QDQ ONNX, full-integer TFLite or an XNNPACK int8 ``.pte``) and
    return ``verify``'s report entry for it (see :func:`compress.pipeline.verifier`). ``float_handle`` (the model before QAT) names
    the layers of ops left in float.

    Example:
        >>> export_qat(trained, QatConfig(), "onnx", run_dir, verifier(run_dir, plan, reference, heads, None))["name"]
        'qat-int8-onnx'
    """
    from compress.rundir import staged

    path = staged(run_dir, f"model.qat-{scheme_tag(config)}.{fmt}")
    floats = write_int8(trained, fmt, path, float_handle)
    return verify(path.name, "mixed" if has_float_weights(floats) else "int8", [*trained.techniques, export_technique(fmt)],
                  f"qat-{scheme_tag(config)}-{fmt}", scheme_notes(config), float_ops=floats)


def write_int8(converted, fmt: str, path: Path, float_handle=None) -> list[dict]:
    """Write the converted graph ``converted`` as an int8 ``fmt`` file (its format's ``write_qat``) at ``path``; return the
    weighted ops it left in float (``float_handle``, the model before quantization, names their layers)."""
    from compress.formats import get

    return get(fmt).write_qat(converted, path, float_handle)


def scheme_tag(config) -> str:
    """``int8`` for the default scheme, else e.g. ``w4a8-per-tensor``."""
    return "int8" if config.weight_bits == 8 and config.per_channel else config.scheme().replace(":", "-")


def export_technique(fmt: str) -> str:
    from compress.formats import get

    return get(fmt).qat_technique


def scheme_notes(config) -> list[str]:
    if config.weight_bits == 8:
        return []
    limit = 2 ** (config.weight_bits - 1) - 1
    return [f"weights restricted to the {config.weight_bits}-bit range [-{limit}, {limit}] and stored in int8 "
            "(ONNX and TFLite have no int4 convolutions): this measures accuracy at 4 bits, not 4-bit size"]


def has_float_weights(float_ops: list[dict]) -> bool:
    """Whether a weighted op kept float weights (float softmax/exp between Q/DQ pairs do not make a file "mixed")."""
    from compress.export.onnx_quantize import WEIGHTED_OPS
    from compress.export.tflite import WEIGHT_OPERANDS

    return any(op["op"] in WEIGHTED_OPS or op["op"] in WEIGHT_OPERANDS for op in float_ops)
