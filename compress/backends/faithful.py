"""Compare candidate files of one model with its fp32 outputs: "is this variant as faithful as the default?".

The export choices (compress.backends.onnx.choose: fused or not, static or dynamic int8; compress.backends.pte.choose:
per-channel or per-tensor scales) build several equivalent files and keep another than the default only when it is
no less faithful to fp32 on the same calibration samples: never lower top-1 agreement, at most SQNR_SLACK_DB noisier,
as close in direction (cosine, which judges embeddings).

Example:
    >>> batches = first_batches(calibration, FIDELITY_SAMPLES, 16)
    >>> as_faithful(output_fidelity(reference, candidate_outputs), output_fidelity(reference, default_outputs))
    True
"""
from __future__ import annotations

import numpy as np

FIDELITY_SAMPLES = 64      # calibration samples the candidates are compared with fp32 on
SQNR_SLACK_DB = 3.0        # a candidate may be this much noisier than the default, never with less top-1 agreement
COSINE_SLACK = 1e-4        # and as close in direction (embeddings are judged by it)
CLASS_KINDS = ("classes", "probabilities")  # output kinds whose top-1 agreement means something


def first_batches(data, samples: int, size: int) -> list[tuple[np.ndarray, ...]]:
    """The first ``samples`` of ``data`` in batches of ``size``, in the model's layout."""
    return [arrays for arrays, _ in data.subset(np.arange(samples), data.split_name).batches(size)]


def output_fidelity(reference: list[np.ndarray], outputs: list[np.ndarray], kinds: list[str] | None = None) -> dict:
    """The worst output's SQNR, cosine and top-1 agreement against ``reference``. Top-1 agreement counts on outputs
    whose kind (compress.data.outputs: the run's reference kinds) is classes or probabilities: the argmax of an embedding
    or a regression means nothing; without ``kinds``, on every output with a class axis (None without one)."""
    from compress.data.evaluate import fidelity

    rows = [fidelity(r, o) for r, o in zip(reference, outputs)]
    scored = rows if kinds is None else [row for row, kind in zip(rows, kinds) if kind in CLASS_KINDS]
    agreements = [row["top1_agreement"] for row in scored if row["top1_agreement"] is not None]
    return {"sqnr_db": min(row["sqnr_db"] for row in rows), "cosine": min(row["cosine"] for row in rows),
            "top1_agreement": min(agreements) if agreements else None}


def as_faithful(candidate: dict, default: dict) -> bool:
    """Whether ``candidate``'s fidelity (output_fidelity) is no worse than ``default``'s, within the slacks."""
    agreement_ok = default["top1_agreement"] is None or candidate["top1_agreement"] >= default["top1_agreement"]
    return (agreement_ok and candidate["sqnr_db"] >= default["sqnr_db"] - SQNR_SLACK_DB
            and candidate["cosine"] >= default["cosine"] - COSINE_SLACK)
