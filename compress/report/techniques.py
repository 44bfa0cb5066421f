"""report.json ``techniques`` as structured records, read from the labels the passes and quantizers write.

Every record keeps the label (``label``: today's string, e.g. ``ptq:int8-static:minmax:per-channel``) and spells out
what it encodes: ``kind`` (export, ptq, wq, cast, keep-float, prune, qat, distill, train), ``precision`` and
``scheme`` (static, dynamic, weight-only), ``calibration``, ``per_channel``, ``reduce_range``, ``block_size``,
``symmetric``, ``op_types``, ``layer``, ``method`` and any ``key=value`` settings. A record given again is kept as is.

Example:
    >>> technique_record("ptq:int8-static:minmax:per-channel")
    {'kind': 'ptq', 'precision': 'int8', 'scheme': 'static', 'calibration': 'minmax', 'per_channel': True, 'label': 'ptq:int8-static:minmax:per-channel'}
    >>> technique_record("prune:l1-structured:0.5:layer:finetune=2")["sparsity"]
    0.5
"""
from __future__ import annotations

import re

SCHEMES = {"static": "static", "dynamic": "dynamic", "weight-only": "weight-only", "qdq": "static", "static-qdq": "static"}


def technique_records(techniques) -> list[dict]:
    """Each label in ``techniques`` as its record (records pass through)."""
    return [technique_record(t) for t in techniques]


def technique_record(label) -> dict:
    """The record a technique label encodes (see the module docstring)."""
    if isinstance(label, dict):
        return label
    from compress.backends.calibration import CALIBRATIONS

    kind, *parts = label.split(":")
    record: dict = {"kind": kind}
    if kind == "keep-float":
        return {**record, "layer": ":".join(parts), "label": label}
    for part in parts:
        precision = re.fullmatch(r"(int\d+|fp\d+)(?:-(.+))?", part)
        if "=" in part:
            key, _, value = part.partition("=")
            record[key] = _number(value)
        elif part in ("per-channel", "per-tensor"):
            record["per_channel"] = part == "per-channel"
        elif part == "reduce-range":
            record["reduce_range"] = True
        elif part in ("symmetric", "asymmetric"):
            record["symmetric"] = part == "symmetric"
        elif re.fullmatch(r"block\d+", part):
            record["block_size"] = int(part[5:])
        elif part in CALIBRATIONS and "precision" in record:
            record["calibration"] = part
        elif precision and "precision" not in record:
            record.update(_precision(*precision.groups()))
        elif kind == "prune" and part in ("layer", "global"):
            record["scope"] = part
        elif re.fullmatch(r"[\d.]+", part):
            record["sparsity" if kind == "prune" else "value"] = _number(part)
        elif kind == "ptq" and record.get("scheme") == "dynamic" and re.fullmatch(r"[A-Z][A-Za-z]*(\+[A-Z][A-Za-z]*)*", part):
            record["op_types"] = part.split("+")
        elif kind in ("prune", "distill", "train", "qat") and "method" not in record:
            record["method"] = part
        else:
            record.setdefault("args", []).append(part)
    record["label"] = label
    return record


def _precision(base: str, rest: str | None) -> dict:
    """``int8-static`` -> int8, static; ``int4-weight(-only)`` -> int4-weight, weight-only; ``fp16-weights`` -> fp16."""
    if rest in ("weight", "weight-only"):
        return {"precision": f"{base}-weight", "scheme": "weight-only"}
    if rest in SCHEMES:
        return {"precision": base, "scheme": SCHEMES[rest]}
    return {"precision": base, **({"variant": rest} if rest else {})}


def labels(techniques) -> list[str]:
    """The labels of records or labels (for display and for readers of older reports)."""
    return [t["label"] if isinstance(t, dict) else t for t in techniques]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
