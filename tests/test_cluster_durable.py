"""Durable mailboxes and cluster-wide topics (DESIGN 6.5), with three node
processes on this machine (``multiprocess``), and the parts that need no
process of their own: the stream sequence kept in a checkpoint, topology
validation."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

import runtime
from runtime._checkpoint import (
    SEQUENCE_KEY,
    CheckpointCounters,
    Checkpointer,
    MemoryStore,
    decode_state,
    encode_state,
)
from runtime._cluster import rendezvous
from runtime._endpoint import status_document
from runtime._logging import get_logger
from runtime._status import format_status
from runtime._topology import parse_topology
from runtime.errors import MailboxFull, TopologyError
from tests.cluster_app import (
    Add,
    Announce,
    Boom,
    CounterState,
    Get,
    Heard,
    Snapshot,
    Where,
)
from tests.clusterkit import ClusterRun
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import require_nats

NODES = ("n1", "n2", "n3")

# -- no process of its own ----------------------------------------------------------


async def test_a_checkpoint_keeps_the_last_applied_stream_sequence() -> None:
    """The sequence rides in the checkpoint's JSON object, is read back by a
    sequenced checkpointer, and is invisible to the state."""
    data = encode_state("r/a", CounterState(total=3), 17)
    assert f'"{SEQUENCE_KEY}": 17' in data
    assert decode_state("r/a", data, CounterState) == CounterState(total=3)
    store = MemoryStore()
    log = get_logger()
    writer = Checkpointer("r/a", store, CheckpointCounters(), CounterState, log, sequenced=True)
    assert await writer.load() == CounterState() and writer.sequence == 0
    writer.sequence = 5
    await writer.save(CounterState(total=1))
    writer.sequence = 6  # the same state, a later sequence: written again
    await writer.save(CounterState(total=1))
    reader = Checkpointer("r/a", store, CheckpointCounters(), CounterState, log, sequenced=True)
    assert await reader.load() == CounterState(total=1) and reader.sequence == 6
    plain = Checkpointer("r/a", store, CheckpointCounters(), CounterState, log)
    assert await plain.load() == CounterState(total=1) and plain.sequence is None


def test_a_durable_mailbox_needs_a_cluster_and_checkpoint_message() -> None:
    """Without cluster: or without checkpoint: message, a TopologyError
    naming the line; max_deliver is at least 1."""
    child = "    - {name: a, actor: 'tests.cluster_app:Counter', %s}\n"
    head = "system: s\nsupervisor:\n  name: root\n  children:\n"
    with pytest.raises(TopologyError, match=r"t\.yaml:5: .*mailbox\.durable: .*needs cluster:"):
        parse_topology(head + child % "checkpoint: message, mailbox: {durable: true}", "t.yaml")
    cluster = "store: postgresql://h/db\ncluster: {nats: 'nats://h:4222'}\n"
    with pytest.raises(TopologyError, match=r"checkpoint: a durable mailbox needs checkpoint: m"):
        parse_topology(cluster + head + child % "mailbox: {durable: true}", "t.yaml")
    with pytest.raises(TopologyError, match=r"max_deliver: expected a whole number of at least 1"):
        parse_topology(
            cluster
            + head
            + child % "checkpoint: message, mailbox: {durable: true, max_deliver: 0}",
            "t.yaml",
        )
    with pytest.raises(TopologyError, match=r"concurrency: a durable mailbox needs concurrency"):
        parse_topology(
            cluster
            + head
            + child % "checkpoint: message, concurrency: 4, mailbox: {durable: true}",
            "t.yaml",
        )
    topology = parse_topology(
        cluster + head + child % "checkpoint: message, mailbox: {durable: true, max_deliver: 2}",
        "t.yaml",
    )
    mailbox = topology.supervisor.children[0].mailbox  # type: ignore[union-attr]
    assert (mailbox.durable, mailbox.max_deliver) == (True, 2)


# -- three node processes -------------------------------------------------------------


@asynccontextmanager
async def _client(
    run: ClusterRun, nodes: tuple[str, ...], registry: CollectorRegistry | None = None
) -> AsyncIterator[runtime.ActorSystem]:
    """Start ``nodes``, join as a client, and once every unit answers, give
    the client's system; at the end stop the nodes and remove the run's
    stream from the shared server."""
    try:
        for node in nodes:
            run.start(node)
        async with runtime.open_system(
            run.topology, node="client", hosts_units=False, registry=registry
        ) as system:
            try:
                if nodes:
                    await _wait_placed(system, run, len(nodes))
                yield system
            finally:
                cluster = system.cluster
                with trio.CancelScope(shield=True), trio.move_on_after(30):
                    await trio.to_thread.run_sync(run.stop_all)
                    await cluster.backend.delete_stream(cluster.durable.stream)
    finally:
        run.stop_all()


async def _wait_placed(system: runtime.ActorSystem, run: ClusterRun, nodes: int) -> None:
    """Until ``nodes`` nodes are live and each unit is held where rendezvous
    hashing puts it (the first node up holds every unit until the others
    join: a unit would still move), then until every unit answers."""
    with trio.fail_after(30):
        while True:
            stats = system.cluster.statistics()
            live = list(stats.nodes)
            if len(live) == nodes and all(
                p.node == rendezvous(p.unit, live) for p in stats.placement
            ):
                break
            await trio.sleep(0.05)
    for unit in run.units:
        await _asked(system, run, unit, Where())


async def _asked(system: runtime.ActorSystem, run: ClusterRun, unit: str, msg: object) -> Any:
    """The unit's answer to ``msg``, asked again while its node changes (an
    ask sent to a node as it hands the unit over is lost with it)."""
    with trio.fail_after(30):
        while True:
            try:
                return await system.ref(run.path(unit)).ask(msg, timeout=2)
            except runtime.errors.AskTimeout:
                continue


async def _applied(system: runtime.ActorSystem, run: ClusterRun, unit: str) -> Snapshot:
    """The unit's state."""
    snapshot: Snapshot = await _asked(system, run, unit, Get())
    return snapshot


def _durable_run(tmp_path: Path) -> ClusterRun:
    """Four units whose mailboxes are durable."""
    require_postgres()
    return ClusterRun(
        tmp_path,
        require_nats(),
        POSTGRES_URL,
        units=("a", "b", "c", "d"),
        lease=1.0,
        mailbox="{durable: true}",
    )


async def _send_steadily(
    system: runtime.ActorSystem,
    run: ClusterRun,
    acknowledged: dict[str, list[str]],
    stop: trio.Event,
) -> None:
    """Durable tells to the units in turn, every 10 ms, until ``stop``; the
    keys of those acknowledged, by unit."""
    i = 0
    while not stop.is_set():
        unit = run.units[i % len(run.units)]
        key = f"t{i}"
        # A tell that raises MailboxFull was not acknowledged: it may or may
        # not be applied, and is not counted.
        with contextlib.suppress(MailboxFull):
            await system.ref(run.path(unit)).tell(Add(1, key))
            acknowledged[unit].append(key)
        i += 1
        await trio.sleep(0.01)


async def _assert_applied_once(
    system: runtime.ActorSystem,
    run: ClusterRun,
    acknowledged: dict[str, list[str]],
    moved: tuple[str, ...],
) -> None:
    """Every acknowledged tell is in its unit's state, and none twice; the
    ``moved`` units were started more than once."""
    total = sum(len(keys) for keys in acknowledged.values())
    assert total > 100, acknowledged
    for unit in run.units:
        with trio.fail_after(30):  # the stream drained into every unit
            while True:
                snapshot = await _applied(system, run, unit)
                if set(acknowledged[unit]) <= set(snapshot.applied):
                    break
                await trio.sleep(0.1)
        twice = [key for key, n in Tally(snapshot.applied).items() if n > 1]
        assert not twice, (unit, twice)
        assert snapshot.total == len(snapshot.applied)
        if unit in moved:
            assert snapshot.starts >= 2, unit


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_a_rolling_restart_applies_every_acknowledged_durable_tell_once(
    tmp_path: Path,
) -> None:
    """Three nodes restarted one after the other (SIGTERM, then started
    again) under a steady stream of durable tells: every tell whose ``tell``
    returned is in its unit's checkpointed state exactly once."""
    run = _durable_run(tmp_path)
    acknowledged: dict[str, list[str]] = {unit: [] for unit in run.units}
    async with _client(run, NODES) as system:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_steadily, system, run, acknowledged, stop)
            await trio.sleep(1)
            for node in NODES:
                run.signal(node, signal.SIGTERM)
                assert await trio.to_thread.run_sync(run.processes[node].wait, 20) == 0
                run.start(node)
                await _wait_placed(system, run, 3)
                await trio.sleep(0.5)
            stop.set()
        await _assert_applied_once(system, run, acknowledged, moved=run.units)
        released = [
            event
            for node in NODES
            for event in run.events(node)
            if event.get("event") == "unit_released"
        ]
        assert len(released) >= len(run.units)


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_a_killed_holder_loses_no_durable_tell_and_applies_none_twice(
    tmp_path: Path,
) -> None:
    """SIGKILL of the node holding units under a steady stream of durable
    tells (messages applied but not acknowledged, fetched but not applied),
    then the node started again: every acknowledged tell applied once."""
    run = _durable_run(tmp_path)
    acknowledged: dict[str, list[str]] = {unit: [] for unit in run.units}
    async with _client(run, NODES) as system:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_steadily, system, run, acknowledged, stop)
            for unit in ("a", "b"):
                await trio.sleep(1)
                victim = await _asked(system, run, unit, Where())
                run.signal(victim, signal.SIGKILL)
                await trio.to_thread.run_sync(run.processes[victim].wait, 10)
                await _applied(system, run, unit)  # taken over
                run.start(victim)
                await _wait_placed(system, run, 3)
            await trio.sleep(0.5)
            stop.set()
        await _assert_applied_once(system, run, acknowledged, moved=("a", "b"))


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.parametrize("batched", [False, True], ids=["one_by_one", "in_a_batch"])
async def test_a_poison_tell_is_dead_lettered_after_max_deliver_attempts(
    tmp_path: Path, batched: bool
) -> None:
    """A durable tell whose handler always raises is handled max_deliver
    times, then dead-lettered with reason max_deliver; the tells after it
    are applied. ``in_a_batch``: the tells are in the stream before any
    node runs, so they are fetched and applied together (the failed batch
    counts as the poison's first attempt)."""
    require_postgres()
    run = ClusterRun(
        tmp_path,
        require_nats(),
        POSTGRES_URL,
        units=("a",),
        lease=1.0,
        mailbox="{durable: true, max_deliver: 3}",
    )
    registry = CollectorRegistry()
    async with _client(run, () if batched else NODES[:2], registry) as system:
        ref = system.ref(run.path("a"))
        await ref.tell(Add(1, "before"))
        await ref.tell(Boom("poison"))
        await ref.tell(Add(1, "after"))
        if batched:
            for node in NODES[:2]:
                run.start(node)
            await _wait_placed(system, run, 2)
        with trio.fail_after(30):
            while "after" not in (await _applied(system, run, "a")).applied:  # noqa: ASYNC110
                await trio.sleep(0.1)
        snapshot = await _applied(system, run, "a")
        assert snapshot.applied == ["before", "after"]
        # On whichever node(s) held the unit meanwhile (it may have moved).
        events = [event for node in NODES[:2] for event in run.events(node)]
        dead = [e for e in events if e.get("event") == "durable_dead_letter"]
        assert len(dead) == 1 and dead[0]["attempts"] == 3, dead
        assert "poison" in str(dead[0]["error"])
        letters = [e for e in events if e.get("event") == "dead_letter"]
        assert [(e["reason"], e["message_type"]) for e in letters] == [("max_deliver", "Boom")]
        crashes = [e for e in events if e.get("event") == "actor_crashed"]
        assert len(crashes) == 3, crashes  # a failed attempt in a batch counts too
        # The client counts what it stored in the stream: /status and metrics.
        assert "durable tells: 3 published" in format_status(status_document(system))
        published = {"outcome": "published"}
        assert registry.get_sample_value("runtime_cluster_durable_tells_total", published) == 3


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_a_topic_event_reaches_every_subscriber_on_every_node_once(
    tmp_path: Path,
) -> None:
    """An event published on one node is delivered once to each subscriber
    of its topic, on that node and on the others."""
    require_postgres()
    run = ClusterRun(
        tmp_path,
        require_nats(),
        POSTGRES_URL,
        units=("l1", "l2", "l3", "l4", "l5", "l6"),
        lease=1.0,
        actor="tests.cluster_app:Listener",
        args="{}",
        checkpoint="'off'",
    )
    try:
        for node in NODES:
            run.start(node)
        async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
            await _wait_placed(system, run, 3)
            await trio.sleep(3 * run.lease)  # the staggered starts' handovers are done
            where = {u: await system.ref(run.path(u)).ask(Where(), timeout=5) for u in run.units}
            assert len(set(where.values())) >= 2, where
            started = time.monotonic()
            await system.ref(run.path("l1")).ask(Announce("one"), timeout=5)
            await system.ref(run.path("l4")).ask(Announce("two"), timeout=5)
            with trio.fail_after(10):
                while True:
                    heard = {
                        u: await system.ref(run.path(u)).ask(Heard(), timeout=5) for u in run.units
                    }
                    if all(len(h) >= 2 for h in heard.values()):
                        break
                    await trio.sleep(0.05)
            await trio.sleep(0.3)  # a second copy would have come by now
            heard = {u: await system.ref(run.path(u)).ask(Heard(), timeout=5) for u in run.units}
            assert all(sorted(h) == ["one", "two"] for h in heard.values()), (heard, where)
            assert time.monotonic() - started < 10
    finally:
        run.stop_all()
