"""What a model path (and a ``--data`` file) must be before anything heavy loads: an existing, readable file of a kind
compress reads.

Checked by every verb that takes a model (compress.commands._options) before torch is imported, so a wrong path is
answered at once, and again by compress.loading.model.load_model for callers of the Python API.

Example:
    >>> check_model_file(Path("missing.pt2"))
    Traceback (most recent call last):
    compress.errors.UsageError: model file missing.pt2 not found; check the path (...)
"""
from __future__ import annotations

import os
from pathlib import Path

from compress.errors import UsageError
from compress.safety.io import refuse_bad_link

FOREIGN_FORMATS = {
    ".tflite": "a TFLite file is an output of compress, not an input",
    ".pte": "an ExecuTorch program is an output, not an input",
    ".h5": "Keras models are not supported", ".keras": "Keras models are not supported",
    ".pb": "TensorFlow graphs are not supported", ".mlmodel": "Core ML models are not supported",
}


def check_model_file(path: Path) -> None:
    """UsageError unless ``path`` is a readable file in a format compress may read (its contents are checked later)."""
    refuse_bad_link(path, "model")  # a symlink loop, or a link to nothing, said as such (not "not found")
    from compress.lm.model import is_language_model

    if is_language_model(path):  # a decoder LM directory or .gguf: compress.lm.model.load_lm checks its files
        return
    if not path.is_file():
        raise UsageError(f"model file {path} not found; check the path (train one with `compress zoo train mnist_cnn`)")
    if path.suffix.lower() in FOREIGN_FORMATS:
        raise UsageError(f"{path}: {FOREIGN_FORMATS[path.suffix.lower()]}; give the PyTorch model (checkpoint, TorchScript, "
                         ".pt2, state_dict with --arch) or an .onnx file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"model file {path} is not readable; check its permissions")


def check_data_file(spec: str) -> None:
    """UsageError when ``spec`` names an ``.npz`` file (``--data``) that is not there or not readable; built-in names,
    folders and ``package.module:function`` are resolved later (compress.data.registry)."""
    path = Path(spec)
    if path.suffix.lower() != ".npz":
        return
    refuse_bad_link(path, "--data")
    if not path.is_file():
        raise UsageError(f"data file {path} not found; check the path (an .npz with an 'x' array, see `compress quantize --help`)")
    if not os.access(path, os.R_OK):
        raise UsageError(f"data file {path} is not readable; check its permissions")
