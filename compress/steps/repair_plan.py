"""Which repair steps are worth their time: steps that cannot change the file are skipped (with why), and layers kept
in float are tried on top of the best setting found so far (dynamic MatMul/Gemm included).

Example:
    >>> skip_reason(RepairStep("percentile calibration", {"calibration": "percentile"}), as_configured, {"MatMul", "Gather"})
    'calibration sets static activation ranges; MatMul/Gemm are dynamic in the file as configured and the graph has no other weighted op (Conv) for it to change'
    >>> base_step([(RepairStep("as configured"), first), (RepairStep("dynamic int8 for MatMul, Gemm", dyn), tried)]).label
    'dynamic int8 for MatMul, Gemm'
"""
from __future__ import annotations

from pathlib import Path

DYNAMIC_MATMULS = frozenset({"MatMul", "Gemm"})
# weighted ops a static pass quantizes with calibrated activation ranges besides MatMul/Gemm (LSTM and Attention are
# always dynamic; a Gather's output is a row of its int8 table)
CALIBRATED_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose"})


def dynamic_matmuls(entry: dict) -> bool:
    """Whether the file of ``entry`` (a repair step record: its techniques are compress.report.model.Technique)
    quantizes MatMul/Gemm dynamically (picked by timing, or asked for)."""
    records = [t.model_dump() for t in entry["techniques"]]
    return any(t.get("kind") == "ptq" and t.get("scheme") == "dynamic" and DYNAMIC_MATMULS & set(t.get("op_types") or ())
               for t in records)


def graph_op_types(path: Path) -> frozenset[str] | None:
    """The op types of the ONNX graph at ``path`` (None: not an ONNX file, or unreadable)."""
    if Path(path).suffix != ".onnx" or not Path(path).exists():
        return None
    import onnx

    try:
        return frozenset(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001  (no graph to reason from: every step is tried)
        return None


def skip_reason(step, first: dict, op_types: frozenset[str] | None) -> str | None:
    """Why ``step`` (a RepairStep) cannot change the outcome after ``first`` (the file as configured); None: try it.
    ``op_types``: the fp32 graph's op types (ONNX), None when unknown."""
    dynamic = set(step.update.get("dynamic_op_types") or ())
    if dynamic and DYNAMIC_MATMULS <= dynamic and not step.keep_float and dynamic_matmuls(first):
        return "the file as configured already quantizes MatMul/Gemm dynamically"
    if "calibration" in step.update and dynamic_matmuls(first) and op_types is not None \
            and not CALIBRATED_WEIGHTED_OPS & op_types:
        return ("calibration sets static activation ranges; MatMul/Gemm are dynamic in the file as configured and the "
                "graph has no other weighted op (Conv) for it to change")
    return None


def shortfall(record: dict) -> tuple[int, float]:
    """How far one attempt's record is from passing: (gates failed, their summed relative miss); lower is nearer."""
    misses = 0.0
    failed = [g for g in record["gates"] if not g["passed"]]
    for gate in failed:
        value, limit = gate["value"], gate["limit"]
        if value is None or limit is None:
            misses += 1.0
            continue
        miss = value - limit if gate["gate"].startswith("max_") else limit - value
        misses += max(miss, 0.0) / max(abs(limit), 1e-6)
    return len(failed), misses


def base_step(tried: list[tuple]):
    """The setting layers kept in float build on: of ``tried`` ((RepairStep, record) pairs, the file as configured
    first), the nearest to passing among those that change how ops are quantized (dynamic ops or precision), else
    the file as configured. A file as configured whose MatMul/Gemm were picked dynamic keeps them dynamic."""
    from compress.steps.repair import RepairStep

    first_step, first = tried[0]
    if dynamic_matmuls(first) and not first_step.update:
        first_step = RepairStep("dynamic int8 for MatMul, Gemm", {"dynamic_op_types": sorted(DYNAMIC_MATMULS)})
    candidates = [(first_step, first)] + [(s, r) for s, r in tried[1:]
                                          if s.precision or "dynamic_op_types" in s.update]
    return min(candidates, key=lambda pair: shortfall(pair[1]))[0]
