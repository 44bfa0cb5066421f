"""Read YAML within bounds: nesting depth, values after alias expansion, no duplicate keys, no self-reference.

``yaml.safe_load`` runs no code, but a 14-line file of anchors and aliases ("billion laughs") stands for 10^9
values that every later step (validation, the manifest, ``yaml.safe_dump``) walks one by one, and a file nested
100,000 deep ends in RecursionError. :func:`load` refuses both in milliseconds, before anything walks the values,
and names the file, line and column, as it does for a syntax error or a key given twice.

Example:
    >>> load("a: &x [1, 2]\\nb: *x\\n", "ok.yaml")
    {'a': [1, 2], 'b': [1, 2]}
    >>> load("model: {}\\nmodel: {}\\n", "twice.yaml")
    UsageError: twice.yaml:2:1: key 'model' given twice (first on line 1); keep one
"""
from __future__ import annotations

import yaml

from compress.errors import UsageError
from compress.limits import MAX_DOCUMENT_DEPTH, MAX_YAML_VALUES

_MERGE = "tag:yaml.org,2002:merge"


class Refused(yaml.MarkedYAMLError):
    """A document outside the bounds, at ``problem_mark`` (a yaml.YAMLError, so callers of safe_load catch it too)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops composing past MAX_DOCUMENT_DEPTH, before Python's own recursion limit is reached."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DOCUMENT_DEPTH:
                raise Refused(problem=f"nested deeper than {MAX_DOCUMENT_DEPTH} levels", problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], depth: int = 1) -> int:
    """Values under ``node`` with every alias expanded (memoized per node, so linear in the file, not the expansion)."""
    if not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        return 1
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise Refused(problem="an alias refers to a collection that contains it", problem_mark=node.start_mark)
    if depth > MAX_DOCUMENT_DEPTH:
        raise Refused(problem=f"nested deeper than {MAX_DOCUMENT_DEPTH} levels once its aliases are expanded",
                       problem_mark=node.start_mark)
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        _refuse_duplicate_keys(node)
        children = [item for pair in node.value for item in pair]
    else:
        children = node.value
    size = 1
    for child in children:
        size += _expanded_size(child, sizes, open_nodes, depth + 1)
        if size > MAX_YAML_VALUES:
            raise Refused(problem=f"stands for more than {MAX_YAML_VALUES:,} values once its aliases are expanded "
                                   "(an alias bomb?); write the values out or use fewer aliases", problem_mark=node.start_mark)
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _refuse_duplicate_keys(node: yaml.MappingNode) -> None:
    seen: dict[tuple, yaml.Node] = {}
    for key, _ in node.value:
        if key.tag == _MERGE or not isinstance(key, yaml.ScalarNode):
            continue
        first = seen.setdefault((key.tag, key.value), key)
        if first is not key:
            raise Refused(problem=f"key {key.value!r} given twice (first on line {first.start_mark.line + 1}); keep one",
                           problem_mark=key.start_mark)


def safe_load(text: str):
    """``yaml.safe_load`` within the bounds: Refused (a yaml.YAMLError) for a key given twice, nesting deeper than
    MAX_DOCUMENT_DEPTH, more than MAX_YAML_VALUES values after alias expansion, or an alias inside its own anchor."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load(text: str, source: str):
    """:func:`safe_load`, with every refusal and syntax error as a UsageError naming ``source:line:col``."""
    try:
        return safe_load(text)
    except Refused as exc:
        mark = exc.problem_mark
        raise UsageError(f"{source}:{mark.line + 1}:{mark.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise UsageError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or str(exc).splitlines()[0]})") from None
