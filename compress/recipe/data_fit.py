"""Does a recipe's data fit its model's inputs? Names, dtypes and shapes, checked before anything runs.

A ``.npz`` holds one array per model input, in order: ``x`` for the first input, ``x1``, ``x2`` ... for the others
(compress.data.registry), each sample-first or in the model's own layout; ``y`` (optional) holds the labels.

Example:
    >>> array_mismatches(InputSpec((TensorSpec("tokens", (-1, 16), "int64"),)), {"x": np.zeros((100, 16), np.float32)})
    ["array 'x' (input 'tokens'): dtype float32, but the input takes int64 (integer values)"]
    >>> npz_layout(InputSpec((TensorSpec("tokens", (-1, 16), "int64"),)))
    'x = int64 (N, 16) for input tokens'
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import UsageError
from compress.loading.spec import InputSpec, TensorSpec

MIN_SAMPLES = 10  # compress.data.plan refuses fewer: calibration and test must not overlap


def npz_key(index: int) -> str:
    return "x" if index == 0 else f"x{index}"


def shape_text(tensor: TensorSpec) -> str:
    """``(N, 3, 64, 64)``: the shape of a sample-first array for ``tensor``, N the number of samples."""
    return "(" + ", ".join(["N", *("?" if d < 0 else str(d) for d in tensor.sample_shape)]) + ")"


def npz_layout(spec: InputSpec) -> str:
    """What a .npz for this model must hold, one clause per input: ``x = float32 (N, 10) for input features; ...``."""
    return "; ".join(f"{npz_key(i)} = {t.dtype} {shape_text(t)} for input {t.name}" for i, t in enumerate(spec.tensors))


def _kind(dtype) -> str:
    dtype = np.dtype(dtype)
    return "bool" if dtype == np.bool_ else "float" if np.issubdtype(dtype, np.floating) else \
        "integer" if np.issubdtype(dtype, np.integer) else dtype.name


def _fits(tensor: TensorSpec, shape: tuple[int, ...]) -> bool:
    """Sample-first, or in the model's layout (batch on ``tensor.batch_axis``); -1 dims take any size."""
    def same(sample: tuple[int, ...]) -> bool:
        return len(sample) == len(tensor.sample_shape) and all(w < 0 or w == s for w, s in zip(tensor.sample_shape, sample))

    return same(tuple(shape[1:])) or (tensor.batch_axis > 0 and len(shape) == len(tensor.shape)
                                      and same(tuple(np.delete(shape, tensor.batch_axis))))


def array_mismatches(spec: InputSpec, arrays: dict[str, np.ndarray]) -> list[str]:
    """One line per way ``arrays`` (npz key -> array) fail the model's inputs; ``[]`` when they fit.

    State inputs fed back from outputs may be left out (compress starts them at zeros).
    """
    problems, state = [], {name for name, _ in spec.state}
    inputs = {npz_key(i): t for i, t in enumerate(spec.tensors)}
    order = ", ".join(f"{key} = {t.name}" for key, t in inputs.items())
    for key, tensor in inputs.items():
        if key not in arrays:
            if tensor.name not in state:
                problems.append(f"no array {key!r} for input {tensor.name!r}: save {key} = {tensor.dtype} {shape_text(tensor)}")
            continue
        array = arrays[key]
        if _kind(array.dtype) != _kind(tensor.dtype):
            problems.append(f"array {key!r} (input {tensor.name!r}): dtype {array.dtype}, but the input takes {tensor.dtype} "
                            f"({_kind(tensor.dtype)} values)")
        if not _fits(tensor, array.shape):
            problems.append(f"array {key!r} (input {tensor.name!r}): shape {tuple(array.shape)}, but the input takes "
                            f"{shape_text(tensor)} (sample-first)")
    for key in arrays.keys() - inputs.keys() - {"y"}:
        problems.append(f"array {key!r} is not read: inputs are saved by position ({order}), labels as y")
    sizes = {len(a) for k, a in arrays.items() if k in inputs and a.ndim}
    if sizes and max(sizes) < MIN_SAMPLES:
        problems.append(f"only {max(sizes)} samples: give at least {MIN_SAMPLES} (calibration and test must not overlap)")
    return problems


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz, as stored (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as exc:  # zipfile/ValueError/OSError: not a readable npz
        raise UsageError(f"{path} is not a readable .npz ({type(exc).__name__}); save it with numpy.savez") from None


def data_mismatches(spec: InputSpec, data: str) -> list[str] | None:
    """Mismatches between ``data`` (a recipe's ``data.name``) and the model's inputs; None when this kind of data is
    not checked here (an image folder is resized to the model, a callable runs only with --trust-code)."""
    from compress.data.registry import BUILTIN_DATASETS, load_dataset

    if data in BUILTIN_DATASETS:
        return array_mismatches(spec, {npz_key(i): x for i, x in enumerate(load_dataset(data).x)})
    if data.endswith(".npz"):
        if not Path(data).is_file():
            return [f"no such file: save it with numpy.savez: {npz_layout(spec)}; y = labels (optional)"]
        return array_mismatches(spec, read_npz(Path(data)))
    return None


def recipe_inputs(recipe) -> InputSpec | str:
    """The inputs of a recipe's model, read without running code from it; a string says why they were not read
    (a pickle or an imported class needs the --trust-* flags of `compress run`)."""
    from compress.loading.model import load_model
    from compress.zoo.registry import ZOO

    model = recipe.model
    source = model.source
    if source.startswith("zoo:") and source[4:] in ZOO:
        return ZOO[source[4:]].input_spec
    if model.trust_pickle or (model.arch and ":" in model.arch):
        return "its model loads only with --trust-pickle or --trust-code"
    return load_model(source, arch=model.arch, arch_kwargs=model.arch_kwargs, input_shapes=model.input_shapes or None,
                      batch_axes=model.batch_axes, state=model.state).input_spec
