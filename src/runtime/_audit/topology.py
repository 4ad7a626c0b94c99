"""RT7xx: the audit of topology files (YAML with a top-level ``supervisor:``
or ``resources:``), each finding at the line of its field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from .._yaml import Refused, load, locate, syntax_problem
from .rules import RULES, Finding

__all__ = ["MAX_MAILBOX", "check_topology", "is_topology"]

MAX_MAILBOX = 10_000
"""The largest mailbox capacity RT703 lets pass."""

_TOP_KEYS = re.compile(r"^(supervisor|resources)\s*:", re.MULTILINE)
_OWN_KEYS = re.compile(r"^supervisor\s*:", re.MULTILINE)
_DEFAULT = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}$")


def is_topology(text: str) -> bool:
    """Whether ``text`` may be a topology: it has a top-level ``supervisor:``
    or ``resources:`` (``check_topology`` looks closer)."""
    return _TOP_KEYS.search(text) is not None


def check_topology(path: str, text: str) -> list[Finding] | None:
    """The RT7xx findings of the topology ``text`` (the file at ``path``), or
    None when it is not a topology after all (a Helm values file has a
    top-level ``resources:`` too). A file that does not load is one RT001
    finding when it has a top-level ``supervisor:``."""
    lines = text.splitlines()
    try:
        document = load(text)
    except Refused as exc:
        problems = [(p.line, f"refused: {p.message}") for p in exc.problems]
    except yaml.YAMLError as exc:
        line, problem = syntax_problem(exc, text)
        problems = [(line, f"YAML syntax error: {problem}")]
    else:
        data = document.data
        if not _is_topology_data(data):
            return None
        return [
            _finding(path, lines, locate(document.lines, field), rule, message)
            for field, rule, message in _problems(data)
        ]
    if _OWN_KEYS.search(text) is None:
        return None
    return [_finding(path, lines, line, "RT001", message) for line, message in problems]


def _is_topology_data(data: Any) -> bool:
    """A mapping with a ``supervisor`` mapping, or ``resources`` whose
    entries each name their ``kind``."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("supervisor"), dict):
        return True
    resources = data.get("resources")
    return (
        isinstance(resources, dict)
        and bool(resources)
        and all(isinstance(spec, dict) and "kind" in spec for spec in resources.values())
    )


def _finding(path: str, lines: list[str], line: int, rule: str, message: str) -> Finding:
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    col = len(source) - len(source.lstrip()) + 1
    return Finding(path, line, col, rule, message, RULES[rule].fix, source)


def _problems(data: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(field path, rule, message) for each problem in a topology's data."""
    resources = data.get("resources")
    if isinstance(resources, dict):
        for name, spec in resources.items():
            if isinstance(spec, dict):
                yield from _resource(f"$.resources.{name}", str(name), spec)
    supervisor = data.get("supervisor")
    if isinstance(supervisor, dict):
        yield from _tree("$.supervisor", supervisor)


def _resource(field: str, name: str, spec: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    if "timeout" in spec and spec["timeout"] is None:
        yield (
            f"{field}.timeout",
            "RT701",
            f"resource {name!r} has timeout: null: an attempt may hang forever",
        )
    if spec.get("kind") == "llm" and spec.get("rate") is None:
        where = f"{field}.rate" if "rate" in spec else f"{field}.kind"
        yield where, "RT702", f"llm resource {name!r} has no rate: nothing keeps it under quota"
    yield from _mailbox(field, f"resource {name!r}", spec)


def _tree(field: str, node: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Every actor's mailbox below the supervisor entry ``node``."""
    children = node.get("children")
    if not isinstance(children, list):
        return
    for position, child in enumerate(children):
        if not isinstance(child, dict):
            continue
        here = f"{field}.children[{position}]"
        if "children" in child:
            yield from _tree(here, child)
        else:
            yield from _mailbox(here, f"actor {child.get('name', '?')!r}", child)


def _mailbox(field: str, who: str, spec: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    mailbox = spec.get("mailbox")
    if not isinstance(mailbox, dict):
        return
    capacity = _number(mailbox.get("capacity"))
    if capacity is not None and capacity > MAX_MAILBOX:
        yield (
            f"{field}.mailbox.capacity",
            "RT703",
            f"{who} has a mailbox of {capacity:,.0f} (over {MAX_MAILBOX:,}): a backlog that "
            "large hides overload",
        )


def _number(value: Any) -> float | None:
    """A capacity as written: a number, a string of one, or ``${VAR:-N}``'s N."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        default = _DEFAULT.match(value.strip())
        text = default.group(1) if default else value
        try:
            return float(text.strip())
        except ValueError:
            return None
    return None
