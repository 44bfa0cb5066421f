"""What users would otherwise pick, each with its documented defaults, built straight from the libraries.

Each builder returns a Variant: something that runs numpy batches (a file in its runtime, or an eager module).

Example:
    >>> variant = ort_static_default(fp32_onnx, calibration, workdir)
    >>> variant.name, variant.runtime
    ('ort-static-default', 'onnxruntime')
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from compress.data import Dataset


@dataclass
class Variant:
    name: str
    runtime: str
    bits: int                         # weight bits, for the physical size limit
    size_bytes: int
    run: Callable[[tuple[np.ndarray, ...]], list[np.ndarray]]
    notes: list[str] = field(default_factory=list)


def timing_runner(path: Path, threads: int | None = None):
    """``path`` in its runtime as the suite times it: onnxruntime with spinning off (its idle worker threads would
    starve the next runtime in the interleaved loop), every other runtime as compress opens it."""
    from compress.runtimes import open_runner

    return open_runner(path, threads=threads, **({"spinning": False} if path.suffix == ".onnx" else {}))


def file_variant(name: str, path: Path, bits: int, notes: list[str] | None = None) -> Variant:
    runner = timing_runner(path)
    return Variant(name, runner.name, bits, path.stat().st_size, runner.run, notes or [])


def _module_size(module: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def _eager(name: str, module: torch.nn.Module, bits: int, notes: list[str] | None = None) -> Variant:
    from compress.backends.pytorch.session import TorchRunner

    runner = TorchRunner.from_module(module, [])
    return Variant(name, "torch", bits, _module_size(module), runner.run, notes or [])


def fp32_torch(module: torch.nn.Module) -> Variant:
    return _eager("fp32-torch", module, 32)


def fp32_onnx(module: torch.nn.Module, example: tuple, names: list[str], path: Path) -> Variant:
    """Plain torch.onnx.export (dynamo), dynamic batch."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(module, example, str(path), input_names=names, dynamic_shapes=tuple({0: batch} for _ in example),
                      external_data=False, verbose=False)
    return file_variant("fp32-ort", path, 32)


def fp32_litert(module: torch.nn.Module, example: tuple, path: Path) -> Variant:
    import litert_torch

    litert_torch.convert(module, example).export(str(path))
    return file_variant("fp32-litert", path, 32)


class _Reader:
    """ORT CalibrationDataReader over a Dataset (one sample at a time, as ORT's examples do)."""

    def __init__(self, data: Dataset, names: list[str]):
        self.items = iter([{n: a[i : i + 1] for n, a in zip(names, data.x)} for i in range(data.size)])

    def get_next(self):
        return next(self.items, None)


def ort_static_default(fp32_path: Path, calibration: Dataset, names: list[str], path: Path) -> Variant:
    """onnxruntime.quantization.quantize_static with its defaults (QDQ, per-tensor, MinMax, no reduce_range)."""
    from onnxruntime.quantization import quantize_static

    quantize_static(str(fp32_path), str(path), _Reader(calibration, names))
    return file_variant("ort-static-default", path, 8)


def ort_dynamic_default(fp32_path: Path, path: Path) -> Variant:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(fp32_path), str(path))
    return file_variant("ort-dynamic-default", path, 8)


def peer_default(peer: str, fp32_path: Path, calibration: Dataset, path: Path) -> Variant:
    """A peer quantizer (bench/peers: NNCF, Olive) with its defaults, run in its own venv on the fp32 ONNX file."""
    from bench import peers

    samples = peers.calibration_npz(calibration, fp32_path, path.with_suffix(".calibration.npz"))
    return file_variant(f"{peer}-int8-default", peers.quantize_with(peer, fp32_path, samples, path), 8, [peers.PEERS[peer]])


def litert_pt2e_default(module: torch.nn.Module, example: tuple, calibration: Dataset, path: Path) -> Variant:
    """litert-torch's documented PT2E flow with get_symmetric_quantization_config() defaults."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config())
    prepared = prepare_pt2e(torch.export.export(module, example).module(), quantizer)
    for inputs, _ in calibration.batches(1):
        prepared(*(torch.from_numpy(a) for a in inputs))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, example, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    return file_variant("litert-pt2e-default", path, 8)


def torchao_variant(module: torch.nn.Module, kind: str) -> Variant:
    """torchao quantize_ in eager mode: Int8DynamicActivationInt8WeightConfig or Int8WeightOnlyConfig."""
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    config = Int8DynamicActivationInt8WeightConfig() if kind == "dynamic" else Int8WeightOnlyConfig()
    quantized = copy.deepcopy(module).eval()
    quantize_(quantized, config)
    return _eager(f"torchao-int8-{kind}", quantized, 8, ["eager PyTorch; only nn.Linear layers are quantized by torchao"])
