"""Reading YAML text with bounds: no cycles, no explosions, no silent duplicates.

PyYAML's ``SafeLoader`` gives every alias of an anchor the anchor's own node,
so a few lines can stand for billions of nodes ("billion laughs") or, with an
alias inside its own anchor, for an infinite document. Whatever walks the
loaded data afterwards (interpolation, cattrs, the line map) walks it
expanded, so ``load`` measures the expanded document while composing it, in
time proportional to the text, and refuses, at the line of the offending
alias or node:

- an alias inside the node it names (a cycle);
- a document of more than ``MAX_NODES`` nodes, each alias counting as all
  the nodes of what it names;
- nesting deeper than ``MAX_DEPTH``.

It also refuses a key written twice in one mapping, which PyYAML would
silently let the last one win. Keys brought in by a merge (``<<: *anchor``)
may be overridden, as YAML intends.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import attrs
import yaml

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "Document",
    "Problem",
    "Refused",
    "load",
    "locate",
    "syntax_problem",
]

MAX_NODES = 100_000
"""The most nodes (keys, values and items, aliases expanded) a document may have."""

MAX_DEPTH = 100
"""The deepest nesting of mappings and lists a document may have."""

_MERGE = "tag:yaml.org,2002:merge"


@attrs.frozen
class Problem:
    """Why a document is refused: where (a field path such as
    ``$.supervisor.children[0]``, and a 1-based line) and what."""

    path: str
    line: int
    message: str


class Refused(Exception):
    """The document is well-formed YAML, but cyclic, too large, too deep, or
    has duplicate keys; ``problems`` says where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(problem.message for problem in problems))
        self.problems = problems


@attrs.frozen
class Document:
    """Loaded YAML: its data, and the line of each field path in it."""

    data: Any
    lines: dict[str, int]


def load(text: str) -> Document:
    """Load one YAML document of plain data (``yaml.safe_load``'s types).

    Raises:
        Refused: the document is cyclic, too large, too deep, or has keys
            written twice in one mapping.
        yaml.YAMLError: the text is not valid YAML.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if loader.duplicates:
            raise Refused(loader.duplicates)
        # Before construction, which flattens merge keys into the nodes.
        lines = line_map(root)
        data = None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()
    return Document(data, lines)


def line_map(root: yaml.Node | None) -> dict[str, int]:
    """Map each field path (``$.supervisor.children[0].name``) to its 1-based line.

    A mapping entry's path is at the line of its key; an alias's paths are at
    the lines of what it names.
    """
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        lines.setdefault(path, _line(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{_segment(key)}"
                lines[sub] = _line(key)
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        walk(root, "$")
    return lines


def locate(lines: dict[str, int], path: str) -> int:
    """The line of ``path`` in a ``line_map``, or of its nearest ancestor there."""
    probe = path
    while probe not in lines and probe != "$":
        probe = probe.rsplit("[", 1)[0] if probe.endswith("]") else probe.rsplit(".", 1)[0]
    return lines.get(probe, 1)


def syntax_problem(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    """The line and the words of a YAML syntax error in ``text``, without
    PyYAML's snippet."""
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        line = text.count("\n", 0, exc.position) + 1
        return line, f"character #x{exc.character:04x} is not allowed in YAML text"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, str(exc)
    line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
    problem = exc.problem or str(exc)
    if problem == "but found another document":
        return line, "found a second document (after ---); a topology is one document"
    if exc.context and exc.context_mark is not None:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return line, problem


def _line(node: yaml.Node | yaml.Event) -> int:
    mark = node.start_mark
    return 1 if mark is None else mark.line + 1


def _segment(key: yaml.Node) -> str:
    return str(key.value) if isinstance(key, yaml.ScalarNode) else "?"


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that sizes what it composes (see the module docstring).

    The size of a node is 1 plus the sizes of its keys, values and items; an
    alias adds the size of the node it names, recorded when that node was
    complete. An alias to a node that is not yet complete is inside it.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.duplicates: list[Problem] = []
        self._nodes = 0  # composed so far, aliases expanded
        self._sizes: dict[yaml.Node, int] = {}  # anchored nodes, once complete
        self._paths: list[str] = []  # of the nodes being composed, outermost first

    def compose_node(self, parent: yaml.Node | None, index: yaml.Node | int | None) -> yaml.Node:
        path = self._path(parent, index)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self._expand(event, path)
            return super().compose_node(parent, index)  # type: ignore[arg-type, return-value]
        if len(self._paths) >= MAX_DEPTH:
            raise Refused(
                [Problem(path, _line(event), f"nested more than {MAX_DEPTH} levels deep")]
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None and anchor in self.anchors:
            message = (
                f"anchor &{anchor} is defined twice (first at line {_line(self.anchors[anchor])})"
            )
            raise Refused([Problem(path, _line(event), message)])
        start = self._nodes
        self._count(1, path, event, f"the document has more than {MAX_NODES:,} nodes")
        self._paths.append(path)
        node: yaml.Node = super().compose_node(parent, index)  # type: ignore[arg-type, assignment]
        self._paths.pop()
        if anchor is not None:
            self._sizes[node] = self._nodes - start
        if isinstance(node, yaml.MappingNode):
            self._check_keys(node, path)
        return node

    def _path(self, parent: yaml.Node | None, index: yaml.Node | int | None) -> str:
        if parent is None:
            return "$"
        if isinstance(index, int):
            return f"{self._paths[-1]}[{index}]"
        if isinstance(index, yaml.Node):  # a mapping's value, under its key
            return f"{self._paths[-1]}.{_segment(index)}"
        return self._paths[-1]  # a mapping's key

    def _expand(self, event: yaml.AliasEvent, path: str) -> None:
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # PyYAML reports the undefined alias
        size = self._sizes.get(node)
        if size is None:
            message = (
                f"alias *{event.anchor} is inside &{event.anchor}, the node it names, "
                "so it would contain itself without end"
            )
            raise Refused([Problem(path, _line(event), message)])
        self._count(
            size,
            path,
            event,
            f"alias *{event.anchor} stands for {size:,} nodes, which takes the document past "
            f"{MAX_NODES:,} (an alias counts as all the nodes it repeats)",
        )

    def _count(self, size: int, path: str, event: yaml.Event, message: str) -> None:
        self._nodes += size
        if self._nodes > MAX_NODES:
            raise Refused([Problem(path, _line(event), message)])

    def _check_keys(self, node: yaml.MappingNode, path: str) -> None:
        """Record each key written a second time in ``node``."""
        first: dict[Hashable, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue  # a merge's keys may be overridden; other keys are unhashable
            key = self.construct_object(key_node, deep=True)
            if key in first:
                self.duplicates.append(
                    Problem(
                        path, _line(key_node), f"duplicate key {key!r} (first at line {first[key]})"
                    )
                )
            else:
                first[key] = _line(key_node)
