"""The layout explains itself (issue 28): few modules at the top, a catalog that imports nothing, no long import cycle.

The import graph counts every ``compress.*`` import, at module level and inside functions alike: a lazy import is
still a dependency. ``from package import module`` is an edge to that module, as import-linter counts it.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compress"
MAX_TOP_LEVEL = 8
MAX_CYCLE = 3


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The compress modules ``name`` imports anywhere in its source (resolved to the closest known module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            targets = submodules + ([base] if len(submodules) < len(node.names) else [])
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("compress") and target != name:
                found.add(target)
    return found


def _largest_cycle(graph: dict[str, set[str]]) -> list[str]:
    """The largest strongly connected component (Tarjan, iterative)."""
    index, low, on_stack, stack, largest, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                largest = max(largest, sorted(component), key=len)
    return largest


def test_at_most_eight_modules_at_the_top_of_the_package():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_LEVEL, f"{len(top)} modules at the top of compress/ (at most {MAX_TOP_LEVEL}): {top}"


def test_every_package_says_what_it_holds():
    silent = [str(init.parent.relative_to(PACKAGE.parent)) for init in PACKAGE.rglob("__init__.py")
              if "__pycache__" not in init.parts and not ast.get_docstring(ast.parse(init.read_text()))]
    assert not silent, f"packages without a docstring map: {silent}"


def test_catalog_imports_nothing_from_compress_or_third_parties():
    tree = ast.parse((PACKAGE / "catalog.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    # and importing it, in a fresh interpreter, loads nothing else: no other compress module, no third party
    code = ("import sys; before = set(sys.modules); import compress.catalog; import json; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    loaded = {name for name in json.loads(run.stdout) if name not in ("compress", "compress.catalog")}
    assert {name.split(".")[0] for name in loaded} <= set(sys.stdlib_module_names), sorted(loaded)


def test_catalog_finds_the_builtin_backends_on_first_lookup():
    code = ("from compress.catalog import format_of, calibration_names; "
            "print(format_of('runs/x/model.int8.tflite').runtime, ','.join(calibration_names('pte')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent, env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert run.stdout.split() == ["litert", "minmax,percentile,entropy"]


def test_no_import_cycle_longer_than_three_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycle = _largest_cycle(graph)
    assert len(cycle) <= MAX_CYCLE, f"an import cycle of {len(cycle)} modules (at most {MAX_CYCLE}): {cycle}"
