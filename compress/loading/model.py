"""ModelHandle, and loading every source format safely.

Formats: a zoo checkpoint (``.pt``), a TorchScript archive (``torch.jit.save``), a ``torch.export``
program (``.pt2``; one with pickled entries, compiled code or Python in its graph only with ``trust_pickle=True``,
see compress/loading/safe_load.py), a state_dict ``.pt`` with ``arch=`` (``package.module:Class`` or a zoo name), an
``.onnx`` file (no torch module: ONNX paths only), and, only with ``trust_pickle=True``, a fully
pickled ``nn.Module`` (pickles execute code when loaded). Every zip among them must have one reading and bounded
sizes first (compress/loading/archive.py); a ``.pt2`` whose outputs are a transformers ``ModelOutput`` returns plain tensors.

Example:
    >>> handle = load_model("mnist_cnn.pt")
    >>> handle.source_format, handle.input_spec.names
    ('zoo', ['image'])
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.loading.archive import is_zip, zip_entries
from compress.data import Head
from compress.errors import UsageError
from compress.safety.io import atomic_path, sha256_file
from compress.safety.jsonsafe import dumps, parse_json
from compress.loading.model_file import check_model_file
from compress.loading.spec import InputSpec
from compress.zoo.checkpoint import build_from_checkpoint, is_zoo_checkpoint
from compress.zoo.registry import ZOO
from compress.catalog import Technique, technique_record

# Optional JSON inside a .pt2 (torch.export.save extra_files): {"input_spec", "dataset", "techniques"}, written by
# compress when it saves an intermediate model (e.g. `compress prune`), so a chained command needs no --data.
PROGRAM_METADATA = "compress_handle.json"


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
    techniques: list[Technique | dict | str] = field(default_factory=list)  # dicts/labels: read back from files
    metrics: dict = field(default_factory=dict)
    original: dict | None = None         # {"source", "sha256", "dataset", "metrics"} of the model before the first pass
    output_kinds: dict[str, str] = field(default_factory=dict)  # declared kinds by output name (--output-kind)

    def with_module(self, module: nn.Module, technique: Technique | dict | str) -> "ModelHandle":
        """The handle of a transformed model: same provenance, one more technique."""
        return replace(self, module=module, techniques=[*self.techniques, technique])

    def source_dict(self) -> dict:
        return {"path": self.source_path, "format": self.source_format, "sha256": self.source_sha256}


def _head_from_name(name: str) -> tuple[Head, ...]:
    from compress.data import load_dataset

    return load_dataset(name).heads


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    input_shapes: list[str] | None = None,
    trust_pickle: bool = False,
    batch_axes: dict[str, int] | None = None,
    state: dict[str, str] | None = None,
    data: str | None = None,
) -> ModelHandle:
    """Load ``path`` into a ModelHandle; bad input raises UsageError with a one-line fix.

    ``batch_axes`` (``--batch-axis state=1``): inputs whose batch is not on axis 0 (else inferred from the export's
    dynamic dims). ``state`` (``--state h_in=output_1``): inputs fed back from outputs (else inferred, conservatively).
    ``data``: where a file carries no input spec, a .npz whose arrays give names, shapes and dtypes.
    Checked before anything runs: the file is a format compress reads, every weight is finite, and with
    ``input_shapes`` the model runs on inputs of those shapes and dtypes.
    """
    handle = _load(Path(path), arch, arch_kwargs, input_shapes, trust_pickle, batch_axes or {}, data)
    from compress.loading.describe import describe_io

    handle.input_spec = describe_io(handle, batch_axes or {}, state or {})
    return handle


def _load(path: Path, arch, arch_kwargs, input_shapes, trust_pickle, batch_axes: dict[str, int], data) -> ModelHandle:
    check_model_file(path)
    handle = _read_model(path, arch, arch_kwargs, input_shapes, trust_pickle, batch_axes, data)
    check_finite_weights(handle)
    if input_shapes and handle.module is not None:
        _check_runs_on_spec(handle, input_shapes)
    if handle.source_format in ("state_dict", "pickle"):  # the user's own forward code
        from compress.loading.capture import refuse_host_calls

        refuse_host_calls(handle.module, handle.input_spec.example_inputs(batch=1), str(path))
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
                trust_pickle: bool, batch_axes: dict[str, int], data) -> ModelHandle:
    names = [entry.name for entry in zip_entries(path)] if path.suffix != ".onnx" and is_zip(path) else None
    digest = sha256_file(path)
    override = InputSpec.parse(input_shapes, batch_axes) if input_shapes else None
    from_data = (lambda: _spec_from_data(data, batch_axes)) if data else None  # only for files without a spec
    if path.suffix == ".onnx":
        return _load_onnx(path, digest, override, batch_axes)
    if names is not None:
        if any(n.endswith(".npy") for n in names) and not any("/" in n for n in names):
            raise UsageError(f"{path} is a data file (numpy .npz), not a model: pass it as --data, and the model file first")
        if any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names):
            return _load_torchscript(path, digest, override, from_data)
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            return _load_exported_program(path, digest, override, trust_pickle, batch_axes)
    payload = _safe_torch_load(path, trust_pickle)
    if isinstance(payload, nn.Module):
        spec = override or _require_spec(path, payload, from_data)
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
        return _load_state_dict(path, digest, payload, arch, arch_kwargs or {}, override, from_data)
    raise UsageError(f"{path}: not a model compress can read (zoo checkpoint, TorchScript, .pt2, state_dict with --arch, .onnx)")


PICKLE_START = b"\x80"  # the protocol opcode torch.save's legacy (non-zip) format and pickle protocol >= 2 begin with


def _safe_torch_load(path: Path, trust_pickle: bool):
    if not is_zip(path) and _first_byte(path) != PICKLE_START:
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
        with _cwd_importable():
            return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # a trusted pickle may still fail to import its classes
        raise UsageError(f"{path}: unpickling failed ({type(exc).__name__}: {exc}); is its defining module importable?") from None


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(1)


@contextlib.contextmanager
def _cwd_importable():
    """The current directory importable while the block runs: `--arch mymodel:Net` and a trusted pickle whose class
    lives in ./mymodel.py are explicit requests to run that code."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def _require_spec(path: Path, module: nn.Module | None = None, from_data=None) -> InputSpec:
    """The spec --data's arrays give (``from_data``), else a UsageError whose example comes from the model."""
    if from_data is not None:
        return from_data()
    raise UsageError(f"{path} carries no input spec; pass --data with a .npz of real inputs, or --input-shape, "
                     f"e.g. --input-shape {_example_shape(module)}")


def _example_shape(module: nn.Module | None) -> str:
    """An --input-shape guess from the model's first weighted layer (Conv2d: 1xCx32x32, Linear: 1xF, ...), TorchScript
    too; else a placeholder that says what to write."""
    for layer in (module.modules() if module is not None else ()):
        kind = getattr(layer, "original_name", type(layer).__name__)
        weight = getattr(layer, "weight", None) if kind not in ("GRU", "LSTM", "RNN") else getattr(layer, "weight_ih_l0", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
            continue
        shapes = {"Linear": f"1x{weight.shape[1]}", "Conv2d": f"1x{weight.shape[1]}x32x32", "Conv1d": f"1x{weight.shape[1]}x100",
                  "GRU": f"1x10x{weight.shape[1]}", "LSTM": f"1x10x{weight.shape[1]}", "RNN": f"1x10x{weight.shape[1]}",
                  "Embedding": f"1x16:int64:0-{weight.shape[0]}"}
        if kind in shapes:
            return shapes[kind]
    return "1xN (the shape of one input batch)"


def _spec_from_data(data: str, batch_axes: dict[str, int]) -> InputSpec:
    """Input names, shapes and dtypes from a .npz's arrays (``x``, ``x1``, ...), sample axis first."""
    from compress.data import resolve_data
    from compress.loading.spec import TensorSpec

    dataset = resolve_data(data)
    tensors = []
    for index, array in enumerate(dataset.x):
        name = "x" if index == 0 else f"x{index}"
        dtype = str(array.dtype)
        tensors.append(TensorSpec(name, (-1, *array.shape[1:]), dtype, 0, int(array.max()) + 1 if dtype.startswith("int") else 2))
    return InputSpec(tuple(tensors)).with_batch_axes(batch_axes) if batch_axes else InputSpec(tuple(tensors))


def _load_torchscript(path: Path, digest: str, override: InputSpec | None, from_data=None) -> ModelHandle:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise UsageError(f"{path} is a corrupt TorchScript archive ({str(exc).splitlines()[0][:160]})") from None
    spec = override or _spec_from_extra_files(path) or _require_spec(path, module, from_data)
    return ModelHandle(module.eval(), spec, str(path), "torchscript", digest)


def _spec_from_extra_files(path: Path) -> InputSpec | None:
    """TorchScript archives may carry ``compress_input_spec.json`` via ``_extra_files``."""
    extra = {"compress_input_spec.json": ""}
    try:
        torch.jit.load(str(path), _extra_files=extra)
    except RuntimeError:
        return None
    return InputSpec.from_list(parse_json(extra["compress_input_spec.json"], f"{path}: compress_input_spec.json")) if extra["compress_input_spec.json"] else None


def load_program(path: Path, trust_pickle: bool = False, extra_files: dict | None = None, remedy: str | None = None):
    """``torch.export.load``, after :func:`compress.loading.safe_load.check_program_archive` found nothing that runs code."""
    from compress.loading.safe_load import TRUST_HINT, check_program_archive

    from compress.compat import torch_private

    torch_private("torch.ao.quantization.fx._decomposed")  # registers the quantize/dequantize ops of a QAT graph
    check_program_archive(path, trust_pickle, remedy or TRUST_HINT)

    for attempt in range(2):
        with _logged_exceptions("torch.export") as logged:
            try:
                return torch.export.load(str(path), extra_files=extra_files)
            except Exception as exc:
                cause = logged[0] if logged else exc  # torch logs the cause, then raises "check the warnings above"
        unregistered = re.search(r"Deserializing (\S+)\.\w+ in pytree is not registered", str(cause))
        if attempt == 0 and unregistered and unregistered.group(1) in OUTPUT_TYPE_MODULES and _importable(unregistered.group(1)):
            importlib.import_module(unregistered.group(1))  # registers its output classes with torch's pytree
            continue
        first = (str(cause).strip().splitlines() or [""])[0][:160]
        advice = ("; re-export it so that forward returns plain tensors (transformers: return_dict=False)" if unregistered
                  else "; re-export it with torch.export.save")
        raise UsageError(f"{path} is not a loadable torch.export program ({type(cause).__name__}: {first}){advice}") from None


# Modules of output classes (dataclasses) that a program's outputs may name: compress imports one, by this name, only
# when torch says a loaded program needs it. Nothing the file names is imported otherwise.
OUTPUT_TYPE_MODULES = ("transformers.modeling_outputs",)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _logged_exceptions(name: str):
    """The exceptions logger ``name`` logs inside the block (``exc_info``), kept even where the CLI silenced it.

    Example:
        >>> with _logged_exceptions("torch.export") as logged: ...
        >>> logged
        [RuntimeError('PytorchStreamReader failed reading zip archive: ...')]
    """
    logger = logging.getLogger(name)
    found: list[BaseException] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: found.append(record.exc_info[1]) if record.exc_info else None
    quiet = logger.getEffectiveLevel() > logging.WARNING
    level, propagate, handlers = logger.level, logger.propagate, list(logger.handlers)
    logger.addHandler(handler)
    if quiet:  # hear its warnings, but pass none on to the console (torch gives the logger a handler of its own)
        logger.handlers = [handler]
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    try:
        yield found
    finally:
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _load_exported_program(path: Path, digest: str, override: InputSpec | None, trust_pickle: bool,
                           batch_axes: dict[str, int]) -> ModelHandle:
    extra = {PROGRAM_METADATA: ""}
    program = load_program(path, trust_pickle, extra)
    meta = parse_json(extra[PROGRAM_METADATA], f"{path}: {PROGRAM_METADATA}") if extra[PROGRAM_METADATA] else {}
    if override is None and meta.get("input_spec"):
        override = InputSpec.from_list(meta["input_spec"])
    if override is None:
        values = [(node.name, node.meta.get("val")) for node in program.graph.nodes
                  if node.op == "placeholder" and node.name in program.graph_signature.user_inputs]
        override = _spec_from_dims([(name, [int(d) if isinstance(d, int) else None for d in value.shape],
                                     str(value.dtype).replace("torch.", "")) for name, value in values], batch_axes)
    dataset = meta.get("dataset")
    module = program.module()
    out_spec = program.call_spec.out_spec
    if out_spec is not None and out_spec.type not in (None, tuple, list, dict) and hasattr(module.graph._codegen, "pytree_info"):
        module = plain_outputs(module)
    return ModelHandle(module, override, str(path), "exported_program", digest,
                       heads=_head_from_name(dataset["name"]) if dataset else (), dataset=dataset,
                       techniques=list(meta.get("techniques", [])), original=meta.get("original"))


def plain_outputs(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``module`` (a loaded program) made to return its output tensors as a tuple, or the one tensor alone, where it
    returned a container class (a transformers ``ModelOutput``) that compress's passes and exporters do not take.

    Example: ``plain_outputs(program.module())(input_ids)`` is the logits tensor of a SequenceClassifierOutput.
    """
    info = module.graph._codegen.pytree_info
    count = info.out_spec.num_leaves
    flat = torch.utils._pytree.tree_flatten(tuple(range(count)) if count > 1 else 0)[1]
    module.graph._codegen.pytree_info = info._replace(out_spec=flat)
    module.recompile()
    return module


def _spec_from_dims(inputs: list[tuple[str, list[int | None], str]], batch_axes: dict[str, int]) -> InputSpec:
    """The spec of an export whose dims are ints or None (dynamic): each input's batch axis is the declared one,
    else its one dynamic dim, else 0; a program with no dynamic dim runs at one fixed batch."""
    from compress.loading.spec import tensor_from_dims

    unknown = [name for name in batch_axes if name not in [n for n, _, _ in inputs]]
    if unknown:
        raise UsageError(f"--batch-axis names input {unknown[0]!r}, but the model's inputs are {', '.join(n for n, _, _ in inputs)}")
    axes, notes = dict(batch_axes), []
    if inputs and all(d is not None for _, dims, _ in inputs for d in dims):  # a fixed-batch program: no dynamic dim
        first = inputs[0][1]
        batch = first[batch_axes.get(inputs[0][0], 0)] if first else None
        for name, dims, _ in inputs[1:]:
            matches = [i for i, d in enumerate(dims) if d == batch]
            if name not in axes and dims and dims[0] != batch and len(matches) == 1:
                axes[name] = matches[0]
                notes.append(f"inferred batch axis: input {name!r} {tuple(dims)} has the batch ({batch}) of "
                             f"{inputs[0][0]!r} on axis {matches[0]} only; declare --batch-axis {name}=AXIS to change it")
    built = [tensor_from_dims(name, dims, dtype, axes.get(name)) for name, dims, dtype in inputs]
    fixed = built[0][1] if built and all(f is not None for _, f in built) else None
    return InputSpec(tuple(t for t, _ in built), fixed_batch=fixed, inferred=tuple(notes))


def _load_onnx(path: Path, digest: str, override: InputSpec | None, batch_axes: dict[str, int]) -> ModelHandle:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UsageError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if override is None:
        initializers = {i.name for i in model.graph.initializer}
        override = _spec_from_dims([
            (value.name, [d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim],
             onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name)
            for value in model.graph.input if value.name not in initializers], batch_axes)
    return ModelHandle(None, override, str(path), "onnx", digest, onnx_path=str(path))


def _load_state_dict(path: Path, digest: str, state: dict, arch: str | None, kwargs: dict, override: InputSpec | None,
                     from_data=None) -> ModelHandle:
    if not arch:
        raise UsageError(f"{path} is a state_dict: say which class it belongs to with --arch package.module:Class or a zoo name")
    if arch in ZOO:
        entry = ZOO[arch]
        module = entry.build(**({} if entry.widthless else kwargs))
        spec, heads = entry.input_spec, _head_from_name(entry.dataset)
        arch_info = {"name": arch, "config": kwargs}
    else:
        module = _import_arch(arch)(**kwargs)
        spec, heads, arch_info = None, (), {"name": arch, "config": kwargs}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(f"{path} does not fit --arch {arch} ({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}); check --arch-kwargs") from None
    spec = override or spec or _require_spec(path, module, from_data)
    return ModelHandle(module.eval(), spec, str(path), "state_dict", digest, heads=heads, arch=arch_info)


def _import_arch(arch: str) -> type:
    """The class ``--arch`` names: ``package.module:Class`` (the current directory importable too) or
    ``path/to/file.py:Class``."""
    module_name, _, class_name = arch.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise ImportError(f"{file} not found")
            loader_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[file.stem] = module  # so a trusted pickle or torch.export can find the class again
            loader_spec.loader.exec_module(module)
        else:
            with _cwd_importable():
                module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError, ValueError, SyntaxError) as exc:
        raise UsageError(f"cannot import --arch {arch!r} ({exc}); write it as package.module:Class or path/to/file.py:Class") from None


def save_program(handle, path: Path, original: dict | None = None) -> Path:
    """The model as a torch.export ``.pt2`` (dynamic batch) that carries its input spec, dataset and techniques.

    ``load_model`` on the file restores all three, so a chained command needs no --data or --input-shape.
    ``original`` (else the handle's own) records the model before the first pass and its test metric, so a chained
    command measures degradation against it, not against the already pruned or distilled model.
    """
    example = handle.input_spec.example_inputs(batch=3)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = tuple({axis: batch} for axis in handle.input_spec.input_axes)
    program = torch.export.export(handle.module, example, dynamic_shapes=dims, strict=False)
    meta = {"input_spec": handle.input_spec.to_list(), "dataset": handle.dataset, "techniques": [technique_record(t) for t in handle.techniques],
            "original": original or handle.original}
    buffer = io.BytesIO()  # torch.export.save warns about a temporary name not ending in .pt2
    torch.export.save(program, buffer, extra_files={PROGRAM_METADATA: dumps(meta, indent=None)})
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path
