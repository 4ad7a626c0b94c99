"""Topology files that used to crash, hang or answer in Python's words.

Each is refused with a ``TopologyError`` whose lines read ``file:line:
field.path: message``, quickly, through ``parse_topology``/``load_topology``
and through ``python -m runtime validate|start`` (exit code 2): recursive
aliases, alias bombs, nesting without end, duplicate keys, malformed
``${...}`` references, values of the wrong shape at every level, and
misspelt keys (which get a suggestion).
"""

from __future__ import annotations

import copy
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import runtime._yaml
from runtime import load_topology, parse_topology
from runtime._cli import main
from runtime._topology import iter_children
from runtime._yaml import MAX_DEPTH, MAX_NODES
from runtime.errors import TopologyError
from tests.clikit import run_cli

LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<field>\S+): (?P<message>.+)$", re.DOTALL)
PYTHON_WORDS = (
    "object has no attribute",
    "object is not",
    "Traceback",
    "NoneType",
    "<class",
    "unhashable",
    "argument must be",
    "recursion",
    "__init__()",
)


def errors_of(text: str, source: str = "t.yaml") -> list[str]:
    """The error lines ``parse_topology`` reports for ``text`` (dedented)."""
    with pytest.raises(TopologyError) as info:
        parse_topology(textwrap.dedent(text).lstrip("\n"), source)
    return info.value.errors


def only_error(text: str) -> str:
    (error,) = errors_of(text)
    return error


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


RECURSIVE = """
supervisor:
  name: root
  children: &k [{name: loop, children: *k}]
"""


def laughs(levels: int = 9) -> str:
    """Nine levels of lists, each repeating the previous alias nine times,
    in a child's ``args``: 9**9 strings once expanded."""
    lines = [
        "supervisor:",
        "  name: root",
        "  children:",
        "    - name: a",
        "      actor: tests.sample_actors:Greeter",
        "      args:",
        "        greeting:",
        "          - &l0 [lol]",
    ]
    lines += [f"          - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# Recursive aliases


def test_recursive_alias_is_refused_at_the_alias() -> None:
    """An alias inside the node it names is reported at its line and field,
    instead of recursing without end."""
    error = only_error(RECURSIVE)
    assert error == (
        "t.yaml:3: supervisor.children[0].children: alias *k is inside &k, the node it "
        "names, so it would contain itself without end"
    )


def test_recursive_mapping_alias_is_refused() -> None:
    """A mapping that contains itself is refused the same way."""
    error = only_error(
        """
        system: s
        supervisor: &root
          name: root
          children:
            - name: again
              <<: *root
        """
    )
    assert error.startswith("t.yaml:6: supervisor.children[0].<<: alias *root is inside &root")


def test_recursive_alias_through_load_topology(tmp_path: Path) -> None:
    """``load_topology`` reports it with the file's path."""
    path = write(tmp_path, RECURSIVE)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    (error,) = info.value.errors
    assert error.startswith(f"{path}:3: supervisor.children[0].children: alias *k is inside &k")


# Alias bombs


def test_billion_laughs_is_refused_quickly() -> None:
    """Aliases that would expand to 9**9 nodes are refused at the alias that
    passes the bound, in well under a second."""
    started = time.perf_counter()
    error = only_error(laughs())
    elapsed = time.perf_counter() - started
    match = LINE.match(error)
    assert match is not None, error
    assert match["field"].startswith("supervisor.children[0].args.greeting[")
    assert f"past {MAX_NODES:,}" in match["message"]
    assert re.match(r"alias \*l4 stands for 13,942 nodes", match["message"]), error
    assert elapsed < 0.5, elapsed


def test_aliases_below_the_bound_are_expanded() -> None:
    """The same construction with four levels (about 16,000 nodes) loads,
    each alias standing for a full copy."""
    topology = parse_topology(laughs(levels=4))
    levels = topology.supervisor.children[0].args["greeting"]
    assert len(levels[4]) == 9 and levels[4][8][8][8][8] == ["lol"]


def test_the_bound_counts_every_node_not_only_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain list longer than the bound is refused too, at the item that
    passes it. (The bound is lowered here: PyYAML, in pure Python, reads
    100,000 nodes in seconds.)"""
    monkeypatch.setattr(runtime._yaml, "MAX_NODES", 20)
    error = only_error(f"system: s\nbig: [{', '.join(['0'] * 30)}]\n")
    assert error == "t.yaml:2: big[15]: the document has more than 20 nodes"


def test_aliases_and_merges_still_load() -> None:
    """A writer repeated with ``&writer`` and ``<<: *writer`` (as the docs
    example did before it became a pool): every copy keeps the anchor's
    fields, and its own ``name`` overrides the merged one without being a
    duplicate key."""
    topology = parse_topology(
        textwrap.dedent(
            """
            supervisor:
              name: root
              children:
                - name: writers
                  children:
                    - &writer
                      name: writer-1
                      actor: actors.docs_writer:SectionWriter
                      circuit_breaker: {failures: 3, reset_timeout: 1s}
                      args: {fail_every: "20"}
                    - {<<: *writer, name: writer-2}
                    - {<<: *writer, name: writer-3}
            """
        ),
        "t.yaml",
    )
    writers = {
        path: child for path, child in iter_children(topology.supervisor) if "/writers/" in path
    }
    assert sorted(writers) == [f"root/writers/writer-{n}" for n in range(1, 4)]
    for child in writers.values():
        assert child.actor.__name__ == "SectionWriter"
        assert child.args == {"fail_every": "20"}
        assert child.circuit_breaker is not None and child.circuit_breaker.failures == 3


def test_an_alias_to_a_scalar_is_one_node() -> None:
    """Aliases of plain values keep working: each copy is the value."""
    topology = parse_topology(
        """
        system: &n shared
        supervisor:
          name: root
          children:
            - {name: a, actor: "tests.sample_actors:Greeter", args: {greeting: *n}}
        """
    )
    assert topology.supervisor.children[0].args == {"greeting": "shared"}


# Nesting


def test_nesting_deeper_than_the_bound_is_refused() -> None:
    """Lists nested past ``MAX_DEPTH`` are refused at the first level too
    deep, not with a RecursionError."""
    depth = 500
    error = only_error(f"system: s\nx: {'[' * depth}{']' * depth}\n")
    assert error.startswith("t.yaml:2: x[0][0]")
    assert error.endswith(f": nested more than {MAX_DEPTH} levels deep")


def test_supervisors_nested_to_the_bound_load() -> None:
    """Forty-eight nested supervisors (96 YAML levels) load: the bound leaves
    room for any real tree."""
    lines = ["supervisor:", "  name: s0", "  children:"]
    indent = "    "
    for level in range(1, 48):
        lines += [f"{indent}- name: s{level}", f"{indent}  children:"]
        indent += "    "
    lines.append(f'{indent}- {{name: leaf, actor: "tests.sample_actors:Echo"}}')
    topology = parse_topology("\n".join(lines) + "\n")
    ((path, _child),) = iter_children(topology.supervisor)
    assert path.count("/") == 48


# Duplicate keys


def test_duplicate_key_names_both_lines() -> None:
    """A key written twice in one mapping is an error at the second, naming
    the first, instead of the last one silently winning."""
    error = only_error(
        """
        system: s
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              concurrency: 2
              name: b
        """
    )
    assert error == "t.yaml:8: supervisor.children[0]: duplicate key 'name' (first at line 5)"


def test_every_duplicate_key_is_reported() -> None:
    """Duplicates in flow mappings, at the top level and in ``args`` are all
    reported, in line order."""
    errors = errors_of(
        """
        system: s
        supervisor:
          name: root
          children:
            - {name: a, actor: "tests.sample_actors:Greeter", args: {greeting: x, greeting: y}}
        system: t
        """
    )
    assert errors == [
        "t.yaml:5: supervisor.children[0].args: duplicate key 'greeting' (first at line 5)",
        "t.yaml:6: (top level): duplicate key 'system' (first at line 1)",
    ]


def test_keys_equal_as_values_are_duplicates() -> None:
    """``1`` and ``0x1`` are one key once read: also a duplicate."""
    error = only_error("system: s\nsupervisor: {name: root}\nmetrics: {1: a, 0x1: b}\n")
    assert error == "t.yaml:3: metrics: duplicate key 1 (first at line 3)"


def test_a_key_may_override_a_merged_one() -> None:
    """``<<: *anchor`` then a key of the anchor is an override, as YAML
    intends, not a duplicate."""
    topology = parse_topology(
        """
        supervisor:
          name: root
          children:
            - &echo {name: a, actor: "tests.sample_actors:Echo", concurrency: 2}
            - {<<: *echo, name: b}
        """
    )
    b = topology.supervisor.children[1]
    assert (b.name, b.concurrency) == ("b", 2)


def test_an_anchor_defined_twice_is_refused() -> None:
    """Two anchors of one name are reported at the second, naming the first."""
    error = only_error("system: &n a\nstore: &n b\n")
    assert error == "t.yaml:2: store: anchor &n is defined twice (first at line 1)"


# ${...} references


NAME_RULE = "a variable name is a letter or '_', then letters, digits or '_'"


@pytest.mark.parametrize(
    ("value", "reference", "why"),
    [
        ("memory://${STORE", "${STORE", "it has no closing '}'"),
        ("memory://${}", "${}", NAME_RULE),
        ("${1STORE}", "${1STORE}", NAME_RULE),
        ("${ STORE }", "${ STORE }", NAME_RULE),
        (
            "${STORE:memory://}",
            "${STORE:memory://}",
            "after the name STORE, only :-default may follow",
        ),
        (
            "${STORE-memory://}",
            "${STORE-memory://}",
            "after the name STORE, only :-default may follow",
        ),
        ("${STORE:=x}", "${STORE:=x}", "after the name STORE, only :-default may follow"),
        (
            "${STORE:-${OTHER}}",
            "${STORE:-${OTHER}",
            "a default cannot hold another reference, and ends at the first '}'",
        ),
    ],
    ids=["unclosed", "empty", "digit", "spaces", "colon", "dash", "assign", "nested"],
)
def test_malformed_reference_is_reported_where_it_is(value: str, reference: str, why: str) -> None:
    """A ``${`` that does not start ``${NAME}`` or ``${NAME:-default}`` is an
    error naming the reference, its line and field, instead of being kept
    as text."""
    error = only_error(f"system: s\nsupervisor: {{name: root}}\nstore: '{value}'\n")
    assert error == (
        f"t.yaml:3: store: malformed environment variable reference {reference!r}: {why}; "
        "write ${NAME} or ${NAME:-default}"
    )


def test_a_long_malformed_reference_is_cut_short() -> None:
    """An unclosed reference runs to the end of the value; it is quoted cut short."""
    error = only_error("system: 'x ${A" + "b" * 200 + "'\n")
    assert "'${Abbbb" in error and " ...'" in error and len(error) < 200


def test_malformed_and_missing_references_are_reported_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every bad reference is reported in one pass, in the file's order."""
    monkeypatch.delenv("UNSET_VAR", raising=False)
    errors = errors_of(
        """
        system: ${UNSET_VAR}
        supervisor:
          name: root
          children:
            - {name: a, actor: "tests.sample_actors:Greeter", args: {greeting: "hi ${NAME"}}
        """
    )
    assert [error.split(": ", 2)[:2] for error in errors] == [
        ["t.yaml:1", "system"],
        ["t.yaml:5", "supervisor.children[0].args.greeting"],
    ]


def test_well_formed_references_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${NAME}``, ``${NAME:-default}``, an empty default and several in one
    value are replaced as before; a ``$`` without ``{`` is text."""
    monkeypatch.setenv("HOST", "db")
    monkeypatch.delenv("PORT", raising=False)
    topology = parse_topology(
        'store: "postgresql://${HOST}:${PORT:-5432}/x${EMPTY_DEFAULT_VAR:-}"\n'
        "supervisor:\n"
        "  name: root\n"
        "  children:\n"
        "    - {name: a, actor: 'tests.sample_actors:Greeter', args: {greeting: '$5 {x} $HOST'}}\n"
    )
    assert topology.store == "postgresql://db:5432/x"
    assert topology.supervisor.children[0].args == {"greeting": "$5 {x} $HOST"}


# Values of the wrong shape, at every level

BASE: dict[str, Any] = {
    "system": "s",
    "store": "memory://",
    "metrics": {"listen": None, "tracing": False},
    "resources": {
        "r": {
            "kind": "tests.resource_kinds:Echo",
            "max_concurrency": 2,
            "rate": {"requests": 1, "period": "1s"},
            "retry": {"attempts": 2, "initial": 1, "multiplier": 2, "max": 3},
            "circuit_breaker": {"failures": 2, "reset_timeout": 1},
            "mailbox": {"capacity": 3, "overflow": "block"},
            "timeout": 3,
            "shutdown_timeout": 1,
            "greeting": "hi",
        },
        "llm": {"kind": "llm", "provider": "fake", "headers": {"a": "b"}, "fake": {"seed": 1}},
        "mcp": {"kind": "mcp", "command": ["x"], "env": {"A": "b"}, "inherit_env": False},
    },
    "supervisor": {
        "name": "root",
        "strategy": "one_for_one",
        "max_restarts": 3,
        "within": 5,
        "backoff": {"initial": 1, "max": 2, "multiplier": 2, "jitter": 0.1},
        "children": [
            {
                "name": "a",
                "actor": "tests.sample_actors:Echo",
                "restart": "permanent",
                "mailbox": {"capacity": 3, "overflow": "block"},
                "checkpoint": "off",
                "circuit_breaker": {"failures": 2, "reset_timeout": 1},
                "shutdown_timeout": 1,
                "concurrency": 1,
                "args": {},
            },
            {"name": "sub", "children": [{"name": "b", "actor": "tests.sample_actors:Echo"}]},
        ],
    },
}

# Fields that may be null.
NULLABLE = {
    "store",
    "metrics.listen",
    "resources.r.max_concurrency",
    "resources.r.rate",
    "resources.r.retry",
    "resources.r.circuit_breaker",
    "resources.r.timeout",
    "supervisor.backoff",
    "supervisor.children[0].circuit_breaker",
}
WRONG: dict[str, Any] = {"scalar": "text", "number": 3, "list": [1, 2], "mapping": {"x": 1}}


def fields(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every field path of ``value`` (``a.b[0].c``) and its value."""
    found: list[tuple[str, Any]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip(".")
        found.append((sub, item))
        if isinstance(item, (dict, list)) and item:
            found += fields(item, sub)
    return found


def wrong_shapes() -> list[pytest.ParameterSet]:
    """For each field, values of every shape but its own (and null unless it
    may be null), where the field cannot take them."""
    cases = []
    for path, value in fields(BASE):
        shape = "mapping" if isinstance(value, dict) else "list" if isinstance(value, list) else ""
        for name, wrong in WRONG.items():
            if shape == name or (not shape and name in ("scalar", "number")):
                continue
            cases.append(pytest.param(path, wrong, id=f"{path}={name}"))
        if path not in NULLABLE and value is not None:
            cases.append(pytest.param(path, None, id=f"{path}=null"))
    return cases


def replaced(path: str, wrong: Any) -> dict[str, Any]:
    """``BASE`` with the field at ``path`` set to ``wrong``."""
    data = copy.deepcopy(BASE)
    *parents, last = re.findall(r"[^.\[\]]+", path)
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = wrong
    return data


def test_the_base_of_the_wrong_shapes_is_valid() -> None:
    """The topology the next test breaks field by field loads as it is."""
    parse_topology(yaml.safe_dump(BASE))


@pytest.mark.parametrize(("path", "wrong"), wrong_shapes())
def test_a_value_of_the_wrong_shape_is_a_sentence_at_its_field(path: str, wrong: Any) -> None:
    """A scalar, list, mapping or null where a field takes another shape is
    a ``TopologyError`` at that field, whose words are the user's (YAML's and
    the topology's), never Python's."""
    errors = errors_of(yaml.safe_dump(replaced(path, wrong), sort_keys=False))
    for error in errors:
        match = LINE.match(error)
        assert match is not None, error
        assert not any(word in error for word in PYTHON_WORDS), error
    assert path in [error.split(": ")[1] for error in errors], errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "supervisor: {name: r, children: [{name: a, actor: 'tests.sample_actors:Echo', "
            "args: [1, 2]}]}",
            "t.yaml:1: supervisor.children[0].args: expected a mapping of keyword arguments "
            "for the actor (name: value); got [1, 2]",
        ),
        (
            "supervisor: {name: r, children: {a: {actor: 'tests.sample_actors:Echo'}}}",
            "t.yaml:1: supervisor.children: expected a list of entries, each a mapping with "
            "name and actor (or children); got {'a': {'actor': 'tests.sample_actors:Echo'}}",
        ),
        (
            "supervisor: {name: r, children: null}",
            "t.yaml:1: supervisor.children: expected a list of entries, each a mapping with "
            "name and actor (or children); got None",
        ),
        ("metrics: {tracing: 1}", "t.yaml:1: metrics.tracing: expected true or false; got 1"),
        (
            "supervisor: {name: r, backoff: {multiplier: true}}",
            "t.yaml:1: supervisor.backoff.multiplier: expected a number; got True",
        ),
        (
            "supervisor: {name: r, backoff: {jitter: .nan}}",
            "t.yaml:1: supervisor.backoff.jitter: expected a number; got nan",
        ),
        (
            "supervisor: {name: r, children: [{name: a, actor: [x]}]}",
            "t.yaml:1: supervisor.children[0].actor: expected an import path "
            "'package.module:Class', got ['x']",
        ),
        (
            "resources: {r: {kind: null}}",
            "t.yaml:1: resources.r.kind: expected postgres, llm, mcp or an import path "
            "'package.module:Class'; got None",
        ),
        (
            "resources: {m: {kind: mcp, command: x}}",
            "t.yaml:1: resources.m.command: expected a list; got 'x'",
        ),
        (
            "resources: {m: {kind: mcp, command: [x], env: [A]}}",
            "t.yaml:1: resources.m.env: expected a mapping; got ['A']",
        ),
        (
            "resources: {m: {kind: mcp, command: [x], env: {A: [1]}}}",
            "t.yaml:1: resources.m.env.A: expected a string; got [1]",
        ),
        (
            "system: 2024-05-01",
            "t.yaml:1: system: expected a string; got 2024-05-01 (YAML reads it as a date: "
            "quote it for a string)",
        ),
        (
            "supervisor: {name: no}",
            "t.yaml:1: supervisor.name: expected a string; got False (YAML reads a bare yes, "
            "no, on, off, true or false as a boolean: quote it)",
        ),
    ],
    ids=[
        "args-list",
        "children-mapping",
        "children-null",
        "bool-from-int",
        "float-from-bool",
        "float-nan",
        "actor-list",
        "kind-null",
        "list-from-scalar",
        "dict-from-list",
        "dict-value",
        "date-for-string",
        "bool-for-string",
    ],
)
def test_wrong_shapes_read_as_sentences(text: str, expected: str) -> None:
    """The messages for the commonest wrong shapes, word for word."""
    assert errors_of(text) == [expected]


def test_a_huge_value_is_quoted_cut_short() -> None:
    """A large value in the wrong place is quoted by its start only."""
    error = only_error(f"system: [{', '.join(['item'] * 500)}]\n")
    assert error.startswith("t.yaml:1: system: expected a string; got ['item', ")
    assert error.endswith(" ...") and len(error) < 200


def test_booleans_load_from_yaml_and_from_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tracing: false`` loads (booleans used to be read as whole numbers),
    and so does a boolean word from ``${VAR}``."""
    assert parse_topology("metrics: {tracing: false}").metrics.tracing is False
    monkeypatch.setenv("INHERIT", "yes")
    topology = parse_topology(
        "resources: {m: {kind: mcp, command: [x], inherit_env: '${INHERIT}'}}\n"
        "supervisor: {name: root}\n"
    )
    assert topology.resources["m"].options.inherit_env is True


# Misspelt keys


@pytest.mark.parametrize(
    ("text", "field", "wrong", "meant"),
    [
        ("sytem: s", "sytem", "sytem", "system"),
        (
            "supervisor: {name: r, stratgy: one_for_all}",
            "supervisor.stratgy",
            "stratgy",
            "strategy",
        ),
        (
            "supervisor: {name: r, children: [{name: a, actor: 'tests.sample_actors:Echo', "
            "concurency: 4}]}",
            "supervisor.children[0].concurency",
            "concurency",
            "concurrency",
        ),
        (
            "supervisor: {name: r, children: [{name: a, actor: 'tests.sample_actors:Echo', "
            "mailbox: {capacty: 4}}]}",
            "supervisor.children[0].mailbox.capacty",
            "capacty",
            "capacity",
        ),
        (
            "supervisor: {name: r, children: [{name: a, actor: 'tests.sample_actors:Echo', "
            "circuit_breaker: {failure: 4}}]}",
            "supervisor.children[0].circuit_breaker.failure",
            "failure",
            "failures",
        ),
        (
            "supervisor: {name: r, backoff: {jiter: 0.2}}",
            "supervisor.backoff.jiter",
            "jiter",
            "jitter",
        ),
        ("metrics: {listn: '9464'}", "metrics.listn", "listn", "listen"),
        (
            "resources: {r: {kind: 'tests.resource_kinds:Echo', max_concurency: 4}}",
            "resources.r.max_concurency",
            "max_concurency",
            "max_concurrency",
        ),
        (
            "resources: {r: {kind: 'tests.resource_kinds:Echo', greting: hi}}",
            "resources.r.greting",
            "greting",
            "greeting",
        ),
        (
            "resources: {r: {kind: 'tests.resource_kinds:Echo', rate: {request: 1, period: 1s}}}",
            "resources.r.rate.request",
            "request",
            "requests",
        ),
        (
            "resources: {r: {kind: 'tests.resource_kinds:Echo', retry: {attempt: 2}}}",
            "resources.r.retry.attempt",
            "attempt",
            "attempts",
        ),
        (
            "resources: {l: {kind: llm, provider: fake, fake: {sed: 2}}}",
            "resources.l.fake.sed",
            "sed",
            "seed",
        ),
    ],
    ids=[
        "top-level",
        "supervisor",
        "child",
        "mailbox",
        "circuit-breaker",
        "backoff",
        "metrics",
        "resource",
        "resource-kind-option",
        "rate",
        "retry",
        "nested-option",
    ],
)
def test_misspelt_key_suggests_the_nearest_known_one(
    text: str, field: str, wrong: str, meant: str
) -> None:
    """An unknown key close to a known one says which it may have meant."""
    errors = [error for error in errors_of(text) if f": {field}: " in error]
    assert len(errors) == 1, errors_of(text)
    assert f"unknown key {wrong!r} (did you mean {meant!r}?); known keys: " in errors[0]


def test_an_entry_with_a_misspelt_actor_says_so() -> None:
    """An entry with neither ``actor`` nor ``children`` points at the key
    that looks like one of them."""
    error = only_error("supervisor: {name: r, children: [{name: a, actr: x}]}")
    assert error == (
        "t.yaml:1: supervisor.children[0]: an entry needs actor: (an actor) or children: "
        "(a supervisor); it has 'actr' (did you mean 'actor'?)"
    )


# YAML syntax


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system: s\n---\nsystem: t\n", "t.yaml:2: (yaml): found a second document (after ---)"),
        ("system: [s\n", "t.yaml:2: (yaml): expected ',' or ']', but got '<stream end>' (while "),
        ("system: s\x01\n", "t.yaml:1: (yaml): character #x0001 is not allowed in YAML text"),
        ("system: *nowhere\n", "t.yaml:1: (yaml): found undefined alias 'nowhere'"),
    ],
    ids=["two-documents", "unclosed-list", "control-character", "undefined-alias"],
)
def test_yaml_errors_say_what_and_where(text: str, expected: str) -> None:
    """Syntax errors keep PyYAML's words, with where the construct began."""
    assert only_error(text).startswith(expected)


# Through the command line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (RECURSIVE, ":3: supervisor.children[0].children: alias *k is inside &k"),
        (laughs(), ":13: supervisor.children[0].args.greeting[5][6]: alias *l4 stands for "),
        ("system: a\nsystem: b\n", ":2: (top level): duplicate key 'system' (first at line 1)"),
        ("system: '${NAME'\n", ":1: system: malformed environment variable reference '${NAME'"),
        ("system: s\nsupervisor: {name: r, children: {a: 1}}\n", ":2: supervisor.children: "),
        ("sytem: s\n", ":1: sytem: unknown key 'sytem' (did you mean 'system'?)"),
    ],
    ids=["recursive-alias", "alias-bomb", "duplicate-key", "malformed-reference", "shape", "typo"],
)
def test_validate_exits_2_with_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    """``python -m runtime validate`` prints the error line and exits 2."""
    path = write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}{expected}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text", [RECURSIVE, laughs()], ids=["recursive-alias", "alias-bomb"])
def test_start_exits_2_quickly(tmp_path: Path, text: str) -> None:
    """``python -m runtime start`` refuses the file before starting anything,
    exits 2 and shows no traceback."""
    path = write(tmp_path, text)
    result = run_cli("start", str(path), "--until-idle")
    assert result.returncode == 2, result.stderr
    assert f"{path}:" in result.stderr
    assert "Traceback" not in result.stderr
