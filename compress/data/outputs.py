"""What each model output is (its kind), how it is measured, and the fidelity floor it must meet without labels.

Kinds: ``classes`` (logits, or independent sigmoid bins), ``probabilities`` (rows summing to 1), ``sequence``
(per-step class scores, e.g. CTC logits ``(B, T, C)``: top-1 agreement at every step), ``embedding`` (a float
vector), ``regression`` (a few values per sample: scalars, points, boxes, landmarks) and ``state`` (a recurrent state
fed back as an input). Each kind has its own measures; none is computed where it means nothing (no top-1 on a
regressor, no cosine of one value). Every decision carries its reason (``OutputKind.reason``), shown beside the kind
with the flag that overrides it (``--output-kind NAME=KIND``).

Example:
    >>> kinds = infer_kinds([ref_logits, ref_emb], heads=(), declared={}, names=["output_0", "output_1"])
    >>> [k.kind for k in kinds]
    ['embedding', 'embedding']
    >>> output_fidelity(kinds, [ref_logits, ref_emb], [cand_logits, cand_emb])["worst"]["measure"]
    'cosine'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.data.evaluate import REGRESSION_MAX_WIDTH, head_fits, significant, sqnr_db

KINDS = ("classes", "probabilities", "sequence", "embedding", "regression", "state")
FLOOR_MEASURES = ("top1_agreement", "top5_agreement", "step_top1_agreement", "cosine", "cosine_min", "neighbour_agreement",
                  "sqnr_db")  # higher is better
VECTOR_REGRESSION_MAX_WIDTH = 12  # up to 12 values (6 landmarks) sharing one offset are regression; 16 and more: a vector
PARALLEL_COSINE = 0.95       # every sample's vector this close to the mean vector: cosine cannot tell samples apart
BIN_SMOOTHNESS = 0.9         # lag-1 autocorrelation along the axis of ordered bins (pitch, depth, angle)
DECISIVE_TOP1 = 0.5          # per-step logits whose softmax top-1 averages this much pick one class per step
NEIGHBOURS = 5               # k of the neighbour-rank agreement
NEIGHBOUR_SAMPLES = 2000     # neighbour agreement is computed on the first 2000 samples (an N x N similarity matrix)

# Default fidelity floors per kind: what an artifact must keep when no labels judge it (bench/fidelity_floors.py
# measured the zoo and test models; README "Default gates" has the table). Every measure listed must hold.
FIDELITY_FLOORS: dict[str, dict[str, float]] = {
    "classes": {"top1_agreement": 0.98},
    "probabilities": {"top1_agreement": 0.98},
    "sequence": {"step_top1_agreement": 0.98},
    "embedding": {"cosine": 0.98, "neighbour_agreement": 0.9},
    "regression": {"sqnr_db": 20.0},
    "state": {"sqnr_db": 20.0},
}


@dataclass(frozen=True)
class OutputKind:
    """One model output: its name, kind, how the kind was decided (``source`` and, in words, ``reason``), and whether
    labels judge it."""

    name: str
    kind: str
    source: str          # "declared" | "head" | "shape" | "values" | "state-pair" | "state-input"
    labelled: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        entry = {"name": self.name, "kind": self.kind, "kind_from": self.source, "labelled": self.labelled}
        return {**entry, "kind_reason": self.reason} if self.reason else entry


def kind_line(output: dict) -> str:
    """One output's kind, why, and how to override it, for report.md and the terminal (``output``: an ``as_dict``).

    Example:
        >>> kind_line({"name": "pitch", "kind": "classes", "kind_from": "values", "kind_reason": "360 values in [0, 1]"})
        'pitch: classes (360 values in [0, 1]); another kind: --output-kind pitch=KIND'
    """
    why = output.get("kind_reason") or output.get("kind_from", "")
    return f"{output['name']}: {output['kind']} ({why}); another kind: --output-kind {output['name']}=KIND"


def parse_output_kinds(pairs: list[str] | dict | None) -> dict[str, str]:
    """``["emb=embedding", "box=regression"]`` (or a mapping) -> ``{"emb": "embedding", ...}``; a bad kind is a ValueError."""
    items = pairs.items() if isinstance(pairs, dict) else (p.partition("=")[::2] for p in pairs or [])
    result = {}
    for name, kind in items:
        name, kind = str(name).strip(), str(kind).strip()
        if not name or kind not in KINDS:
            raise ValueError(f"--output-kind {name}={kind}: write NAME=KIND with KIND one of {', '.join(KINDS)}")
        result[name] = kind
    return result


def output_names(heads, input_names, count: int) -> list[str]:
    """The names exported files give the outputs: the dataset heads' when they match one to one, else output_<i>."""
    names = [head.name for head in heads]
    if len(names) == count and not set(names) & set(input_names):
        return names
    return [f"output_{i}" for i in range(count)]


def _rows(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float64).reshape(len(array), -1)


def _looks_like_probabilities(rows: np.ndarray) -> bool:
    return rows.shape[1] > 1 and bool(np.all(rows >= -1e-6)) and bool(np.allclose(rows.sum(1), 1.0, atol=1e-3))


def _looks_like_log_probabilities(rows: np.ndarray) -> bool:
    return rows.shape[1] > 1 and bool(np.all(rows <= 1e-6)) and bool(np.allclose(np.exp(rows).sum(1), 1.0, atol=1e-3))


def _in_unit_interval(rows: np.ndarray) -> bool:
    return bool(np.all(rows >= 0.0)) and bool(np.all(rows <= 1.0))


def _smoothness(rows: np.ndarray) -> float:
    """Mean lag-1 autocorrelation along the axis: near 1 for ordered bins (a bump over pitch bins), ~0 for an embedding."""
    centred = rows - rows.mean(1, keepdims=True)
    power = np.maximum((centred**2).sum(1), 1e-30)
    return float(np.mean((centred[:, 1:] * centred[:, :-1]).sum(1) / power))


def _parallel(rows: np.ndarray) -> float:
    """Mean cosine between each sample's vector and the mean vector: near 1 when the values share one offset."""
    mean = rows.mean(0)
    norms = np.linalg.norm(rows, axis=1) * max(np.linalg.norm(mean), 1e-30)
    return float(np.mean(rows @ mean / np.maximum(norms, 1e-30)))


def _class_like_steps(output: np.ndarray) -> str | None:
    """Why the last axis of a rank >= 3 output holds class scores per step (None: it does not look so)."""
    classes = output.shape[-1]
    steps = np.asarray(output, dtype=np.float64).reshape(-1, classes)
    where = f"{int(np.prod(output.shape[1:-1]))} steps x {classes} classes per sample"
    if _looks_like_probabilities(steps):
        return f"{where}, probabilities at every step"
    if _looks_like_log_probabilities(steps):
        return f"{where}, log-probabilities at every step"
    if classes > REGRESSION_MAX_WIDTH and steps.min() < 0 < steps.max():
        top1 = float(_softmax(steps).max(1).mean())
        if top1 >= DECISIVE_TOP1:
            return f"{where}, logits that pick one class per step (mean softmax top-1 {top1:.2f})"
    return None


def _by_values(output: np.ndarray) -> tuple[str, str, str]:
    """(kind, source, reason) of an output no declaration, label or state decides."""
    rows = _rows(output)
    width = rows.shape[1]
    if output.ndim >= 3 and output.shape[-1] > 1:
        steps = _class_like_steps(output)
        if steps:
            return "sequence", "values", f"{steps}: judged by top-1 agreement at every step of every sample"
    if width <= REGRESSION_MAX_WIDTH:
        return "regression", "shape", f"{width} value(s) per sample"
    if _looks_like_probabilities(rows):
        return "probabilities", "values", f"{width} values summing to 1"
    if output.ndim == 2 and width > VECTOR_REGRESSION_MAX_WIDTH and _in_unit_interval(rows):
        return "classes", "values", f"{width} independent bins in [0, 1] (sigmoid): judged by argmax agreement"
    if output.ndim == 2 and width > VECTOR_REGRESSION_MAX_WIDTH and _smoothness(rows) >= BIN_SMOOTHNESS:
        return "classes", "values", (f"{width} ordered bins (neighbouring values move together, lag-1 autocorrelation "
                                     f"{_smoothness(rows):.2f}): judged by argmax agreement")
    if output.ndim == 2 and width <= VECTOR_REGRESSION_MAX_WIDTH and _parallel(rows) >= PARALLEL_COSINE:
        return "regression", "values", (f"{width} values sharing one offset (each sample within cosine {_parallel(rows):.3f} "
                                        "of the mean: cosine cannot tell samples apart), like points or landmarks")
    return "embedding", "shape", f"{width} unbounded values per sample: judged by cosine and nearest neighbours"


def infer_kinds(outputs: list[np.ndarray], heads=(), declared: dict[str, str] | None = None, names: list[str] | None = None,
                labelled: bool = False, state_shapes: list[tuple] = (), state_outputs: set[int] = frozenset()) -> list[OutputKind]:
    """Each output's kind: declared > the dataset head (when it fits the output) > state > shape and values.

    ``state_outputs``: indices of outputs fed back as inputs (``--state``, compress.data.streams); ``state_shapes``: per-sample
    shapes of float inputs, an output of the same shape is read as the state fed back too.
    """
    declared = declared or {}
    names = names or [f"output_{i}" for i in range(len(outputs))]
    unknown = set(declared) - set(names)
    if unknown:
        raise ValueError(f"--output-kind names {sorted(unknown)[0]!r}, but the outputs are {', '.join(names)}")
    kinds = []
    for index, (name, output) in enumerate(zip(names, outputs)):
        rows = _rows(output)
        width = rows.shape[1]
        head = heads[index] if index < len(heads) and head_fits(heads[index], output) else None
        if name in declared:
            kinds.append(OutputKind(name, declared[name], "declared", labelled and head is not None, "--output-kind"))
        elif head is not None:
            kind = "regression" if head.kind == "regression" else ("probabilities" if _looks_like_probabilities(rows) else "classes")
            kinds.append(OutputKind(name, kind, "head", labelled, f"the labels {head.name!r} fit its {width} values"))
        elif index in state_outputs:
            kinds.append(OutputKind(name, "state", "state-pair", reason="fed back as an input (--state)"))
        elif tuple(output.shape[1:]) in state_shapes and width > 1:
            kinds.append(OutputKind(name, "state", "state-input", reason="same shape as a float input: the state fed back"))
        else:
            kind, source, reason = _by_values(np.asarray(output))
            kinds.append(OutputKind(name, kind, source, reason=reason))
    return kinds


# --- measures per kind ------------------------------------------------------------------------------------------


def _softmax(rows: np.ndarray) -> np.ndarray:
    shifted = np.exp(rows - rows.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = np.clip(p, 1e-12, 1.0), np.clip(q, 1e-12, 1.0)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def _cosines(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(cand, axis=1) == 0)
    return np.where(both_zero, 1.0, np.sum(ref * cand, axis=1) / np.where(norms == 0, 1.0, norms))


def neighbour_agreement(ref: np.ndarray, cand: np.ndarray, k: int = NEIGHBOURS) -> float | None:
    """Mean fraction of each sample's k nearest neighbours (cosine, reference embeddings) still among its k nearest
    in the candidate's embeddings. None with fewer than k + 2 samples."""
    ref, cand = ref[:NEIGHBOUR_SAMPLES], cand[:NEIGHBOUR_SAMPLES]
    if len(ref) < k + 2:
        return None
    return float(np.mean(_neighbour_overlaps(ref, cand, k)))


def _neighbour_overlaps(ref: np.ndarray, cand: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Per sample: the fraction of its k nearest reference neighbours still among its k nearest candidate ones."""

    def nearest(rows):
        unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    return np.array([len(set(x) & set(y)) / k for x, y in zip(nearest(ref), nearest(cand))])


def measure(kind: str, reference: np.ndarray, candidate: np.ndarray) -> dict:
    """The measures that mean something for ``kind`` (see the module docstring)."""
    ref, cand = _rows(reference), _rows(np.asarray(candidate).reshape(np.shape(reference)))
    if kind in ("classes", "probabilities"):
        result = {"top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1)))}
        if ref.shape[1] > 5:
            result["top5_agreement"] = float(np.mean([r in set(c) for r, c in zip(ref.argmax(1), np.argsort(-cand, axis=1)[:, :5])]))
        result["kl_divergence"] = _kl(_softmax(ref), _softmax(cand)) if kind == "classes" else _kl(ref, cand)
    elif kind == "sequence":
        classes = np.shape(reference)[-1] if np.ndim(reference) > 1 else 1
        ref_steps = np.asarray(reference, dtype=np.float64).reshape(len(ref), -1, classes)
        cand_steps = np.asarray(candidate, dtype=np.float64).reshape(ref_steps.shape)
        agree = ref_steps.argmax(-1) == cand_steps.argmax(-1)
        result = {"step_top1_agreement": float(agree.mean()), "worst_sample_step_agreement": float(agree.mean(1).min()),
                  "steps": float(agree.size)}
    elif kind == "embedding":
        cosine = _cosines(ref, cand)
        result = {"cosine": float(cosine.mean()), "cosine_min": float(cosine.min()), "neighbour_agreement": neighbour_agreement(ref, cand)}
    elif kind == "regression":
        error = np.abs(ref - cand)
        result = {"sqnr_db": sqnr_db(ref, cand), "relative_error": float(np.linalg.norm(ref - cand) / max(np.linalg.norm(ref), 1e-30)),
                  "max_abs_error": float(error.max()) if error.size else 0.0}
    elif kind == "state":
        cosine = _cosines(ref, cand)
        result = {"sqnr_db": sqnr_db(ref, cand), "cosine": float(cosine.mean()), "cosine_min": float(cosine.min())}
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    return {k: (None if v is None else round(float(v), 6)) for k, v in result.items()}


def measure_intervals(kind: str, reference: np.ndarray, candidate: np.ndarray) -> dict[str, dict]:
    """The 95 % interval of each floor measure ``measure`` gives ``kind`` (compress.data.intervals): Wilson for
    top-1/top-5 agreement, bootstrap over samples for cosine, step and neighbour agreement and SQNR."""
    from compress.data import intervals

    ref, cand = _rows(reference), _rows(np.asarray(candidate).reshape(np.shape(reference)))
    n = len(ref)
    if kind in ("classes", "probabilities"):
        result = {"top1_agreement": intervals.wilson(int(np.sum(ref.argmax(1) == cand.argmax(1))), n)}
        if ref.shape[1] > 5:
            top5 = sum(r in set(c) for r, c in zip(ref.argmax(1), np.argsort(-cand, axis=1)[:, :5]))
            result["top5_agreement"] = intervals.wilson(int(top5), n)
        return result
    if kind == "sequence":
        classes = np.shape(reference)[-1] if np.ndim(reference) > 1 else 1
        steps = np.asarray(reference, dtype=np.float64).reshape(n, -1, classes)
        agree = steps.argmax(-1) == np.asarray(candidate, dtype=np.float64).reshape(steps.shape).argmax(-1)
        return {"step_top1_agreement": intervals.mean_interval(agree.mean(1))}
    result = {"sqnr_db": intervals.sqnr_interval(ref, cand)} if kind in ("regression", "state") else {}
    if kind in ("embedding", "state"):
        result["cosine"] = intervals.mean_interval(_cosines(ref, cand))
    if kind == "embedding" and min(n, NEIGHBOUR_SAMPLES) >= NEIGHBOURS + 2:
        result["neighbour_agreement"] = intervals.mean_interval(_neighbour_overlaps(ref[:NEIGHBOUR_SAMPLES], cand[:NEIGHBOUR_SAMPLES]))
    return result


def floor_shortfalls(kind: str, measures: dict, floors: dict[str, dict[str, float]] | None = None) -> list[dict]:
    """The floor measures an output of ``kind`` with ``measures`` misses: ``[{"measure", "value", "floor"}]``.

    Example:
        >>> floor_shortfalls("embedding", {"cosine": 0.93}, {"embedding": {"cosine": 0.98}})
        [{'measure': 'cosine', 'value': 0.93, 'floor': 0.98}]
    """
    floors = FIDELITY_FLOORS if floors is None else floors
    return [{"measure": m, "value": measures.get(m), "floor": limit}
            for m, limit in floors.get(kind, {}).items()
            if measures.get(m) is not None and measures[m] < limit]


def floor_margin(kind: str, measures: dict, floors: dict[str, dict[str, float]] | None = None) -> tuple[float, str]:
    """(value / floor of the weakest floor measure of an output of ``kind``, that measure): below 1 misses the floor;
    the lower, the worse."""
    ratios = [(measures[m] / limit, m) for m, limit in (FIDELITY_FLOORS if floors is None else floors).get(kind, {}).items()
              if measures.get(m) is not None]
    return min(ratios) if ratios else (float("inf"), next(iter(measures), ""))


def output_fidelity(kinds: list[OutputKind], reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Every output measured by its kind; the worst one (relative to its floor) is the headline.

    Keeps the v1 flat keys (``top1_agreement``, ``sqnr_db``, ``max_abs_error``, ``cosine``) for the headline output.
    """
    outputs = [{**k.as_dict(), "measures": measure(k.kind, r, c), "intervals": measure_intervals(k.kind, r, c)}
               for k, r, c in zip(kinds, reference, candidate)]
    worst = min(outputs, key=lambda o: floor_margin(o["kind"], o["measures"])[0])
    measure_name = floor_margin(worst["kind"], worst["measures"])[1]
    ref, cand = reference[outputs.index(worst)], candidate[outputs.index(worst)]
    head = worst["measures"]
    return {
        "top1_agreement": head.get("top1_agreement"),
        "sqnr_db": sqnr_db(np.asarray(ref), np.asarray(cand).reshape(np.shape(ref))),
        "max_abs_error": significant(np.max(np.abs(_rows(ref) - _rows(np.asarray(cand).reshape(np.shape(ref)))))) if np.size(ref) else 0.0,
        "cosine": head.get("cosine"),
        "worst": {"output": worst["name"], "kind": worst["kind"], "measure": measure_name, "value": head.get(measure_name)},
        "outputs": outputs,
    }
