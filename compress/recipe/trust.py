"""A recipe is data: the code it names runs only when the command line says so.

Three fields can name Python to import and call: ``model.arch`` (``package.module:Class``), ``data.name``
(``package.module:function``) and a distill stage's ``student`` (``package.module:Class``). Zoo names, built-in
datasets, ``.npz`` files and image folders import nothing. ``Trust`` is what the command line granted: ``--trust-code``
(everything), ``--trust-code-from PKG`` (names under these import roots) and ``--trust-pickle`` (which a recipe's
``model.trust_pickle: true`` only asks for).

Example:
    >>> [str(i) for i in code_imports(load_recipe("recipe.yaml"))]
    ['model.arch: mypkg.nets:Net']
    >>> check_trust(load_recipe("recipe.yaml"), Trust(roots=("mypkg",)), "recipe.yaml")   # UsageError when not granted
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.errors import UsageError
from compress.recipe.schema import RecipeBase


@dataclass(frozen=True)
class CodeImport:
    field: str      # where the recipe names it: model.arch, data.name, stages[1].distill.student
    name: str       # what would be imported: package.module:Name

    @property
    def module(self) -> str:
        return self.name.partition(":")[0]

    def __str__(self) -> str:
        return f"{self.field}: {self.name}"


@dataclass(frozen=True)
class Trust:
    code: bool = False                  # --trust-code
    roots: tuple[str, ...] = ()         # --trust-code-from PKG (repeatable)
    pickle: bool = False                # --trust-pickle

    def allows(self, item: CodeImport) -> bool:
        return self.code or any(item.module == root or item.module.startswith(root + ".") for root in self.roots)


def code_imports(recipe: RecipeBase) -> list[CodeImport]:
    """Every ``module:Name`` the recipe would import, with the field that names it."""
    from compress.data.registry import names_callable
    from compress.passes.distill import parse_student
    from compress.zoo.registry import ZOO

    found = []
    if recipe.model.arch and recipe.model.arch not in ZOO:
        found.append(CodeImport("model.arch", recipe.model.arch))
    if recipe.data.name and names_callable(recipe.data.name):
        found.append(CodeImport("data.name", recipe.data.name))
    for index, (kind, config) in enumerate(recipe.stage_list):
        if kind == "distill":
            arch, _ = parse_student(config.student)
            if arch not in ZOO:
                found.append(CodeImport(f"stages[{index}].distill.student", arch))
    return found


def check_trust(recipe: RecipeBase, trust: Trust, source: str | Path) -> None:
    """UsageError (exit 2) naming the first import, or pickle, that the command line did not allow."""
    for item in code_imports(recipe):
        if not trust.allows(item):
            raise UsageError(f"{source}: {item.field} would import and run {item.name!r}, code named in the file; "
                             f"pass --trust-code (or --trust-code-from {item.module.split('.')[0]}) if you mean to run it")
    if recipe.model.trust_pickle and not trust.pickle:
        raise UsageError(f"{source}: model.trust_pickle is true in the file, but unpickling runs code from the model file and "
                         "only the command line can allow it: pass --trust-pickle")
