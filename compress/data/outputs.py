"""What each model output is (its kind), how it is measured, and the fidelity floor it must meet without labels.

Kinds: ``classes`` (logits), ``probabilities`` (rows summing to 1), ``embedding`` (a float vector), ``regression``
(a few values per sample: scalars, points, boxes) and ``state`` (a recurrent state fed back as an input). Each kind
has its own measures; none is computed where it means nothing (no top-1 on a regressor, no cosine of one value).

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

KINDS = ("classes", "probabilities", "embedding", "regression", "state")
FLOOR_MEASURES = ("top1_agreement", "top5_agreement", "cosine", "cosine_min", "neighbour_agreement", "sqnr_db")  # higher is better
NEIGHBOURS = 5               # k of the neighbour-rank agreement
NEIGHBOUR_SAMPLES = 2000     # neighbour agreement is computed on the first 2000 samples (an N x N similarity matrix)

# Default fidelity floors per kind: what an artifact must keep when no labels judge it (bench/fidelity_floors.py
# measured the zoo and test models; README "Default gates" has the table). Every measure listed must hold.
FIDELITY_FLOORS: dict[str, dict[str, float]] = {
    "classes": {"top1_agreement": 0.98},
    "probabilities": {"top1_agreement": 0.98},
    "embedding": {"cosine": 0.98, "neighbour_agreement": 0.9},
    "regression": {"sqnr_db": 20.0},
    "state": {"sqnr_db": 20.0},
}


@dataclass(frozen=True)
class OutputKind:
    """One model output: its name, kind, how the kind was decided, and whether labels judge it."""

    name: str
    kind: str
    source: str          # "declared" | "head" | "shape" | "values" | "state-input"
    labelled: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "kind_from": self.source, "labelled": self.labelled}


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
            kinds.append(OutputKind(name, declared[name], "declared", labelled and head is not None))
        elif head is not None:
            kind = "regression" if head.kind == "regression" else ("probabilities" if _looks_like_probabilities(rows) else "classes")
            kinds.append(OutputKind(name, kind, "head", labelled))
        elif index in state_outputs:
            kinds.append(OutputKind(name, "state", "state-pair"))
        elif tuple(output.shape[1:]) in state_shapes and width > 1:
            kinds.append(OutputKind(name, "state", "state-input"))
        elif width <= REGRESSION_MAX_WIDTH:
            kinds.append(OutputKind(name, "regression", "shape"))
        elif _looks_like_probabilities(rows):
            kinds.append(OutputKind(name, "probabilities", "values"))
        else:
            kinds.append(OutputKind(name, "embedding", "shape"))
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

    def nearest(rows):
        unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    a, b = nearest(ref), nearest(cand)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def measure(kind: str, reference: np.ndarray, candidate: np.ndarray) -> dict:
    """The measures that mean something for ``kind`` (see the module docstring)."""
    ref, cand = _rows(reference), _rows(np.asarray(candidate).reshape(np.shape(reference)))
    if kind in ("classes", "probabilities"):
        result = {"top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1)))}
        if ref.shape[1] > 5:
            result["top5_agreement"] = float(np.mean([r in set(c) for r, c in zip(ref.argmax(1), np.argsort(-cand, axis=1)[:, :5])]))
        result["kl_divergence"] = _kl(_softmax(ref), _softmax(cand)) if kind == "classes" else _kl(ref, cand)
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


def floor_shortfalls(output: dict, floors: dict[str, dict[str, float]] | None = None) -> list[dict]:
    """The floor measures ``output`` (a per-output fidelity entry) misses: ``[{"measure", "value", "floor"}]``."""
    floors = FIDELITY_FLOORS if floors is None else floors
    return [{"measure": m, "value": output["measures"].get(m), "floor": limit}
            for m, limit in floors.get(output["kind"], {}).items()
            if output["measures"].get(m) is not None and output["measures"][m] < limit]


def floor_margin(output: dict, floors: dict[str, dict[str, float]] | None = None) -> tuple[float, str]:
    """(value / floor of the output's weakest floor measure, that measure): below 1 misses the floor; the lower, the worse."""
    ratios = [(output["measures"][m] / limit, m) for m, limit in (FIDELITY_FLOORS if floors is None else floors).get(output["kind"], {}).items()
              if output["measures"].get(m) is not None]
    return min(ratios) if ratios else (float("inf"), next(iter(output["measures"]), ""))


def output_fidelity(kinds: list[OutputKind], reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Every output measured by its kind; the worst one (relative to its floor) is the headline.

    Keeps the v1 flat keys (``top1_agreement``, ``sqnr_db``, ``max_abs_error``, ``cosine``) for the headline output.
    """
    outputs = [{**k.as_dict(), "measures": measure(k.kind, r, c)} for k, r, c in zip(kinds, reference, candidate)]
    worst = min(outputs, key=lambda o: floor_margin(o)[0])
    measure_name = floor_margin(worst)[1]
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
