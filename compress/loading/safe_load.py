"""What loading a ``.pt2`` would execute, found by reading the zip before torch opens it.

``torch.export.load`` runs code from the file in six places: a weight or constant its config marks ``use_pickle``
(``torch.load(weights_only=False)``), an opaque or custom object constant (``pickle.loads``), a sample-inputs or
legacy ``.pt`` entry that a weights-only load refuses (it falls back to ``weights_only=False``), compiled
AOTInductor code (a shared library), every symbolic-shape expression (``sympy.sympify``, i.e. ``eval``) and the
program's ``guards_code`` (``exec`` when ``.module()`` is called); and a graph node calls whatever its target names.
:func:`check_program_archive` refuses each of those unless the caller trusts the file (``--trust-pickle``).

Before any of that the zip itself must have one reading (:func:`compress.loading.archive.zip_entries`: no repeated entry
names, local headers that agree with the central directory, no deflate bomb), and the entries checked are read through
torch's own zip reader, so the bytes checked are the bytes torch loads; an entry read whole is bounded by
``MAX_CHECKED_ENTRY_BYTES`` and every number a shape expression can reach by ``MAX_EXPRESSION_DIGITS``.

TorchScript needs no such check: its C++ unpickler rebuilds only tensors and TorchScript classes (a ``data.pkl``
whose ``__reduce__`` names ``os.system`` fails to load, nothing runs) and its code runs in the TorchScript interpreter.

Example:
    >>> check_program_archive(Path("evil.pt2"), trust_pickle=False)
    UsageError: evil.pt2: entry data/weights/weight_0 holds weight 'l.weight' as a pickle (use_pickle: true): ...
"""
from __future__ import annotations

import ast
import builtins
import io
import math
import operator
import pickle
import re
import zipfile
from pathlib import Path
from typing import Iterator

from compress.loading.archive import zip_entries
from compress.compat import torch_private
from compress.errors import UsageError
from compress.safety.jsonsafe import loads
from compress.limits import MAX_CHECKED_ENTRY_BYTES, MAX_EXPRESSION_DIGITS

# torch.export.pt2_archive.constants, spelled out so that checking a file imports no torch internals
FORMAT_PATH = "archive_format"
AOTINDUCTOR_DIR = "data/aotinductor/"
PAYLOAD_CONFIGS = {"data/weights/": ("_weights_config.json", "weight"), "data/constants/": ("_constants_config.json", "constant")}
OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")
PROGRAM_JSONS = ("models/", "serialized_exported_program.json")  # current layout / the torch 2.7 layout

# symbolic-shape expressions: sympy names of these kinds, plus free names (which sympify turns into symbols)
STRING_ARGUMENT_CALLS = {"Symbol", "Dummy", "Float", "Integer"}
# the sympy functions torch's printer writes (beside torch's own, torch.utils._sympy.functions)
CALLS = STRING_ARGUMENT_CALLS | {"Rational", "Add", "Mul", "Pow", "Max", "Min", "Mod", "floor", "ceiling", "Abs", "sqrt",
                                 "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "sign"}
SYMBOL_DIGITS = 19  # a size symbol stands for an int64
MAX_EXPRESSION_CHARS = 10_000
# guards_code: a boolean expression over L['input'].size()[i] and friends
GUARD_NAMES = {"L", "math", "inf", "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"}
GUARD_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
EXPRESSION_NODES = (ast.Expression, ast.Call, ast.Name, ast.Constant, ast.keyword, ast.BinOp, ast.UnaryOp, ast.Compare,
                    ast.BoolOp, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.Load)


TRUST_HINT = "Re-save the program with torch.export.save from plain tensors, or pass --trust-pickle if you trust its author"


def check_program_archive(path: Path, trust_pickle: bool, remedy: str = TRUST_HINT) -> None:
    """Raise UsageError naming the first entry of ``path`` that would execute code on load (unless ``trust_pickle``).

    The archive must have one reading (:func:`compress.loading.archive.zip_entries`, also with ``trust_pickle``); its entries
    are then read through the reader torch.export.load uses. ``remedy`` ends the message (what the user can do).
    """
    zip_entries(path)
    if trust_pickle:
        return
    try:
        found = next(unsafe_entries(_TorchArchive(path)), None)
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UsageError(f"{path} is corrupt or truncated ({type(exc).__name__}: {first}); re-save it") from None
    if found:
        entry, why = found
        raise UsageError(f"{path}: entry {entry} {why}: loading it would execute code from the file. {remedy}")


class _TorchArchive:
    """The entries of a ``.pt2`` as torch.export.load reads them: through torch's own zip reader (names relative to
    the archive's folder), or, for the torch 2.7 layout that reader refuses, through ``zipfile`` as torch then does."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._torch = torch_private("torch._C", "PyTorchFileReader")(str(path))
            self.names = list(self._torch.get_all_records())
        except RuntimeError:
            self._torch = None
            with zipfile.ZipFile(path) as archive:
                self.names = archive.namelist()

    def read(self, name: str) -> bytes:
        """The entry's bytes, once its declared size is within MAX_CHECKED_ENTRY_BYTES (readers stop at that size)."""
        if self._torch is not None:
            size = self._torch.get_record_size(name)
        else:
            with zipfile.ZipFile(self.path) as archive:
                size = archive.getinfo(name).file_size
        if size > MAX_CHECKED_ENTRY_BYTES:
            raise UsageError(f"{self.path}: entry {name} declares {size:,} bytes, over the {MAX_CHECKED_ENTRY_BYTES:,} a "
                             "safety check reads (compress.limits.MAX_CHECKED_ENTRY_BYTES); a program's metadata is far "
                             "smaller: re-save it with torch.export.save")
        if self._torch is not None:
            return self._torch.get_record(name)
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(name)


def unsafe_entries(archive: _TorchArchive) -> Iterator[tuple[str, str]]:
    """``(entry name, what it carries)`` for every entry that torch.export.load would execute."""
    names = archive.names
    prefix = next((n[: -len(FORMAT_PATH)] for n in names if n.endswith(FORMAT_PATH)), "")
    for name in names:
        relative = name[len(prefix):] if name.startswith(prefix) else name
        if relative.startswith(AOTINDUCTOR_DIR) and not relative.endswith("/"):
            yield name, "is compiled AOTInductor code (a shared library is loaded)"
        elif relative.endswith(".pt"):
            why = _torch_artifact_problem(archive.read(name), f"{archive.path} entry {name}")
            if why:
                yield name, why
        elif relative.startswith(PROGRAM_JSONS) and relative.endswith(".json"):
            for why in _program_problems(_json(archive, name)):
                yield name, why
        else:
            for folder, (suffix, kind) in PAYLOAD_CONFIGS.items():
                if relative.startswith(folder) and relative.endswith(suffix):
                    for fqn, meta in (_json(archive, name).get("config") or {}).items():
                        path_name = str(meta.get("path_name", ""))
                        if meta.get("use_pickle") or path_name.startswith(OBJECT_PREFIXES):
                            yield prefix + folder + path_name, f"holds {kind} {fqn!r} as a pickle (use_pickle: true)"


def _json(archive: _TorchArchive, name: str) -> dict:
    try:
        document = loads(archive.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"entry {name} is not valid JSON ({exc}); the archive is corrupt") from None
    return document if isinstance(document, dict) else {}


def _torch_artifact_problem(payload: bytes, label: str) -> str | None:
    """Why torch would unpickle this ``.pt`` entry with ``weights_only=False`` (None: a weights-only load succeeds)."""
    if not payload:
        return None
    import torch

    if payload.startswith(b"PK"):
        zip_entries(payload, label)  # a nested archive is held to the same one reading

    try:
        torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        detail = f" (it calls {found.group(1)})" if found else ""
        return f"is a pickle that a weights-only load refuses{detail}, so torch would unpickle it"
    except Exception as exc:  # not a torch.save payload at all: torch's fallback would still hand it to pickle
        return f"is not a weights-only torch payload ({type(exc).__name__}), so torch would unpickle it"
    return None


def _program_problems(document) -> Iterator[str]:
    """Walk the serialized program: shape expressions, guards and node targets."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key == "expr_str" and isinstance(item, str) and not _safe_expression(item):
                    yield f"has a shape expression that is Python code, not arithmetic ({item[:80]!r})"
                elif key == "expr_str" and isinstance(item, str) and _digits(_parse(item).body) > MAX_EXPRESSION_DIGITS:
                    yield (f"has a shape expression whose numbers can exceed {MAX_EXPRESSION_DIGITS:,} digits ({item[:80]!r}; "
                           "compress.limits.MAX_EXPRESSION_DIGITS), which would hang the loader")
                elif key == "guards_code" and isinstance(item, list):
                    for guard in item:
                        if not isinstance(guard, str) or not _safe_guard(guard):
                            yield f"has a guard that is Python code, not a shape check ({str(guard)[:80]!r})"
                elif key == "target" and isinstance(item, str) and "inputs" in value and not _safe_target(item):
                    yield f"has a graph node calling {item!r}, which is not an operator"
                else:
                    stack.append(item)


def _parse(text: str) -> ast.Expression | None:
    if len(text) > MAX_EXPRESSION_CHARS:
        return None
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _digits(node: ast.AST) -> float:
    """An upper bound on the decimal digits of any number ``node`` evaluates to (a symbol stands for an int64), so that
    ``batch + 10**10**9`` is refused before sympify computes it.

    Example: ``_digits(_parse("s0 * 2**64").body)`` is 84 (19 + 64 * 1 + 1: a bound, not the 39 digits it can reach).
    """
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return 1
        return len(str(abs(int(value)))) if math.isfinite(value) else 309
    if isinstance(node, ast.Name):
        return SYMBOL_DIGITS
    if isinstance(node, ast.UnaryOp):
        return _digits(node.operand)
    if isinstance(node, ast.BinOp):
        return _combined(type(node.op).__name__, [node.left, node.right])
    if isinstance(node, ast.Call):
        return _combined(node.func.id if isinstance(node.func, ast.Name) else "", node.args)
    parts = [_digits(child) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)]  # Compare, BoolOp
    return max(parts, default=1)


def _combined(operation: str, operands: list[ast.expr]) -> float:
    """Digits of ``operation`` (an ast operator or sympy/torch function name) over ``operands``."""
    digits = [_digits(operand) for operand in operands]
    if operation in ("Pow", "PowByNatural", "FloatPow", "LShift") and len(operands) == 2:
        exponent = operands[1]
        if isinstance(exponent, ast.Constant) and isinstance(exponent.value, (int, float)) and math.isfinite(exponent.value):
            largest = abs(exponent.value)
        else:
            largest = math.inf if digits[1] > 15 else 10 ** digits[1]
        return digits[0] + 0.302 * largest if operation == "LShift" else digits[0] * max(largest, 1)
    if operation in ("Div", "FloorDiv", "Mod", "RShift", "CleanDiv", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "PythonMod"):
        return max(digits, default=1)
    return sum(digits) + 1  # Add, Mult, Max, ...: at most the product's digits


def _safe_expression(text: str) -> bool:
    """A sympy expression built from sympy classes, numbers and free symbols (what torch writes)."""
    tree = _parse(text)
    if tree is None:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, EXPRESSION_NODES):
            return False
        if isinstance(node, ast.Name) and not _sympy_name(node.id):
            return False
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                return False
            if node.func.id not in CALLS and not _torch_sympy_function(node.func.id):
                return False  # factorial(10**9) and friends compute numbers of their own
            strings = any(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
            if strings and node.func.id not in STRING_ARGUMENT_CALLS:
                return False
            if not all(isinstance(k.value, ast.Constant) and k.arg for k in node.keywords):
                return False
    return True


def _sympy_name(name: str) -> bool:
    """A sympy (or torch sympy) class or constant, or a name sympify turns into a Symbol; never a function."""
    import sympy


    torch_sympy = torch_private("torch.utils._sympy.functions")

    if name.startswith("_"):
        return False
    missing = object()
    value = getattr(torch_sympy, name, missing)
    value = getattr(sympy, name, missing) if value is missing else value
    if value is missing:
        return not hasattr(builtins, name)
    return (isinstance(value, type) and issubclass(value, sympy.Basic)) or isinstance(value, sympy.Basic)


def _torch_sympy_function(name: str) -> bool:
    import sympy

    value = getattr(torch_private("torch.utils._sympy.functions"), name, None)
    return isinstance(value, type) and issubclass(value, sympy.Basic)


def _safe_guard(text: str) -> bool:
    """A comparison over input sizes, like ``L['x'].size()[0] <= 4096``."""
    tree = _parse(text)
    if tree is None:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id not in GUARD_NAMES:
                return False
        elif isinstance(node, ast.Attribute):
            on_math = isinstance(node.value, ast.Name) and node.value.id == "math"
            if node.attr.startswith("_") or not (on_math or node.attr in GUARD_METHODS):
                return False
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, (ast.Name, ast.Attribute)):
                return False
        elif not isinstance(node, (*EXPRESSION_NODES, ast.Subscript, ast.Slice, ast.Tuple)):
            return False
    return True


def _safe_target(target: str) -> bool:
    """Resolve ``target`` as torch's deserializer does; only operators and pure arithmetic may be called."""
    import torch


    operators = tuple(torch_private("torch._ops", kind) for kind in ("OpOverload", "OpOverloadPacket", "HigherOrderOperator"))

    if target.startswith("#"):  # an extension op, resolved by a handler some imported library registered
        return True
    if _registered_operator(target):  # torch.ops.aten.__and__.Tensor (`&` on tensors): its name decides nothing
        return True
    roots = (("_operator", operator), ("torch", torch), ("math", math))
    module = next((m for prefix, m in roots if target.startswith(prefix)), None)
    if module is None:
        return True  # torch keeps it as a string, which it refuses to call
    value = module
    for part in target.split(".")[1:]:
        if part.startswith("__"):
            return False
        if not hasattr(value, part):
            return True  # unresolved: torch keeps the string, which it refuses to call
        value = getattr(value, part)
    if isinstance(value, operators):
        return True
    return module is math or value is operator.getitem or any(value is op for op in torch_private("torch._export.serde.serialize", "_SYM_OPS"))


def _registered_operator(target: str) -> bool:
    """True when ``target`` is ``torch.ops.<namespace>.<name>[.<overload>]`` and torch's operator registry (or its
    higher-order operator table) holds it: looked up by name, nothing from the file resolved or called.

    Example: ``_registered_operator("torch.ops.aten.__and__.Tensor")`` is True, ``"torch.ops.aten.__class__"`` False.
    """
    parts = target.split(".")
    if parts[:2] != ["torch", "ops"] or len(parts) not in (4, 5):
        return False
    namespace, name = parts[2], parts[3]
    if namespace == "higher_order":
        return len(parts) == 4 and name in torch_private("torch._ops", "_higher_order_ops")
    if len(parts) == 4:
        return bool(torch_private("torch._C", "_jit_get_schemas_for_operator")(f"{namespace}::{name}"))
    overload = "" if parts[4] == "default" else parts[4]
    try:
        torch_private("torch._C", "_dispatch_find_schema_or_throw")(f"{namespace}::{name}", overload)
    except RuntimeError:
        return False
    return True
