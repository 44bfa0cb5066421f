"""State fed back between calls: which inputs are state, each output's batch axis, and stream evaluation.

A streaming model (voice activity, keyword spotting) takes a chunk and its previous state and returns a decision
and its next state. Evaluated one batch at a time such a model looks fine; over a stream, errors in the state
compound. ``evaluate_stream`` runs N consecutive chunks with each runtime's own state fed back and measures every
step against eager PyTorch doing the same.

Example:
    >>> spec = describe_io(handle, batch_axes={"state": 1}, declared={"state": "output_1"})
    >>> spec.state
    (('state', 1),)
    >>> stream = evaluate_stream(handle, plan, {"int8-onnx": open_runner("model.int8.onnx", spec=spec)})
    >>> stream["artifacts"]["int8-onnx"]["decision_agreement"]
    0.97
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from compress.errors import UsageError
from compress.data.evaluate import fidelity
from compress.loading.spec import InputSpec

DEFAULT_STEPS = 32
STATE_NAME = re.compile(r"(state|hidden|memory|cache)|(^|_)[hc](_?\d+|_in|_0)?($|_)", re.IGNORECASE)
PROBE_BATCHES = (3, 1)  # two batch sizes no state dimension is likely to equal both of


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


def describe_io(handle, batch_axes: dict[str, int], declared: dict[str, str]) -> InputSpec:
    """``handle``'s spec with declared batch axes, each output's batch axis and the state pairs (declared or inferred)."""
    spec = handle.input_spec.with_batch_axes(batch_axes) if batch_axes else handle.input_spec
    shapes = _output_shapes(handle, spec)
    if shapes is None:
        return spec
    first, second = shapes
    if spec.fixed_batch:  # one batch only: an output shaped like an input has that input's batch axis
        inputs = {tuple(t.shape[:t.batch_axis]) + (spec.fixed_batch,) + tuple(t.shape[t.batch_axis + 1:]): t.batch_axis
                  for t in spec.tensors}
        axes = tuple(inputs.get(tuple(shape), 0) for shape in first)
    else:
        axes = tuple(_changed_axis(a, b) for a, b in zip(first, second))
    spec = replace(spec, output_axes=axes)
    names = [f"output_{i}" for i in range(len(first))]
    heads = [h.name for h in handle.heads]
    notes = list(spec.inferred)
    if spec.fixed_batch:
        notes.append(f"fixed batch: the program runs at batch {spec.fixed_batch} only, so data is fed in chunks of "
                     f"{spec.fixed_batch} (the last padded, the padding discarded) and every export keeps that batch")
    pairs = []
    for name, output in declared.items():
        if name not in spec.names:
            raise UsageError(f"--state names input {name!r}, but the model's inputs are {', '.join(spec.names)}")
        index = _output_index(output, names, heads)
        tensor = spec.tensors[spec.names.index(name)]
        if tuple(np.delete(first[index], axes[index])) != tensor.sample_shape:
            raise UsageError(f"--state {name}={output}: output {names[index]} has shape {first[index]}, input {name!r} "
                             f"{tuple(tensor.shape)}; a state output must have its input's shape")
        pairs.append((name, index))
    if not declared:
        for tensor in spec.tensors:
            matches = [i for i, shape in enumerate(first) if tuple(np.delete(shape, axes[i])) == tensor.sample_shape
                       and axes[i] == tensor.batch_axis and i not in [p for _, p in pairs]]
            if STATE_NAME.search(tensor.name) and len(matches) == 1:
                pairs.append((tensor.name, matches[0]))
                notes.append(f"inferred state: input {tensor.name!r} is fed back from {names[matches[0]]} (same shape, "
                             f"state-like name); declare --state to change it")
    return replace(spec, state=tuple(pairs), inferred=tuple(notes))


def _output_index(output: str, names: list[str], heads: list[str]) -> int:
    if output.isdigit() and int(output) < len(names):
        return int(output)
    for candidates in (names, heads):
        if output in candidates:
            return candidates.index(output)
    raise UsageError(f"--state: the model has no output {output!r}; its outputs are {', '.join(names)}")


def _output_shapes(handle, spec: InputSpec) -> tuple[list[tuple], list[tuple]] | None:
    """Output shapes at two batch sizes (the same twice for a fixed-batch program), or None for ONNX sources."""
    if handle.module is None:
        return _onnx_output_shapes(handle.onnx_path)
    import torch

    from compress.passes.training import as_tuple, set_mode

    set_mode(handle.module, False)
    batches = (spec.fixed_batch,) * 2 if spec.fixed_batch else PROBE_BATCHES
    shapes = []
    with torch.no_grad():
        for batch in batches:
            try:
                outputs = as_tuple(handle.module(*spec.example_inputs(batch=batch)))
            except Exception:  # the model cannot run on the spec's shapes: loading still succeeds, later steps say why
                return None
            shapes.append([tuple(o.shape) for o in outputs])
    return shapes[0], shapes[1]


def _onnx_output_shapes(path: str) -> tuple[list[tuple], list[tuple]]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    shapes = [tuple(d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim) for v in model.graph.output]
    return shapes, [tuple(-2 if d == -1 else d for d in s) for s in shapes]


def _changed_axis(first: tuple, second: tuple) -> int:
    changed = [i for i, (a, b) in enumerate(zip(first, second)) if a != b]
    return changed[0] if len(changed) == 1 else 0


# --- stream evaluation ----------------------------------------------------------------------------------------------


def stream_chunks(spec: InputSpec, plan, steps: int = DEFAULT_STEPS, seed: int = 0) -> tuple[list[tuple], str]:
    """``steps`` consecutive chunks of the non-state inputs (model layout) and where they come from.

    From the data in its order when the run has data (``"data"``), else random chunks (``"random"``).
    """
    batch = spec.fixed_batch or 1
    state_names = {name for name, _ in spec.state}
    dataset = plan.test if plan.test is not None else None
    source = "data"
    if dataset is None or dataset.size < steps * batch:
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
                agree = [float(np.mean(a == b)) if b is not None else 0.0 for a, b in zip(ref, cand)]
                entry["decision_agreement"] = round(float(np.mean(agree)), 6)
                entry["decision_agreement_first_last"] = [round(float(np.mean(agree[:quarter])), 6), round(float(np.mean(agree[-quarter:])), 6)]
        outputs.append(entry)
    decided = [o["decision_agreement"] for o in outputs if "decision_agreement" in o]
    return {"outputs": outputs, "decision_agreement": min(decided) if decided else None,
            "min_sqnr_db": min(min(o["sqnr_db"]) for o in outputs),
            "last_sqnr_db": min(o["drift_sqnr_db"]["last"] for o in outputs)}


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
