"""Find a dataset by name, file or callable.

Accepted forms of ``--data``:
  * a built-in name (``digits28``, ``diabetes``, ...; ``compress zoo list`` shows which model uses which);
  * ``path/to/file.npz`` with an ``x`` array (and ``x1``, ``x2`` ... for more inputs) and optional ``y``;
  * ``path/to/folder`` of images in class sub-folders;
  * ``package.module:function`` returning an iterable of input batches or (inputs, labels) pairs.

Example:
    >>> resolve_data("digits8").name
    'digits8'
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import numpy as np

from compress.loading.archive import is_zip, zip_entries
from compress.data import builtin
from compress.data.dataset import Dataset, Head
from compress.data.validate import check_dataset, check_dtype
from compress.errors import UsageError
from compress.limits import MAX_DATA_BYTES

BUILTIN_DATASETS: dict[str, Callable[[], Dataset]] = {
    "digits8": builtin.digits8,
    "digits28": builtin.digits28,
    "digits64rgb": builtin.digits64rgb,
    "digits_seq": builtin.digits_seq,
    "digits_tokens": builtin.digits_tokens,
    "digits_multitask": builtin.digits_multitask,
    "diabetes": builtin.diabetes,
}

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_dataset(name: str) -> Dataset:
    """A built-in dataset by name."""
    if name not in BUILTIN_DATASETS:
        raise UsageError(f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name]()


def resolve_data(spec: str, image_shape: tuple[int, int, int] | None = None, layout=None) -> Dataset:
    """Turn a ``--data`` value into a checked Dataset (see the module docstring for the forms; compress.data.validate).

    ``layout``: the model's InputSpec; a .npz whose arrays are in the model's layout (a state ``(layers, B, H)``,
    batch on axis 1) is read sample-first by it.
    """
    return check_dataset(_load(spec, image_shape, layout))


def _load(spec: str, image_shape: tuple[int, int, int] | None, layout=None) -> Dataset:
    if spec in BUILTIN_DATASETS:
        return load_dataset(spec)
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path, layout)
    if path.is_dir():
        return load_image_folder(path, image_shape)
    if names_callable(spec):
        return load_callable(spec)
    if not path.exists():
        raise UsageError(
            f"data {spec!r} not found: give a built-in name ({', '.join(BUILTIN_DATASETS)}), "
            "an existing .npz, an image folder or package.module:function"
        )
    raise UsageError(f"data {spec!r}: unsupported kind of file; use a .npz with an 'x' array or an image folder")


def names_callable(spec: str) -> bool:
    """True when ``spec`` is ``package.module:function`` (code to import), not a built-in name, .npz or existing path."""
    path = Path(spec)
    return spec not in BUILTIN_DATASETS and path.suffix != ".npz" and ":" in spec and not path.exists()


def load_npz(path: Path, layout=None) -> Dataset:
    """``x`` (and ``x1``, ``x2`` ...) and optional ``y`` from ``path``; ``layout`` (an InputSpec) moves each input's
    batch axis first when the arrays are in the model's layout."""
    if not path.is_file():
        raise UsageError(f"data file {path} not found; check the path")
    _check_npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # zipfile/ValueError/OSError: the file is not a readable npz
        raise UsageError(f"{path} is not a readable .npz ({type(exc).__name__}); save it with numpy.savez") from None
    if "x" not in arrays:
        raise UsageError(f"{path} has no 'x' array (found: {', '.join(arrays) or 'nothing'}); save inputs as x=..., labels as y=...")
    extra = sorted((k for k in arrays if k[0] == "x" and k[1:].isdigit()), key=lambda k: int(k[1:]))
    given = x = tuple(_as_input(check_dtype(arrays[k], k, str(path))) for k in ["x", *extra])
    if layout is not None:
        x = layout.samples_first(x, str(path))
    y = None
    heads: tuple[Head, ...] = ()
    if "y" in arrays:
        head, labels = _labels("y", check_dtype(arrays["y"], "y", str(path)))
        heads, y = (head,), (labels,)
    try:
        return Dataset(path.stem, x, y, heads, meta={"path": str(path)})
    except ValueError:
        names = [*["x", *extra][:len(given)], *(["y"] if y else [])]
        raise UsageError(sample_count_message(str(path), names, [*given, *(y or ())])) from None


def sample_count_message(where: str, names: list[str], arrays: list[np.ndarray]) -> str:
    """The one line for arrays whose first axes disagree: each array's shape, and ``--batch-axis`` for an input whose
    batch is not on axis 0.

    Example:
        >>> sample_count_message("vad.npz", ["x", "x1"], [np.zeros((300, 40)), np.zeros((2, 300, 128))])
        'vad.npz: arrays disagree on the number of samples (first axis): x (300, 40), x1 (2, 300, 128); ...'
    """
    shapes = ", ".join(f"{name} {tuple(array.shape)}" for name, array in zip(names, arrays))
    return (f"{where}: arrays disagree on the number of samples (first axis): {shapes}; give every array sample-first, "
            "or, for an input whose batch is on another axis (a state (layers, batch, hidden)), name it with "
            "--batch-axis INPUT=AXIS (e.g. --batch-axis state=1)")


def _check_npz_size(path: Path) -> None:
    """UsageError unless the .npz has one reading (compress.loading.archive) and its arrays inflate to at most MAX_DATA_BYTES;
    numpy reads no entry past its declared size, so this bounds what loading costs."""
    if not is_zip(path):
        raise UsageError(f"{path} is not a readable .npz (not a zip archive); save it with numpy.savez")
    total = sum(entry.size for entry in zip_entries(path))
    if total > MAX_DATA_BYTES:
        raise UsageError(f"{path}: its arrays inflate to {total:,} bytes, over the {MAX_DATA_BYTES:,} compress reads "
                         "(compress.limits.MAX_DATA_BYTES); save fewer samples: a few thousand calibrate and test a model")


def _labels(name: str, labels: np.ndarray) -> tuple[Head, np.ndarray]:
    """Integer labels are classes (0..max), anything else is a regression target."""
    if np.issubdtype(labels.dtype, np.integer):
        return Head(name, "classification", int(labels.max()) + 1 if labels.size else 0), labels.astype(np.int64)
    return Head(name, "regression"), labels.astype(np.float32)


def _as_input(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return array.astype(np.int64)


def load_image_folder(root: Path, image_shape: tuple[int, int, int] | None = None) -> Dataset:
    """Images in ``root/<class>/*.png``; resized to ``image_shape`` (C, H, W) when given."""
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UsageError(f"{root} has no class sub-folders; put images in {root}/<class-name>/*.png")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    channels = image_shape[0] if image_shape else (1 if image.mode in ("L", "1") else 3)
                    image = image.convert("L" if channels == 1 else "RGB")
                    if image_shape:
                        image = image.resize((image_shape[2], image_shape[1]))
                    array = np.asarray(image, dtype=np.float32) / 255.0
            except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
                raise UsageError(f"image {file} is corrupt or not an image ({type(exc).__name__}); fix or remove it") from None
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise UsageError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len({im.shape for im in images}) > 1:
        raise UsageError(f"images in {root} differ in size; pass an input shape so they can be resized")
    return Dataset(
        root.name,
        (np.stack(images),),
        (np.asarray(labels, dtype=np.int64),),
        (Head("class", "classification", len(classes)),),
        meta={"path": str(root), "classes": classes},
    )


def load_callable(spec: str) -> Dataset:
    """``package.module:function`` returning batches.

    Each batch is an array (one input), a tuple of arrays (several inputs), or a dict
    ``{"x": array-or-tuple, "y": array-or-tuple}`` when labels come along.
    """
    module_name, _, attr = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot import data function {spec!r}: {exc}") from None
    xs: list[tuple[np.ndarray, ...]] = []
    ys: list[tuple[np.ndarray, ...]] = []
    where = f"data function {spec!r}"
    try:
        for batch in function():
            inputs, labels = (batch.get("x"), batch.get("y")) if isinstance(batch, dict) else (batch, None)
            xs.append(tuple(_as_input(check_dtype(np.asarray(a), "x", where)) for a in _as_tuple(inputs)))
            if labels is not None:
                ys.append(tuple(check_dtype(np.asarray(a), "y", where) for a in _as_tuple(labels)))
    except UsageError:
        raise
    except Exception as exc:  # the user's function failed: their code, their input
        raise UsageError(f"{where} failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}") from None
    if not xs:
        raise UsageError(f"{where} yielded no batches")
    try:
        x = tuple(np.concatenate(parts) for parts in zip(*xs))
        y = tuple(np.concatenate(parts) for parts in zip(*ys)) if ys and len(ys) == len(xs) else None
    except ValueError as exc:
        raise UsageError(f"{where}: its batches do not stack ({exc}); yield arrays of one shape per input") from None
    pairs = [_labels(f"y{i}", a) for i, a in enumerate(y or ())]
    heads, y = tuple(head for head, _ in pairs), tuple(labels for _, labels in pairs) or None
    try:
        return Dataset(spec, x, y, heads, meta={"callable": spec})
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
