"""ModelHandle, and loading every source format safely.

Formats: a zoo checkpoint (``.pt``), a TorchScript archive (``torch.jit.save``), a ``torch.export``
program (``.pt2``), a state_dict ``.pt`` with ``arch=`` (``package.module:Class`` or a zoo name), an
``.onnx`` file (no torch module: ONNX paths only), and, only with ``trust_pickle=True``, a fully
pickled ``nn.Module`` (pickles execute code when loaded).

Example:
    >>> handle = load_model("mnist_cnn.pt")
    >>> handle.source_format, handle.input_spec.names
    ('zoo', ['image'])
"""
from __future__ import annotations

import importlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.data import Head
from compress.errors import UsageError
from compress.io import atomic_path, sha256_file
from compress.jsonsafe import dumps
from compress.spec import InputSpec
from compress.zoo.checkpoint import build_from_checkpoint, is_zoo_checkpoint
from compress.zoo.registry import ZOO

# Optional JSON inside a .pt2 (torch.export.save extra_files): {"input_spec", "dataset", "techniques"}, written by
# compress when it saves an intermediate model (e.g. `compress prune`), so a chained command needs no --data.
PROGRAM_METADATA = "compress_handle.json"
SOURCE_FORMATS = ("zoo", "torchscript", "exported_program", "state_dict", "pickle", "onnx")


@dataclass
class ModelHandle:
    """A model on its way through the passes: the module plus what is known about it."""

    module: nn.Module | None
    input_spec: InputSpec
    source_path: str
    source_format: str
    source_sha256: str
    heads: tuple[Head, ...] = ()
    dataset: dict | None = None          # {"name", "split_seed"} for zoo checkpoints
    arch: dict | None = None             # {"name", "config"} when the architecture is known
    onnx_path: str | None = None         # set for .onnx sources
    techniques: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    original: dict | None = None         # {"source", "sha256", "dataset", "metrics"} of the model before the first pass

    def with_module(self, module: nn.Module, technique: str) -> "ModelHandle":
        """The handle of a transformed model: same provenance, one more technique."""
        return replace(self, module=module, techniques=[*self.techniques, technique])

    def source_dict(self) -> dict:
        return {"path": self.source_path, "format": self.source_format, "sha256": self.source_sha256}


def _head_from_name(name: str) -> tuple[Head, ...]:
    from compress.data import load_dataset

    return load_dataset(name).heads


# Model files compress does not take as input, and what to give instead.
FOREIGN_FORMATS = {
    ".tflite": "a TFLite file is an output of compress, not an input",
    ".pte": "an ExecuTorch program is an output, not an input",
    ".h5": "Keras models are not supported", ".keras": "Keras models are not supported",
    ".pb": "TensorFlow graphs are not supported", ".mlmodel": "Core ML models are not supported",
}


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    input_shapes: list[str] | None = None,
    trust_pickle: bool = False,
) -> ModelHandle:
    """Load ``path`` into a ModelHandle; bad input raises UsageError with a one-line fix.

    Checked before anything runs: the file is a format compress reads, every weight is finite, and with
    ``input_shapes`` the model runs on inputs of those shapes and dtypes.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} not found; check the path (train one with `compress zoo train mnist_cnn`)")
    if path.suffix.lower() in FOREIGN_FORMATS:
        raise UsageError(f"{path}: {FOREIGN_FORMATS[path.suffix.lower()]}; give the PyTorch model (checkpoint, TorchScript, "
                         ".pt2, state_dict with --arch) or an .onnx file")
    handle = _read_model(path, arch, arch_kwargs, input_shapes, trust_pickle)
    check_finite_weights(handle)
    if input_shapes and handle.module is not None:
        _check_runs_on_spec(handle, input_shapes)
    return handle


def check_finite_weights(handle: ModelHandle) -> None:
    """UsageError naming the parameters or buffers that hold NaN or infinite values (a diverged or corrupted model)."""
    bad = [name for name, values in _weights(handle) if values.dtype.kind == "f" and not np.isfinite(values).all()]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UsageError(f"{handle.source_path}: non-finite weights (NaN or infinite) in {shown}; "
                         "the model diverged or the file is damaged: retrain or re-save it")


def _weights(handle: ModelHandle):
    """``(name, numpy array)`` of every parameter and buffer (ONNX: every initializer)."""
    if handle.module is not None:
        for name, tensor in handle.module.state_dict().items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                yield name, tensor.detach().float().cpu().numpy()
        return
    import onnx
    from onnx import numpy_helper

    for initializer in onnx.load(handle.onnx_path, load_external_data=False).graph.initializer:
        if initializer.data_location != onnx.TensorProto.EXTERNAL:
            yield initializer.name, numpy_helper.to_array(initializer)


def _check_runs_on_spec(handle: ModelHandle, input_shapes: list[str]) -> None:
    """One forward pass on random inputs of ``--input-shape``: a wrong shape or dtype is named now, not mid-export."""
    try:
        with torch.no_grad():
            handle.module(*handle.input_spec.example_inputs(batch=1))
    except Exception as exc:  # whatever the model raises on these inputs: they do not fit it
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UsageError(f"the model does not run on --input-shape {' '.join(input_shapes)} ({type(exc).__name__}: {first}); "
                         "give the shape and dtype its forward expects") from None


def _read_model(path: Path, arch: str | None, arch_kwargs: dict | None, input_shapes: list[str] | None,
                trust_pickle: bool) -> ModelHandle:
    digest = sha256_file(path)
    override = InputSpec.parse(input_shapes) if input_shapes else None
    if path.suffix == ".onnx":
        return _load_onnx(path, digest, override)
    if zipfile.is_zipfile(path):
        names = zipfile.ZipFile(path).namelist()
        if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
            return _load_torchscript(path, digest, override)
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            return _load_exported_program(path, digest, override)
    payload = _safe_torch_load(path, trust_pickle)
    if isinstance(payload, nn.Module):
        spec = override or _require_spec(path)
        return ModelHandle(payload.eval(), spec, str(path), "pickle", digest)
    if is_zoo_checkpoint(payload):
        module = build_from_checkpoint(payload, str(path))
        dataset = payload.get("dataset")
        return ModelHandle(
            module,
            override or InputSpec.from_list(payload["input_spec"]),
            str(path),
            "zoo",
            digest,
            heads=_head_from_name(dataset["name"]) if dataset else (),
            dataset=dataset,
            arch={"name": payload["arch"], "config": payload["config"]},
            metrics=payload.get("metrics", {}),
        )
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return _load_state_dict(path, digest, payload, arch, arch_kwargs or {}, override)
    raise UsageError(f"{path}: not a model compress can read (zoo checkpoint, TorchScript, .pt2, state_dict with --arch, .onnx)")


PICKLE_START = b"\x80"  # the protocol opcode torch.save's legacy (non-zip) format and pickle protocol >= 2 begin with


def _safe_torch_load(path: Path, trust_pickle: bool):
    if not zipfile.is_zipfile(path) and _first_byte(path) != PICKLE_START:
        # torch.load reports any such file as an unsafe pickle ("Weights only load failed"), which it is not
        raise UsageError(f"{path} is corrupt or truncated (neither a PyTorch archive nor a pickle); re-save it")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
            raise UsageError(f"{path} is corrupt or truncated ({str(exc).splitlines()[0]}); re-save or re-download it") from None
        if not trust_pickle:
            raise UsageError(
                f"{path} is a pickled Python object: loading it would execute code inside the file. "
                "Save a state_dict (pass --arch) or TorchScript/torch.export instead, or pass --trust-pickle if you trust its author"
            ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); re-save it") from None
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # a trusted pickle may still fail to import its classes
        raise UsageError(f"{path}: unpickling failed ({type(exc).__name__}: {exc}); is its defining module importable?") from None


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(1)


def _require_spec(path: Path) -> InputSpec:
    raise UsageError(f"{path} carries no input spec; pass --input-shape, e.g. --input-shape 1x3x64x64")


def _load_torchscript(path: Path, digest: str, override: InputSpec | None) -> ModelHandle:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise UsageError(f"{path} is a corrupt TorchScript archive ({str(exc).splitlines()[0][:160]})") from None
    spec = override or _spec_from_extra_files(path) or _require_spec(path)
    return ModelHandle(module.eval(), spec, str(path), "torchscript", digest)


def _spec_from_extra_files(path: Path) -> InputSpec | None:
    """TorchScript archives may carry ``compress_input_spec.json`` via ``_extra_files``."""
    extra = {"compress_input_spec.json": ""}
    try:
        torch.jit.load(str(path), _extra_files=extra)
    except RuntimeError:
        return None
    return InputSpec.from_list(json.loads(extra["compress_input_spec.json"])) if extra["compress_input_spec.json"] else None


def _load_exported_program(path: Path, digest: str, override: InputSpec | None) -> ModelHandle:
    from compress.spec import TensorSpec

    extra = {PROGRAM_METADATA: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:
        raise UsageError(f"{path} is not a loadable torch.export program ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    meta = json.loads(extra[PROGRAM_METADATA]) if extra[PROGRAM_METADATA] else {}
    if override is None and meta.get("input_spec"):
        override = InputSpec.from_list(meta["input_spec"])
    if override is None:
        tensors = []
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
                value = node.meta.get("val")
                shape = [int(d) if isinstance(d, int) else -1 for d in value.shape]
                shape[0] = -1
                tensors.append(TensorSpec(node.name, tuple(shape), str(value.dtype).replace("torch.", ""), 0, 2))
        override = InputSpec(tuple(tensors))
    dataset = meta.get("dataset")
    return ModelHandle(program.module(), override, str(path), "exported_program", digest,
                       heads=_head_from_name(dataset["name"]) if dataset else (), dataset=dataset,
                       techniques=list(meta.get("techniques", [])), original=meta.get("original"))


def _load_onnx(path: Path, digest: str, override: InputSpec | None) -> ModelHandle:
    import onnx

    from compress.spec import TensorSpec

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UsageError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if override is None:
        initializers = {i.name for i in model.graph.initializer}
        tensors = []
        for value in model.graph.input:
            if value.name in initializers:
                continue
            kind = value.type.tensor_type
            dims = [d.dim_value if d.dim_value > 0 else -1 for d in kind.shape.dim]
            dims[0] = -1
            dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name
            tensors.append(TensorSpec(value.name, tuple(dims), dtype, 0, 2))
        override = InputSpec(tuple(tensors))
    return ModelHandle(None, override, str(path), "onnx", digest, onnx_path=str(path))


def _load_state_dict(path: Path, digest: str, state: dict, arch: str | None, kwargs: dict, override: InputSpec | None) -> ModelHandle:
    if not arch:
        raise UsageError(f"{path} is a state_dict: say which class it belongs to with --arch package.module:Class or a zoo name")
    if arch in ZOO:
        entry = ZOO[arch]
        module = entry.build(**({} if entry.widthless else kwargs))
        spec, heads = entry.input_spec, _head_from_name(entry.dataset)
        arch_info = {"name": arch, "config": kwargs}
    else:
        module_name, _, class_name = arch.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise UsageError(f"cannot import --arch {arch!r} ({exc}); write it as package.module:Class") from None
        module = cls(**kwargs)
        spec, heads, arch_info = None, (), {"name": arch, "config": kwargs}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(f"{path} does not fit --arch {arch} ({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}); check --arch-kwargs") from None
    spec = override or spec or _require_spec(path)
    return ModelHandle(module.eval(), spec, str(path), "state_dict", digest, heads=heads, arch=arch_info)


def save_program(handle, path: Path, original: dict | None = None) -> Path:
    """The model as a torch.export ``.pt2`` (dynamic batch) that carries its input spec, dataset and techniques.

    ``load_model`` on the file restores all three, so a chained command needs no --data or --input-shape.
    ``original`` (else the handle's own) records the model before the first pass and its test metric, so a chained
    command measures degradation against it, not against the already pruned or distilled model.
    """
    example = handle.input_spec.example_inputs(batch=2)
    dims = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in example)
    program = torch.export.export(handle.module, example, dynamic_shapes=dims, strict=False)
    meta = {"input_spec": handle.input_spec.to_list(), "dataset": handle.dataset, "techniques": handle.techniques,
            "original": original or handle.original}
    buffer = io.BytesIO()  # torch.export.save warns about a temporary name not ending in .pt2
    torch.export.save(program, buffer, extra_files={PROGRAM_METADATA: dumps(meta, indent=None)})
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path
