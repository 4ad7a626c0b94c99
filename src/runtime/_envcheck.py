"""What this machine's environment lacks for a topology's resources to start.

Each resource kind says what it needs through
``Resource.check_environment(options)`` (an API key's variable, a server
command on ``PATH``); this module asks every resource of a topology and
reports each problem as ``file:line: resources.NAME.FIELD: message``, the
line found in the topology file as the loader's errors are.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import yaml

from ._resource import Resource
from ._specs import Topology

__all__ = ["environment_problems"]


def environment_problems(topology: Topology, source: str) -> list[str]:
    """Every environment problem of ``topology``'s resources, one line each.

    ``source`` is the topology's file, read again for the lines (line 1
    when it cannot be read). A kind's check that raises is reported as a
    problem of its ``kind`` field, not raised.
    """
    found: list[tuple[str, str, str]] = []
    for name, spec in topology.resources.items():
        kind = cast(type[Resource], spec.kind)
        try:
            problems = kind.check_environment(spec.options)
        except Exception as exc:
            problems = [("kind", f"{kind.__qualname__}.check_environment failed: {exc!r}")]
        found.extend((name, field, message) for field, message in problems)
    if not found:
        return []
    lines = _resource_lines(source)
    return [
        f"{source}:{_line(lines, name, field)}: resources.{name}.{field}: {message}"
        for name, field, message in found
    ]


def _line(lines: dict[tuple[str, ...], int], name: str, field: str) -> int:
    """The line of ``resources.<name>.<field>``, or of the nearest ancestor written."""
    for key in ((name, field), (name,), ()):
        if key in lines:
            return lines[key]
    return 1


def _resource_lines(source: str) -> dict[tuple[str, ...], int]:
    """Lines (1-based) of ``resources:`` ``()``, each entry ``(name,)`` and
    its keys ``(name, key)`` in the YAML file ``source``."""
    try:
        root = yaml.compose(Path(source).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[tuple[str, ...], int] = {}
    for key, value in _pairs(root):
        if key.value != "resources":
            continue
        lines[()] = key.start_mark.line + 1
        for entry, settings in _pairs(value):
            lines[(str(entry.value),)] = entry.start_mark.line + 1
            for field, _ in _pairs(settings):
                lines[(str(entry.value), str(field.value))] = field.start_mark.line + 1
    return lines


def _pairs(node: yaml.Node | None) -> list[tuple[yaml.Node, yaml.Node]]:
    return list(node.value) if isinstance(node, yaml.MappingNode) else []
