"""State fed back between calls: the ``--batch-axis``/``--state`` options, and stream evaluation (which inputs are
state, and each output's batch axis, are found when the model loads: compress.loading.describe).

A streaming model (voice activity, keyword spotting) takes a chunk and its previous state and returns a decision
and its next state. Evaluated one batch at a time such a model looks fine; over a stream, errors in the state
compound. ``evaluate_stream`` runs N consecutive chunks with each runtime's own state fed back and measures every
step against eager PyTorch doing the same; the streamed decisions that agree are gated (compress.steps.resolve).

Example:
    >>> spec = load_model("vad.pt2", batch_axes=parse_batch_axes(["state=1"])).input_spec
    >>> stream = evaluate_stream(handle, plan, {"int8-onnx": open_runner("model.int8.onnx", spec=spec)})
    >>> stream["artifacts"]["int8-onnx"]["decision_agreement"]
    0.97
"""
from __future__ import annotations

import numpy as np

from compress.errors import UsageError
from compress.data.evaluate import fidelity
from compress.data.intervals import wilson
from compress.loading.spec import InputSpec

DEFAULT_STEPS = 256  # decisions enough for a 0.98 agreement floor to be resolved (190 agreeing of 190 clear it)
MIN_DATA_STEPS = 32  # fewer chunks of data than this: a random stream instead (too short to say anything)


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["state=1"]`` -> ``{"state": "1"}`` for ``--batch-axis`` / ``--state``; a UsageError for anything else."""
    pairs = {}
    for value in values or []:
        name, sep, other = value.partition("=")
        if not sep or not name.strip() or not other.strip():
            raise UsageError(f"bad {option} {value!r}; write it like {option} {'state=1' if option == '--batch-axis' else 'h_in=output_1'}")
        pairs[name.strip()] = other.strip()
    return pairs


def parse_batch_axes(values: list[str] | None) -> dict[str, int]:
    pairs = parse_pairs(values, "--batch-axis")
    try:
        return {name: int(axis) for name, axis in pairs.items()}
    except ValueError:
        raise UsageError(f"bad --batch-axis {values}: the axis is a number, e.g. --batch-axis state=1") from None


# --- stream evaluation ----------------------------------------------------------------------------------------------


def stream_chunks(spec: InputSpec, plan, steps: int = DEFAULT_STEPS, seed: int = 0) -> tuple[list[tuple], str]:
    """Up to ``steps`` consecutive chunks of the non-state inputs (model layout) and where they come from.

    From the test data in its order when it holds at least ``MIN_DATA_STEPS`` chunks (``"data"``; as many as it has,
    at most ``steps``), else ``steps`` random chunks (``"random"``).
    """
    batch = spec.fixed_batch or 1
    state_names = {name for name, _ in spec.state}
    dataset = plan.test if plan.test is not None else None
    source = "data"
    if dataset is None or dataset.size < MIN_DATA_STEPS * batch:
        dataset, source = spec.random_dataset(steps * batch, seed), "random"
    chunks = []
    for step, (inputs, _) in enumerate(dataset.batches(batch)):
        if step == steps:
            break
        chunks.append(tuple(None if t.name in state_names else a for t, a in zip(spec.tensors, inputs)))
    return chunks, source


def run_stream(runner, spec: InputSpec, chunks: list[tuple]) -> list[list[np.ndarray]]:
    """Each step's outputs, the state inputs fed back from the runner's own previous outputs (zeros at first)."""
    batch = spec.fixed_batch or 1
    state = {name: np.moveaxis(np.zeros((batch, *t.sample_shape), t.dtype), 0, t.batch_axis)
             for t in spec.tensors for name, _ in spec.state if t.name == name}
    steps = []
    for chunk in chunks:
        inputs = tuple(state[t.name] if a is None else a for t, a in zip(spec.tensors, chunk))
        outputs = [np.asarray(o, dtype=np.float32) for o in runner.run(inputs)]
        for name, index in spec.state:
            state[name] = outputs[index].astype(state[name].dtype)
        steps.append(outputs)
    return steps


def decisions(output: np.ndarray, axis: int) -> np.ndarray | None:
    """The decision an output carries: argmax over classes, or > 0.5 for one sigmoid value per sample; else None."""
    samples = np.moveaxis(output, axis, 0).reshape(output.shape[axis], -1)
    if samples.shape[1] > 1:
        return samples.argmax(1)
    if samples.size and samples.min() >= 0.0 and samples.max() <= 1.0:
        return samples[:, 0] > 0.5
    return None


def compare_streams(spec: InputSpec, reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> dict:
    """Per-step SQNR/cosine of each output, decision agreement, and drift (first vs last quarter of the steps)."""
    axes = spec.output_axes or (0,) * len(reference[0])
    state_outputs = {index for _, index in spec.state}
    outputs = []
    for index, axis in enumerate(axes):
        per_step = [fidelity(np.moveaxis(r[index], axis, 0), np.moveaxis(c[index], axis, 0)) for r, c in zip(reference, candidate)]
        sqnr = [f["sqnr_db"] for f in per_step]
        quarter = max(1, len(sqnr) // 4)
        entry = {"output": f"output_{index}", "kind": "state" if index in state_outputs else "output",
                 "sqnr_db": sqnr, "cosine": [f["cosine"] for f in per_step],
                 "drift_sqnr_db": {"first": round(float(np.mean(sqnr[:quarter])), 3), "last": round(float(np.mean(sqnr[-quarter:])), 3)}}
        agree = None
        if index not in state_outputs:
            ref, cand = [decisions(r[index], axis) for r in reference], [decisions(c[index], axis) for c in candidate]
            if all(d is not None for d in ref):
                same = [(a == b) if b is not None else np.zeros(len(a), bool) for a, b in zip(ref, cand)]
                agree = [float(np.mean(s)) for s in same]
                entry["decision"] = "threshold" if ref[0].dtype == bool else "argmax"
                entry["decision_agreement"] = round(float(np.mean(agree)), 6)
                entry["decisions"], entry["decisions_agreed"] = int(sum(s.size for s in same)), int(sum(s.sum() for s in same))
                entry["interval"] = wilson(entry["decisions_agreed"], entry["decisions"])
                entry["decision_agreement_first_last"] = [round(float(np.mean(agree[:quarter])), 6), round(float(np.mean(agree[-quarter:])), 6)]
        outputs.append(entry)
    decided = [o for o in outputs if "decision_agreement" in o]
    weakest = min(decided, key=lambda o: o["decision_agreement"]) if decided else {}
    return {"outputs": outputs, "decision_agreement": weakest.get("decision_agreement"),
            **{key: weakest[key] for key in ("decisions", "decisions_agreed", "interval") if key in weakest},
            "min_sqnr_db": min(min(o["sqnr_db"]) for o in outputs),
            "last_sqnr_db": min(o["drift_sqnr_db"]["last"] for o in outputs)}


DECISION_KINDS = ("classes", "probabilities")  # an argmax is a decision of these kinds only (not of an embedding)


def stream_metrics(result: dict, kinds: list[str] | None = None) -> dict:
    """What an artifact's stream gate judges (report.json ``metrics.stream``, compress.steps.resolve.stream_gate): the
    weakest streamed decision of the outputs that make one (``kinds``: each output's kind; an argmax of class scores,
    or one probability read against 0.5), with its counts and interval."""
    if "error" in result:
        return {"error": result["error"]}
    decided = [o for i, o in enumerate(result["outputs"]) if "decision_agreement" in o
               and (o["decision"] == "threshold" or kinds is None or (i < len(kinds) and kinds[i] in DECISION_KINDS))]
    weakest = min(decided, key=lambda o: o["decision_agreement"]) if decided else {}
    keys = ("decision_agreement", "decisions", "decisions_agreed", "interval")
    return {"output": weakest.get("output"), **{key: weakest[key] for key in keys if key in weakest}, "min_sqnr_db": result["min_sqnr_db"]}


def evaluate_stream(handle, plan, runners: dict, steps: int = DEFAULT_STEPS, seed: int = 0) -> dict | None:
    """The report's ``streams`` section: every runner (artifact name -> runner) against eager PyTorch over one
    stream of ``steps`` chunks with its own state fed back; None when the model has no state."""
    spec = handle.input_spec
    if not spec.state or handle.module is None:
        return None
    from compress.backends.pytorch.session import TorchRunner

    chunks, source = stream_chunks(spec, plan, steps, seed)
    reference = run_stream(TorchRunner.from_module(handle.module, spec), spec, chunks)
    artifacts = {}
    for name, runner in runners.items():
        try:
            artifacts[name] = {"runtime": runner.name, **compare_streams(spec, reference, run_stream(runner, spec, chunks))}
        except UsageError as exc:
            artifacts[name] = {"runtime": runner.name, "error": str(exc)}
    return {"steps": len(chunks), "batch": spec.fixed_batch or 1, "chunks": source,
            "state": [{"input": name, "output": f"output_{index}"} for name, index in spec.state],
            "inferred": list(spec.inferred), "artifacts": artifacts}
