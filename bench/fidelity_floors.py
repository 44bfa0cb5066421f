"""`python -m bench.fidelity_floors`: the int8 fidelity every zoo model and test model keeps, per output kind.

What the default fidelity floors (compress.data.outputs.FIDELITY_FLOORS) and the default degradation limit
(compress.steps.gates.DEFAULT_MAX_DEGRADATION) are set from. Each zoo model is trained for --epochs (default 2: short
training is enough to measure what int8 does to it; record says so), quantized to static int8 ONNX (minmax, per
channel, as `compress quantize` does by default) and measured twice on its test split: with its labels (kinds from
the dataset heads) and with the labels dropped (kinds inferred from shape: classifier logits become embeddings).
The test models of tests/models_for_tests.py are measured on random unlabelled data. Every int8 file is judged by the
default gates (``passes``); one that fails is quantized again with repair on (compress.steps.repair) and measured after it.
Writes
bench/results/fidelity_floors.json and .md. Options: --models a,b  --epochs N
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def _rows(model: str, labels: str, report: dict) -> list[dict]:
    """One row per output of the int8 ONNX artifact: kind and measures, degradation when labelled, whether the file
    passes the default gates, and which repair step was kept (``-``: the file as configured)."""
    from compress.steps.gates import GatePolicy
    from compress.steps.repair import quality_failures

    int8 = next(a for a in report["artifacts"] if a["name"] == "int8-onnx")
    passes = "yes" if not quality_failures(int8, GatePolicy()) else "NO"
    int8_file = (int8.get("repair") or {}).get("kept") or "as configured"
    return [{"model": model, "labels": labels, "int8": int8_file, "passes": passes, "output": o["name"], "kind": o["kind"],
             "degradation": int8["metrics"]["degradation"], **o["measures"]} for o in int8["metrics"]["fidelity"]["outputs"]]


def _quantize(handle, data, folder: Path, repair: bool = False) -> dict:
    from compress.steps.gates import GatePolicy
    from compress.passes.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(formats=["onnx"], bench=False, auto_fallback=repair)
    return quantize(handle, config, data, folder, policy=GatePolicy(enabled=repair)).report


def _measured(model: str, labels: str, handle, data, folder: Path) -> list[dict]:
    """The rows of the int8 file as configured, and after repair when it fails the default gates."""
    rows = _rows(model, labels, _quantize(handle, data, folder / "as-configured"))
    if any(row["passes"] == "NO" for row in rows):
        rows += _rows(model, labels, _quantize(handle, data, folder / "repaired", repair=True))
    return rows


def zoo_rows(name: str, epochs: int, folder: Path) -> list[dict]:
    from compress.data import Dataset, resolve_data
    from compress.loading.model import load_model
    from compress.zoo import train_zoo_model

    handle = load_model(train_zoo_model(name, epochs=epochs, seed=0).path)
    rows = _measured(name, "yes", handle, None, folder / f"{name}-labelled")
    dataset = resolve_data(handle.dataset["name"])
    unlabelled = Dataset(dataset.name, dataset.x, None, (), meta=dict(dataset.meta))
    handle.heads = ()
    return rows + _measured(name, "no", handle, unlabelled, folder / f"{name}-unlabelled")


def test_model_rows(folder: Path) -> list[dict]:
    from compress.data import Dataset
    from compress.loading.model import load_model
    from tests.models_for_tests import Embedder, MultiHead, StatefulGRU, TinyEncoder, WideRangeLSTM

    rng = np.random.default_rng(0)
    wide = rng.standard_normal((400, 6, 8)).astype(np.float32)
    wide[:, :, 0] *= 1000.0
    cases = {
        "Embedder": (Embedder(), ("1x1x8x8",), (rng.standard_normal((400, 1, 8, 8)).astype(np.float32),)),
        "MultiHead": (MultiHead(), ("1x1x8x8",), (rng.standard_normal((400, 1, 8, 8)).astype(np.float32),)),
        "StatefulGRU": (StatefulGRU(), ("1x8", "1x32"), (rng.standard_normal((400, 8)).astype(np.float32),
                                                          np.tanh(rng.standard_normal((400, 32))).astype(np.float32))),
        "TinyEncoder": (TinyEncoder(), ("ids=1x12:int64:0-60", "mask=1x12:int64:0-2"),
                        (rng.integers(0, 60, (400, 12)), (rng.random((400, 12)) > 0.2).astype(np.int64))),
        "WideRangeLSTM (broken on purpose)": (WideRangeLSTM(), ("1x6x8",), (wide,)),
    }
    rows = []
    for name, (module, shapes, x) in cases.items():
        torch.manual_seed(0)
        path = folder / f"{name.split()[0]}.pt"
        examples = tuple(torch.from_numpy(a[:1]) for a in x)
        torch.jit.save(torch.jit.trace(module.eval(), examples), str(path))
        handle = load_model(path, input_shapes=list(shapes))
        rows += _measured(name, "no", handle, Dataset(name.split()[0], x), folder / name.split()[0])
    return rows


COLUMNS = ["model", "labels", "int8", "passes", "output", "kind", "degradation", "top1_agreement", "kl_divergence", "cosine", "cosine_min",
           "neighbour_agreement", "sqnr_db"]


def markdown(record: dict) -> str:
    from compress.steps.gates import DEFAULT_MAX_DEGRADATION
    from compress.data.outputs import FIDELITY_FLOORS

    floors = "; ".join(f"{kind}: " + ", ".join(f"{m} >= {v}" for m, v in measures.items()) for kind, measures in FIDELITY_FLOORS.items())
    lines = [f"# int8 fidelity per output kind ({record['created']})", "", record["method"], "",
             f"Default gates: labels: degradation <= {DEFAULT_MAX_DEGRADATION}; without labels: {floors}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in record["rows"]:
        cells = [row.get(c) for c in COLUMNS]
        lines.append("| " + " | ".join("-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in cells) + " |")
    return "\n".join(lines) + "\n"


FLOOR_MEASURES = {"classes": "top1_agreement", "probabilities": "top1_agreement", "embedding": "neighbour_agreement",
                  "regression": "sqnr_db", "state": "sqnr_db"}


def page_table(record: dict) -> str:
    """docs/benchmarks.md's compact table: per model and output, the measure nearest its floor, as configured and repaired."""
    from compress.steps.gates import DEFAULT_MAX_DEGRADATION
    from compress.data.outputs import FIDELITY_FLOORS

    lines = ["| model | labels | output (kind) | int8 file | judged by | value | floor / limit | passes |", "|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        if row["labels"] == "yes":
            judged, value, limit = "degradation", row["degradation"], f"<= {DEFAULT_MAX_DEGRADATION}"
        else:
            judged = FLOOR_MEASURES[row["kind"]]
            value, limit = row.get(judged), f">= {FIDELITY_FLOORS[row['kind']][judged]}"
        lines.append(f"| {row['model']} | {row['labels']} | {row['output']} ({row['kind']}) | {row['int8']} | {judged} | "
                     f"{value:.4g} | {limit} | {row['passes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from compress.zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += zoo_rows(name, args.epochs, Path(tmp))
        rows += test_model_rows(Path(tmp))
    record = {"created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
              "method": (f"Zoo models trained {args.epochs} epoch(s) (seed 0) for measurement only, static int8 ONNX (minmax, "
                         "per-channel), measured on the test split with labels (kinds from heads) and without (kinds inferred); "
                         "test models (tests/models_for_tests.py, untrained) on 400 random unlabelled samples. A file "
                         "that fails the default gates is quantized again with repair on; 'int8' names the step kept."),
              "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fidelity_floors.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "fidelity_floors.md").write_text(markdown(record))
    from bench.pages import write_page

    write_page()  # docs/benchmarks.md's table from the JSON just written
    print(markdown(record))


if __name__ == "__main__":
    main()
