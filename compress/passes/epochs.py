"""A training epoch's row in words: what progress lines and bars show for prune, distill and QAT epochs.

Example:
    >>> epoch_info({"epoch": 2, "epochs": 5, "loss": 0.31, "val": 0.97, "sparsity": 0.5})
    'sparsity 0.500  loss 0.3100  val 0.9700'
"""
from __future__ import annotations


def epoch_info(row: dict) -> str:
    """``{"loss": 0.31, "val": 0.97, "sparsity": 0.5}`` → ``sparsity 0.500  loss 0.3100  val 0.9700``."""
    parts = [row.get("run", ""), f"sparsity {row['sparsity']:.3f}" if "sparsity" in row else "",
             f"loss {row['loss']:.4f}" if row.get("loss") is not None else "", f"val {row['val']:.4f}" if row.get("val") is not None else ""]
    return "  ".join(p for p in parts if p)
