"""A loaded model's inputs and outputs described: batch axes declared or inferred, each output's batch axis, and
which outputs are state fed back to which inputs (declared with ``--state`` or inferred from shapes and names).

Example:
    >>> spec = describe_io(handle, batch_axes={"state": 1}, declared={"state": "output_1"})
    >>> spec.state
    (('state', 1),)
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from compress.errors import UsageError
from compress.loading.spec import InputSpec

STATE_NAME = re.compile(r"(state|hidden|memory|cache)|(^|_)[hc](_?\d+|_in|_0)?($|_)", re.IGNORECASE)
PROBE_BATCHES = (3, 1)  # two batch sizes no state dimension is likely to equal both of


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
