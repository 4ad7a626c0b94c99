"""Topology files and specs: what parses, what is refused, and how refusals read.

Every refusal is a ``TopologyError`` whose ``errors`` hold one line per
problem, ``file:line: field.path: message``; the table below checks the line
and the field as well as the message, since a user fixes a file by them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from runtime import (
    BackoffSpec,
    BreakerSpec,
    ChildSpec,
    MailboxSpec,
    MetricsSpec,
    SupervisorSpec,
    Topology,
    load_topology,
    parse_topology,
)
from runtime._topology import iter_children
from runtime.errors import ActorSystemError, TopologyError
from tests.sample_actors import Echo, Greeter


def write(tmp_path: Path, text: str) -> Path:
    """Write dedented YAML to ``topology.yaml``; its first line is line 1."""
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def located(error: str) -> str:
    """``file:line: field.path`` of an error line, without its message."""
    where, field, _message = error.split(": ", 2)
    return f"{where}: {field}"


def errors_of(path: Path) -> list[str]:
    """The error lines ``load_topology`` reports for ``path``."""
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    return info.value.errors


class Broken(NamedTuple):
    """A broken topology file and the one error it must give."""

    id: str
    text: str
    line: int
    field: str
    message: str  # the message, or its start when the rest quotes Python


BROKEN = [
    Broken(
        "unknown-strategy",
        """
        supervisor:
          name: root
          strategy: one_for_some
        """,
        3,
        "supervisor.strategy",
        "expected one of one_for_one, one_for_all, rest_for_one",
    ),
    Broken(
        "negative-max-restarts",
        """
        supervisor:
          name: root
          max_restarts: -1
        """,
        3,
        "supervisor.max_restarts",
        "expected a whole number of at least 0; got -1",
    ),
    Broken(
        "fractional-concurrency",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              concurrency: 2.5
        """,
        6,
        "supervisor.children[0].concurrency",
        "expected a whole number; got 2.5",
    ),
    Broken(
        "boolean-capacity",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              mailbox: {capacity: true}
        """,
        6,
        "supervisor.children[0].mailbox.capacity",
        "expected a whole number; got True",
    ),
    Broken(
        "duplicate-child-name",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
            - name: b
              actor: tests.sample_actors:Echo
            - name: a
              actor: tests.sample_actors:Echo
        """,
        8,
        "supervisor.children[2].name",
        "duplicate child name 'a' under supervisor 'root'",
    ),
    Broken(
        "bad-name",
        """
        supervisor:
          name: root/main
        """,
        2,
        "supervisor.name",
        "a name is letters, digits, '_', '-' or '.' (no '/'); got 'root/main'",
    ),
    Broken(
        "missing-supervisor-name",
        """
        system: reviews
        supervisor:
          strategy: one_for_all
        """,
        2,
        "supervisor.name",
        "required field is missing",
    ),
    Broken(
        "actor-module-missing",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.no_such_module:Echo
        """,
        5,
        "supervisor.children[0].actor",
        "cannot import module 'tests.no_such_module'",
    ),
    Broken(
        "actor-class-missing",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Nobody
        """,
        5,
        "supervisor.children[0].actor",
        "module 'tests.sample_actors' has no attribute 'Nobody'",
    ),
    Broken(
        "actor-not-an-actor",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:NotAnActor
        """,
        5,
        "supervisor.children[0].actor",
        "tests.sample_actors:NotAnActor is not a subclass of runtime.Actor",
    ),
    Broken(
        "actor-path-without-colon",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors.Echo
        """,
        5,
        "supervisor.children[0].actor",
        "expected an import path 'package.module:Class', got 'tests.sample_actors.Echo'",
    ),
    Broken(
        "unknown-key-top-level",
        """
        system: reviews
        supervisor:
          name: root
        colour: blue
        """,
        4,
        "colour",
        "unknown key 'colour' (did you mean 'cluster'?); known keys: system, supervisor, "
        "store, resources, metrics, locks, workflows, cluster",
    ),
    Broken(
        "unknown-key-in-child",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              colour: blue
        """,
        6,
        "supervisor.children[0].colour",
        "unknown key 'colour'; known keys: name, actor, restart, mailbox, checkpoint,"
        " circuit_breaker, shutdown_timeout, concurrency, args",
    ),
    Broken(
        "mailbox-capacity-zero",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              mailbox:
                capacity: 0
        """,
        7,
        "supervisor.children[0].mailbox.capacity",
        "expected a whole number of at least 1; got 0",
    ),
    Broken(
        "unknown-overflow",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              mailbox:
                capacity: 10
                overflow: spill
        """,
        8,
        "supervisor.children[0].mailbox.overflow",
        "expected one of block, reject, drop_oldest, drop_newest",
    ),
    Broken(
        "bad-duration",
        """
        supervisor:
          name: root
          within: 5 parsecs
        """,
        3,
        "supervisor.within",
        "expected a duration such as 5, 500ms, 5s or 2m, got '5 parsecs'",
    ),
    Broken(
        "entry-with-neither-actor-nor-children",
        """
        supervisor:
          name: root
          children:
            - name: a
              restart: transient
        """,
        4,
        "supervisor.children[0]",
        "an entry needs actor: (an actor) or children: (a supervisor)",
    ),
    Broken(
        "entry-with-both-actor-and-children",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              children: []
        """,
        4,
        "supervisor.children[0]",
        "an entry has either actor: (an actor) or children: (a supervisor)",
    ),
    Broken(
        "unset-variable-without-default",
        """
        system: reviews
        store: ${UNSET_VAR}
        supervisor:
          name: root
        """,
        2,
        "store",
        "environment variable UNSET_VAR is not set and has no default",
    ),
    Broken(
        "yaml-syntax-error",
        """
        supervisor:
          name: root
          children:
            - name: a
             actor: tests.sample_actors:Echo
        """,
        5,
        "(yaml)",
        "expected <block end>, but found '<block mapping start>'",
    ),
    Broken(
        "args-do-not-fit-init",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Greeter
              args: {greeting: hello, colour: red}
        """,
        6,
        "supervisor.children[0].args",
        "do not fit Greeter.__init__: got an unexpected keyword argument 'colour'",
    ),
    Broken(
        "handler-without-annotation",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Unannotated
        """,
        5,
        "supervisor.children[0].actor",
        "handler Unannotated.ping: annotate the message parameter with its type, e.g. `msg: Add`",
    ),
    Broken(
        "unknown-checkpoint-policy",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              checkpoint: sometimes
        """,
        6,
        "supervisor.children[0].checkpoint",
        "expected off, message, manual or a period such as 30s, got 'sometimes'",
    ),
    Broken(
        "jitter-above-one",
        """
        supervisor:
          name: root
          backoff:
            initial: 10ms
            jitter: 2
        """,
        5,
        "supervisor.backoff.jitter",
        "expected a fraction between 0 and 1; got 2.0",
    ),
    Broken(
        "spec-that-is-not-a-mapping",
        """
        supervisor:
          name: root
          children:
            - name: a
              actor: tests.sample_actors:Echo
              mailbox: 5
        """,
        6,
        "supervisor.children[0].mailbox",
        "expected a mapping of MailboxSpec fields; got 5",
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=[case.id for case in BROKEN])
def test_broken_topology_is_reported_at_its_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Broken
) -> None:
    """Each broken file gives exactly one error, ``file:line: field.path:
    message``, at the line and field of the problem, saying what is wrong."""
    monkeypatch.delenv("UNSET_VAR", raising=False)
    path = write(tmp_path, case.text)
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:{case.line}: {case.field}: {case.message}"), error


def test_every_error_in_a_file_is_reported_in_line_order(tmp_path: Path) -> None:
    """Problems anywhere in the tree, several in one spec, and ones of every
    kind (unknown keys, bad values, imports, handlers, args, duplicates) are
    all reported in one pass, in the order of their lines."""
    path = write(
        tmp_path,
        """
        system: reviews
        supervisor:
          name: root
          strategy: one_for_some
          max_restarts: -1
          children:
            - name: a
              actor: tests.sample_actors:Unannotated
              mailbox:
                size: 3
                capacity: 0
                overflow: spill
            - name: b
              actor: tests.sample_actors:Greeter
              args: {greeting: hello, colour: red}
            - name: c
              actor: tests.no_such_module:Echo
              checkpoint: sometimes
            - name: c
              children: []
        colour: blue
        """,
    )
    assert [located(error) for error in errors_of(path)] == [
        f"{path}:4: supervisor.strategy",
        f"{path}:5: supervisor.max_restarts",
        f"{path}:8: supervisor.children[0].actor",
        f"{path}:10: supervisor.children[0].mailbox.size",
        f"{path}:11: supervisor.children[0].mailbox.capacity",
        f"{path}:12: supervisor.children[0].mailbox.overflow",
        f"{path}:15: supervisor.children[1].args",
        f"{path}:17: supervisor.children[2].actor",
        f"{path}:18: supervisor.children[2].checkpoint",
        f"{path}:19: supervisor.children[3].name",
        f"{path}:21: colour",
    ]


def test_topology_error_is_a_value_error_with_all_lines_in_its_message(
    tmp_path: Path,
) -> None:
    """``TopologyError`` is an ``ActorSystemError`` and a ``ValueError``; its
    message is its error lines, so an uncaught one still shows them all."""
    path = write(
        tmp_path,
        """
        supervisor:
          name: root
          strategy: one_for_some
          within: 0
        """,
    )
    with pytest.raises(ValueError, match=re.escape("supervisor.strategy")) as info:
        load_topology(path)
    assert isinstance(info.value, ActorSystemError)
    assert str(info.value) == "\n".join(info.value.errors)
    assert len(info.value.errors) == 2


def test_unreadable_file_is_a_topology_error(tmp_path: Path) -> None:
    """A file that cannot be read is reported as a ``TopologyError`` naming it."""
    path = tmp_path / "missing.yaml"
    (error,) = errors_of(path)
    assert error.startswith(f"{path}:")
    assert "cannot read" in error


def test_parse_topology_names_its_source() -> None:
    """YAML text parsed directly is reported under the source name it is given."""
    with pytest.raises(TopologyError) as info:
        parse_topology("supervisor: {name: root, within: -1}\n", source="inline.yaml")
    assert info.value.errors == [
        "inline.yaml:1: supervisor.within: a duration must be zero or more, got -1"
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), (3, 3.0), ("1.5s", 1.5), ("1h", 3600.0)],
)
def test_durations_become_seconds(written: object, seconds: float) -> None:
    """A duration is a number of seconds or a string with ms, s, m or h."""
    topology = parse_topology(
        f"""
supervisor:
  name: root
  within: {written}
  children:
    - name: a
      actor: tests.sample_actors:Echo
      shutdown_timeout: {written}
"""
    )
    assert topology.supervisor.within == pytest.approx(seconds)
    (child,) = topology.supervisor.children
    assert isinstance(child, ChildSpec)
    assert child.shutdown_timeout == pytest.approx(seconds)


def test_variable_is_interpolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR}`` is replaced by the environment variable's value, also inside
    a longer string and inside ``args``."""
    monkeypatch.setenv("RUNTIME_TEST_DB", "/tmp/reviews.db")
    monkeypatch.setenv("RUNTIME_TEST_GREETING", "hello")
    topology = parse_topology(
        """
store: sqlite://${RUNTIME_TEST_DB}
supervisor:
  name: root
  children:
    - name: a
      actor: tests.sample_actors:Greeter
      args: {greeting: "${RUNTIME_TEST_GREETING}, world"}
"""
    )
    assert topology.store == "sqlite:///tmp/reviews.db"
    (child,) = topology.supervisor.children
    assert isinstance(child, ChildSpec)
    assert child.args == {"greeting": "hello, world"}


def test_variable_default_is_used_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR:-default}`` is the default when VAR is unset, and typed fields
    structure the result (here a whole number)."""
    monkeypatch.delenv("RUNTIME_TEST_CAPACITY", raising=False)
    topology = parse_topology(
        """
supervisor:
  name: root
  children:
    - name: a
      actor: tests.sample_actors:Echo
      mailbox: {capacity: "${RUNTIME_TEST_CAPACITY:-16}"}
"""
    )
    (child,) = topology.supervisor.children
    assert isinstance(child, ChildSpec)
    assert child.mailbox.capacity == 16


def test_variable_set_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR:-default}`` is VAR's value when VAR is set."""
    monkeypatch.setenv("RUNTIME_TEST_SYSTEM", "from-env")
    topology = parse_topology(
        "system: ${RUNTIME_TEST_SYSTEM:-fallback}\nsupervisor: {name: root}\n"
    )
    assert topology.system == "from-env"


def test_mailbox_defaults() -> None:
    """A mailbox holds 100 messages and blocks the sender when full."""
    assert MailboxSpec() == MailboxSpec(capacity=100, overflow="block")


def test_supervisor_defaults() -> None:
    """A supervisor is one_for_one, allows 3 restarts within 5 s, has no
    backoff and no children."""
    spec = SupervisorSpec(name="root")
    assert spec.strategy == "one_for_one"
    assert spec.max_restarts == 3
    assert spec.within == 5.0
    assert spec.backoff is None
    assert spec.children == []


def test_child_defaults() -> None:
    """A child is permanent, stops within 5 s, handles one message at a time,
    is not checkpointed, has no breaker, a default mailbox and no args."""
    spec = ChildSpec(name="a", actor=Echo)
    assert spec.restart == "permanent"
    assert spec.shutdown_timeout == 5.0
    assert spec.concurrency == 1
    assert spec.checkpoint == "off"
    assert spec.circuit_breaker is None
    assert spec.mailbox == MailboxSpec()
    assert spec.args == {}


def test_backoff_and_breaker_defaults() -> None:
    """Backoff starts at 100 ms, doubles up to 30 s with 10% jitter; a breaker
    opens after 5 crashes and retries after 60 s."""
    assert BackoffSpec() == BackoffSpec(initial=0.1, max=30.0, multiplier=2.0, jitter=0.1)
    assert BreakerSpec() == BreakerSpec(failures=5, reset_timeout=60.0)


def test_topology_defaults() -> None:
    """An empty file is a system named ``runtime`` with an empty one_for_one
    root named ``root``, the default store, no resources and no metrics."""
    assert parse_topology("") == Topology()
    topology = Topology()
    assert topology.system == "runtime"
    assert topology.supervisor == SupervisorSpec(name="root")
    assert topology.store is None
    assert topology.resources == {}
    assert topology.metrics == MetricsSpec(listen=None)


def test_yaml_child_gets_the_same_defaults_as_code() -> None:
    """A child written with only name and actor equals one built in code."""
    topology = parse_topology(
        "supervisor:\n  name: root\n  children:\n"
        "    - {name: a, actor: 'tests.sample_actors:Echo'}\n"
    )
    assert topology.supervisor == SupervisorSpec(
        name="root", children=[ChildSpec(name="a", actor=Echo)]
    )


def test_nested_supervisors() -> None:
    """An entry with ``children:`` is a supervisor, to any depth, and actors
    are listed depth first in start order with their paths."""
    topology = parse_topology(
        """
system: docs
supervisor:
  name: root
  children:
    - name: tally
      actor: tests.sample_actors:Echo
    - name: docs
      strategy: one_for_all
      backoff: {initial: 10ms, max: 1s}
      children:
        - name: writer
          actor: tests.sample_actors:Greeter
          restart: transient
          args: {greeting: hi}
        - name: review
          strategy: rest_for_one
          children:
            - {name: checker, actor: 'tests.sample_actors:Echo'}
    - name: last
      actor: tests.sample_actors:Echo
"""
    )
    tally, docs, last = topology.supervisor.children
    assert isinstance(tally, ChildSpec)
    assert isinstance(docs, SupervisorSpec)
    assert isinstance(last, ChildSpec)
    assert docs.strategy == "one_for_all"
    assert docs.backoff == BackoffSpec(initial=0.01, max=1.0)
    writer, review = docs.children
    assert isinstance(writer, ChildSpec)
    assert writer.actor is Greeter
    assert writer.restart == "transient"
    assert isinstance(review, SupervisorSpec)
    assert review.strategy == "rest_for_one"
    assert [path for path, _ in iter_children(topology.supervisor)] == [
        "root/tally",
        "root/docs/writer",
        "root/docs/review/checker",
        "root/last",
    ]


def test_full_child_entry_parses() -> None:
    """Every child field given in YAML lands in the spec, converted."""
    topology = parse_topology(
        """
supervisor:
  name: root
  children:
    - name: a
      actor: tests.sample_actors:Echo
      restart: temporary
      mailbox: {capacity: 8, overflow: drop_oldest}
      checkpoint: off
      circuit_breaker: {failures: 2, reset_timeout: 1m}
      shutdown_timeout: 250ms
      concurrency: 4
"""
    )
    (child,) = topology.supervisor.children
    assert child == ChildSpec(
        name="a",
        actor=Echo,
        restart="temporary",
        mailbox=MailboxSpec(capacity=8, overflow="drop_oldest"),
        checkpoint="off",
        circuit_breaker=BreakerSpec(failures=2, reset_timeout=60.0),
        shutdown_timeout=0.25,
        concurrency=4,
    )


def test_specs_in_code_take_the_yaml_strings() -> None:
    """Enumerated fields, durations and checkpoint periods take their YAML
    strings in code too."""
    assert SupervisorSpec(name="x", strategy="one_for_all").strategy == "one_for_all"
    assert SupervisorSpec(name="x", within="2m").within == 120.0
    spec = ChildSpec(name="a", actor=Echo, shutdown_timeout="500ms", checkpoint="30s")
    assert spec.shutdown_timeout == 0.5
    assert spec.checkpoint == 30.0


def test_child_spec_in_code_resolves_an_import_path() -> None:
    """``actor`` given as ``"package.module:Class"`` is imported to the class."""
    assert ChildSpec(name="a", actor="tests.sample_actors:Echo").actor is Echo


def test_specs_in_code_refuse_what_yaml_refuses() -> None:
    """A bad value is a ``ValueError`` in code as it is a ``TopologyError`` in YAML."""
    with pytest.raises(ValueError, match="expected one of one_for_one"):
        SupervisorSpec(name="x", strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("is not a subclass of runtime.Actor")):
        ChildSpec(name="a", actor="tests.sample_actors:NotAnActor")
    with pytest.raises(ValueError, match="at least 1"):
        MailboxSpec(capacity=0)
    with pytest.raises(ValueError, match="duplicate child name 'a'"):
        SupervisorSpec(
            name="x", children=[ChildSpec(name="a", actor=Echo), ChildSpec(name="a", actor=Echo)]
        )


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            "resources: {db: {kind: 'tests.resource_kinds:Echo'}}\nsupervisor: {name: resources}",
            "supervisor.name",
            "'resources' names the supervisor of the resources",
        ),
        (
            'metrics: {listen: "127.0.0.1:http"}',
            "metrics.listen",
            "expected host:port (such as 127.0.0.1:9464) or a port; got '127.0.0.1:http'",
        ),
        (
            "store: redis://cache",
            "store",
            "unknown checkpoint store 'redis://cache': use memory://, sqlite:///path.db",
        ),
    ],
    ids=["reserved-root-name", "metrics-listen", "unknown-store"],
)
def test_fields_this_version_cannot_run_are_refused_at_their_line(
    text: str, field: str, message: str
) -> None:
    """Valid fields for features this version lacks fail validation (so
    ``validate`` and ``start`` agree), at their own line."""
    with pytest.raises(TopologyError) as info:
        parse_topology(text + "\n", "t.yaml")
    (error,) = info.value.errors
    assert error.startswith("t.yaml:") and f": {field}: " in error
    assert message in error


def test_bare_off_is_the_off_checkpoint_policy() -> None:
    """YAML 1.1 reads ``checkpoint: off`` as false; it still means off."""
    topology = parse_topology(
        "supervisor:\n  name: root\n  children:\n"
        "    - {name: a, actor: 'tests.sample_actors:Echo', checkpoint: off}\n"
    )
    assert topology.supervisor.children[0].checkpoint == "off"


def test_empty_variable_takes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the shell, ``${VAR:-default}`` also replaces a set but empty value;
    ``${VAR}`` keeps the empty value."""
    monkeypatch.setenv("EMPTY_NAME", "")
    topology = parse_topology("system: ${EMPTY_NAME:-fallback}\n")
    assert topology.system == "fallback"
    topology = parse_topology("system: x${EMPTY_NAME}y\n")
    assert topology.system == "xy"


def test_a_file_that_is_not_utf8_is_a_topology_error(tmp_path: Path) -> None:
    """A binary or mis-encoded file is reported, not raised as a decode error."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("system: caf\xe9\n".encode("latin-1"))
    with pytest.raises(TopologyError, match=r"latin1\.yaml:0: \(file\): not UTF-8 text"):
        load_topology(path)
