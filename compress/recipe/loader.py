"""Load a recipe YAML; every error names the file, line and column, the key, and the nearest valid key.

Example:
    >>> load_recipe("bad.yaml")
    RecipeError: bad.yaml:7:7: unknown key 'calibraton' in stages[1].quantize; did you mean 'calibration'?
"""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from compress.safety import yamlsafe
from compress.errors import UsageError
from compress.recipe.schema import STAGE_CONFIGS, RecipeBase, recipe_model, stage_config_class


class RecipeError(UsageError):
    """A recipe that does not validate (exit 2, nothing run)."""


def _node_at(root: yaml.Node, path: list) -> tuple[yaml.Node, yaml.Node | None]:
    """The value node at ``path`` (and the key node of its last step, when it is a mapping key)."""
    node, key_node = root, None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == step), None)
            if match is None:
                break
            key_node, node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node, key_node = node.value[step], None
        else:
            break
    return node, key_node


def _config_class_at(path: list) -> type[BaseModel] | None:
    """The pydantic class whose fields are valid at ``path`` (for 'did you mean')."""
    from compress.recipe import schema

    sections = {"model": schema.ModelSection, "data": schema.DataSection, "gates": schema.Gates, "output": schema.Output}
    if not path:
        return recipe_model()
    if path[0] == "stages" and len(path) >= 3 and path[2] in STAGE_CONFIGS:
        return stage_config_class(path[2])
    return sections.get(path[0]) if len(path) == 1 else None


def _dotted(path: list) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text or "(top level)"


def _explain(error: dict, root: yaml.Node, source: str) -> str:
    loc = list(error["loc"])
    # a tagged stage is reported as stages.<i>.<tag>.<kind>...; the YAML has stages[i].<kind>...
    if len(loc) >= 4 and loc[0] == "stages" and loc[2] == loc[3]:
        del loc[2]
    if error["type"] == "unknown_stage":
        node, _ = _node_at(root, loc)
        kind = node.value[0][0].value if isinstance(node, yaml.MappingNode) and node.value else None
        mark = (node.value[0][0] if kind else node).start_mark
        close = difflib.get_close_matches(str(kind), list(STAGE_CONFIGS), n=1, cutoff=0.6) if kind else []
        hint = f"did you mean {close[0]!r}?" if close else f"stages are: {', '.join(STAGE_CONFIGS)}"
        return f"{source}:{mark.line + 1}:{mark.column + 1}: unknown stage {kind!r} in {_dotted(loc)}; {hint}"
    if error["type"] == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        node, key_node = _node_at(root, loc)
        mark = (key_node or node).start_mark
        cls = _config_class_at(parent)
        hint = ""
        if cls is not None:
            close = difflib.get_close_matches(str(key), list(cls.model_fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(cls.model_fields)}"
        return f"{source}:{mark.line + 1}:{mark.column + 1}: unknown key {key!r} in {_dotted(parent)}{hint}"
    node, key_node = _node_at(root, loc)
    mark = node.start_mark
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{source}:{mark.line + 1}:{mark.column + 1}: missing key {loc[-1]!r} in {_dotted(loc[:-1])}"
    return f"{source}:{mark.line + 1}:{mark.column + 1}: {_dotted(loc)}: {message}"


def _quoted(override: str) -> str:
    """``override`` as the error line shows it: quoted, its middle left out past 80 characters."""
    return repr(override if len(override) <= 80 else f"{override[:60]}...{override[-15:]}")


def parse_override(override: str) -> tuple[list, object]:
    """``stages.1.quantize.calibration=entropy`` → ``(["stages", 1, "quantize", "calibration"], "entropy")``.

    The value is read as YAML (``seed=3`` is a number, ``exclude=[fc1]`` a list); anything unparsable is a RecipeError.
    """
    path, sep, raw = override.partition("=")
    keys = path.split(".")
    if not sep or not all(k.strip() for k in keys):
        raise RecipeError(f"--set {_quoted(override)}: write it as dotted.path=value, e.g. stages.1.quantize.calibration=entropy")
    try:
        value = yamlsafe.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {_quoted(override)}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc}); "
                          "quote it or close its brackets") from None
    return [int(k) if k.isascii() and k.isdigit() else k for k in keys], value  # "²".isdigit() too


def apply_overrides(text: str, overrides: list[str], source: str = "<recipe>") -> str:
    """``stages.1.quantize.calibration=entropy`` → the YAML text with that value set (so errors still point at lines)."""
    data = _load_yaml(text, source)
    for override in overrides:
        keys, value = parse_override(override)
        node = data
        try:
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = value
        except (KeyError, IndexError, TypeError):
            raise RecipeError(f"--set {_quoted(override)}: the recipe has no {override.partition('=')[0]!r} to set (stages are numbered from 0)") from None
    return yaml.safe_dump(data, sort_keys=False)


def _load_yaml(text: str, source: str):
    """:func:`compress.safety.yamlsafe.load` (bounded: depth, aliases, duplicate keys) with its error as a RecipeError."""
    try:
        return yamlsafe.load(text, source)
    except UsageError as exc:
        raise RecipeError(str(exc)) from None


def parse_recipe(text: str, source: str = "<recipe>") -> RecipeBase:
    data = _load_yaml(text, source)
    root = yaml.compose(text)  # safe now: _load_yaml bounded its depth
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with model, data, stages, targets, gates, output, seed")
    try:
        return recipe_model().model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo explains a "missing" too
        raise RecipeError(_explain(errors[0], root, source)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeBase:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found; start one with `compress recipe init --model mnist_cnn > recipe.yaml`")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path} is not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    if overrides:
        return parse_recipe(apply_overrides(text, overrides, str(path)), f"{path} (with --set)")
    return parse_recipe(text, str(path))
