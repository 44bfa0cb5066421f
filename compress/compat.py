"""The one place compress touches upstream private APIs, each behind a version check naming the tested range.

litert-torch has no public switch for two things compress needs, so its internals are patched for the duration of a
call: strict QDQ conversion (:func:`litert_strict_qdq`) and conv+BN pattern matching for QAT
(:func:`litert_qat_annotation_fix`). A litert-torch outside :data:`TESTED` stops with EnvironmentFailure (exit 3)
that says which versions work, instead of a patch silently missing its target. torch internals are only read (what
its program deserializer resolves, its sympy functions, the quantized_decomposed ops): :func:`torch_private` names
the tested torch range when one has moved.

Example:
    >>> with litert_strict_qdq():
    ...     content = litert_torch.convert(module, example).model_content()
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import re

from compress.errors import EnvironmentFailure

# package -> (lowest tested, first untested): the versions whose internals the code below was checked against
TESTED: dict[str, tuple[str, str]] = {"litert-torch": ("0.10", "0.11"), "torch": ("2.6", "2.15")}


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def check_tested(package: str) -> str:
    """The installed version of ``package`` when it is in the tested range; EnvironmentFailure otherwise."""
    low, high = TESTED[package]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise EnvironmentFailure(f"{package} is not installed; install the tested versions: pip install -c constraints.txt -e .") from None
    if not _release(low) <= _release(version) < _release(high):
        raise EnvironmentFailure(f"{package} {version} is untested: compress patches its internals and was tested with "
                                 f"{package}>={low},<{high}; install that range (pip install -c constraints.txt -e .)")
    return version


@contextlib.contextmanager
def litert_strict_qdq():
    """Convert in strict QDQ mode: only ops PT2E annotated become int8, so excluded layers really stay float
    (otherwise the converter quantizes a float op that sits between a DEQUANTIZE and a QUANTIZE, weights included).
    The file keeps float inputs and outputs (QUANTIZE/DEQUANTIZE at the edges), like the TFLite converter's default.
    litert-torch has no argument for it, so its config class is wrapped for the duration of the conversion."""
    check_tested("litert-torch")
    from litert_torch._convert import litert_converter

    api = litert_converter.converter_api_ext
    original = api.ConvertToTFLConfig
    if not hasattr(original(), "strict_qdq_mode"):
        yield
        return

    def strict_config():
        config = original()
        config.strict_qdq_mode = True
        return config

    api.ConvertToTFLConfig = strict_config
    try:
        yield
    finally:
        api.ConvertToTFLConfig = original


@contextlib.contextmanager
def litert_qat_annotation_fix():
    """litert-torch 0.10 passes a plain function to torch.export.export when matching conv+BN for QAT; wrap it."""
    check_tested("litert-torch")
    import litert_torch.quantize.pt2e_quantizer_utils as utils
    from torch import nn
    from torchao.quantization.pt2e.export_utils import WrapperModule

    original = utils._get_aten_graph_module_for_pattern

    def wrapped(pattern, *args, **kwargs):
        return original(pattern if isinstance(pattern, nn.Module) else WrapperModule(pattern), *args, **kwargs)

    utils._get_aten_graph_module_for_pattern = wrapped
    try:
        yield
    finally:
        utils._get_aten_graph_module_for_pattern = original


def torch_private(module: str, name: str | None = None):
    """``import module`` (and its attribute ``name``) from torch's internals; EnvironmentFailure naming the tested
    torch range when this torch no longer has it.

    Example: ``torch_private("torch._export.serde.serialize", "_SYM_OPS")``
    """
    import importlib

    try:
        found = importlib.import_module(module)
        return getattr(found, name) if name else found
    except (ImportError, AttributeError):
        import torch

        low, high = TESTED["torch"]
        raise EnvironmentFailure(f"torch {torch.__version__} has no {module}{'.' + name if name else ''}, which compress reads; "
                                 f"compress supports torch>={low},<{high} (constraints.txt pins the tested one: pip install -c constraints.txt -e .)") from None
