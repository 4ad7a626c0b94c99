"""The cluster (DESIGN 6.5): placement, remote refs, failover and fencing,
with three node processes on this machine (``multiprocess``), and the parts
that need no process of their own: rendezvous placement, the wire format,
fenced checkpoint writes, topology validation."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio

import runtime
from runtime._checkpoint import PostgresStore
from runtime._cluster import rendezvous
from runtime._correlation import CURRENT, CorrelationSlot, correlation_id
from runtime._remote import (
    RemoteError,
    RemoteRef,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
)
from runtime._topology import load_topology
from runtime.errors import (
    ActorFailed,
    ActorNotFound,
    ActorStopped,
    AskTimeout,
    CheckpointConflict,
    TopologyError,
    UnknownMessage,
)
from tests.cluster_app import Add, Boom, Counter, Get, Slow, Snapshot, Where
from tests.clusterkit import ClusterRun
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import PrivateNats, require_nats, unique

UNITS = ("a", "b", "c", "d", "e", "f")
NODES = ("n1", "n2", "n3")


# -- no process of its own ----------------------------------------------------------


def test_rendezvous_spreads_units_and_moves_only_a_leaving_nodes() -> None:
    """Each unit goes to one node; a node leaving moves only its own units."""
    units = [f"u{i}" for i in range(60)]
    placed = {unit: rendezvous(unit, list(NODES)) for unit in units}
    counts = {node: list(placed.values()).count(node) for node in NODES}
    assert all(count >= 10 for count in counts.values()), counts
    after = {unit: rendezvous(unit, ["n1", "n3"]) for unit in units}
    assert {unit for unit in units if after[unit] != placed[unit]} == {
        unit for unit in units if placed[unit] == "n2"
    }
    assert rendezvous("u1", []) is None


def test_a_message_crosses_the_wire_with_its_chain_and_only_as_a_handled_type() -> None:
    """A message is JSON with its type's path; the receiver structures only
    its target's handler types, and the sender's correlation id comes along."""
    token = CURRENT.set(CorrelationSlot())
    try:
        chain = correlation_id()
        data = encode_request("root/a", Add(3, "k"), "high", 1.5, tracing=False)
    finally:
        CURRENT.reset(token)
    assert b"pickle" not in data and b"tests.cluster_app:Add" in data
    request = decode_request(data, lambda path: Counter if path == "root/a" else None)
    assert request.message == Add(3, "k") and request.priority == "high"
    assert request.timeout == 1.5
    with request.context():
        assert correlation_id() == chain
    forged = data.replace(b"tests.cluster_app:Add", b"os:system")
    with pytest.raises(UnknownMessage):
        decode_request(forged, lambda path: Counter)
    with pytest.raises(ActorNotFound):
        decode_request(data, lambda path: None)


async def test_a_remote_ref_refuses_a_type_its_target_does_not_handle() -> None:
    """The sender checks the type before anything is sent."""

    class Nowhere:
        tracing = False

    ref = RemoteRef("root/a", "s", Counter, Nowhere())  # type: ignore[arg-type]
    with pytest.raises(UnknownMessage):
        await ref.tell(object())
    assert repr(ref) == "<ActorRef root/a>"


def test_a_remote_failure_names_the_remote_type_and_message() -> None:
    """A handler's exception comes back as ActorFailed caused by RemoteError."""
    error = ActorFailed("root/a failed handling Boom: ValueError('x')")
    error.__cause__ = ValueError("x")
    with pytest.raises(ActorFailed) as caught:
        decode_reply(encode_error(error), Any)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteError)
    assert (cause.type_name, cause.message) == ("builtins.ValueError", "x")
    with pytest.raises(AskTimeout):
        decode_reply(encode_error(AskTimeout("late")), Any)


def test_cluster_needs_a_postgresql_store(tmp_path: Path) -> None:
    """A cluster with another store is a TopologyError naming file and line."""
    topology = tmp_path / "t.yaml"
    topology.write_text("system: s\nstore: sqlite:///x.db\ncluster:\n  nats: nats://h:4222\n")
    with pytest.raises(TopologyError, match=r"t\.yaml:2: store: a cluster needs a PostgreSQL"):
        load_topology(topology)


@pytest.mark.postgres
async def test_a_write_under_an_older_epoch_is_refused() -> None:
    """Once a newer epoch is raised for a unit, writes fenced with the older
    one fail with CheckpointConflict and change nothing."""
    require_postgres()
    unit, path = unique("unit"), f"{unique('root')}/a"
    async with trio_asyncio.open_loop():
        store = PostgresStore(POSTGRES_URL)
        try:
            await store.raise_fence(unit, 5)
            version = await store.save(path, '{"n": 1}', 0, fence=(unit, 5))
            await store.raise_fence(unit, 9)
            with pytest.raises(CheckpointConflict, match="epoch 5"):
                await store.save(path, '{"n": 2}', version, fence=(unit, 5))
            assert await store.load(path) == (version, '{"n": 1}')
            assert await store.save(path, '{"n": 3}', version, fence=(unit, 9)) == version + 1
            with pytest.raises(CheckpointConflict):
                await store.raise_fence(unit, 7)
        finally:
            await store.delete(path)
            await store.aclose()


# -- three node processes -------------------------------------------------------------


@pytest.fixture
def cluster_run(tmp_path: Path) -> Iterator[ClusterRun]:
    require_postgres()
    run = ClusterRun(tmp_path, require_nats(), POSTGRES_URL, units=UNITS, lease=1.0)
    try:
        yield run
    finally:
        run.stop_all()


async def _wait_all_placed(system: runtime.ActorSystem, run: ClusterRun, nodes: int) -> None:
    """Until every unit answers and ``nodes`` nodes are live."""
    with trio.fail_after(60):
        while True:
            stats = system.cluster.statistics()
            if len(stats.nodes) == nodes and all(p.node in stats.nodes for p in stats.placement):
                break
            await trio.sleep(0.1)
        for unit in run.units:
            await system.ref(run.path(unit)).ask(Where(), timeout=20)


async def _where(system: runtime.ActorSystem, run: ClusterRun) -> dict[str, str]:
    return {u: await system.ref(run.path(u)).ask(Where(), timeout=10) for u in run.units}


async def _settled(system: runtime.ActorSystem, run: ClusterRun) -> dict[str, str]:
    """Each unit's node once placement has settled on the three nodes (the
    first node up holds every unit until the others join): where each
    answers from is where rendezvous hashing puts it."""
    with trio.fail_after(30):
        while True:
            nodes = list(system.cluster.statistics().nodes)
            where = await _where(system, run)
            if len(nodes) == 3 and all(rendezvous(u, nodes) == n for u, n in where.items()):
                return where
            await trio.sleep(0.1)


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_units_are_spread_run_once_and_answer_remote_calls(
    cluster_run: ClusterRun,
) -> None:
    """Three nodes: every unit runs on the node rendezvous hashing picks,
    exactly once; tell, ask, errors and timeouts work across nodes."""
    run = cluster_run
    for node in NODES:
        run.start(node)
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        await _wait_all_placed(system, run, 3)
        await trio.sleep(3 * run.lease)  # handovers of the nodes' staggered starts are done
        where = await _where(system, run)
        assert where == {unit: rendezvous(unit, list(NODES)) for unit in run.units}
        assert len(set(where.values())) == 3
        assert run.running_copies() == {unit: [where[unit]] for unit in run.units}

        ref = system.ref(run.path("a"))
        await ref.tell(Add(2, "one"))
        ref.tell_nowait(Add(3, "two"))
        snapshot = await ref.ask(Get(), timeout=10)
        assert isinstance(snapshot, Snapshot)
        assert (snapshot.total, snapshot.applied) == (5, ["one", "two"])
        keys = [f"k{i}" for i in range(300)]  # several batches of tells, then an ask
        for key in keys:
            await ref.tell(Add(1, key))
        snapshot = await ref.ask(Get(), timeout=10)
        assert (snapshot.total, snapshot.applied[2:]) == (305, keys)
        with pytest.raises(ActorFailed, match="ValueError") as failed:
            await ref.ask(Boom("bad input"), timeout=10)
        assert "bad input" in str(failed.value.__cause__)
        started = time.monotonic()
        with pytest.raises(AskTimeout):
            await ref.ask(Slow(5), timeout=0.5)
        assert time.monotonic() - started < 2
        with pytest.raises(UnknownMessage):
            await ref.ask(object(), timeout=1)
        with pytest.raises(ActorNotFound):
            system.ref(f"{run.root}/nope")
        assert system.cluster.statistics().remote_asks["ok"] >= len(run.units)


def _logged(run: ClusterRun, node: str, event: str, unit: str) -> bool:
    return any(e.get("event") == event and e.get("unit") == unit for e in run.events(node))


async def _ask_until_answered(ref: Any, message: object, within: float = 20) -> Any:
    """Ask again after each timeout: an ask already sent to a node as it
    died is lost with it (an ask is made at most once), and times out."""
    with trio.fail_after(within):
        while True:
            try:
                return await ref.ask(message, timeout=0.5)
            except AskTimeout:
                continue


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_a_killed_nodes_units_run_again_elsewhere_from_their_checkpoints(
    cluster_run: ClusterRun,
) -> None:
    """SIGKILL of a node: each of its units answers from another node within
    lease + 2 s, with the state its last checkpoint held."""
    run = cluster_run
    for node in NODES:
        run.start(node)
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        await _wait_all_placed(system, run, 3)
        await trio.sleep(3 * run.lease)
        where = await _where(system, run)
        victim = where["a"]
        theirs = [unit for unit in run.units if where[unit] == victim]
        for unit in theirs:
            await system.ref(run.path(unit)).ask(Add(7, f"before-{unit}"), timeout=10)
        run.signal(victim, signal.SIGKILL)
        killed = time.monotonic()
        for unit in theirs:
            snapshot = await _ask_until_answered(system.ref(run.path(unit)), Get())
            assert snapshot.node != victim
            assert snapshot.applied == [f"before-{unit}"] and snapshot.total == 7
        took = time.monotonic() - killed
        assert took <= run.lease + 2, f"failover took {took:.2f}s"
        # The client's view of the members catches up within the same bound.
        alive = tuple(n for n in NODES if n != victim)
        while system.cluster.statistics().nodes != alive:
            left = killed + run.lease + 2 - time.monotonic()
            assert left > 0, f"nodes still {system.cluster.statistics().nodes}"
            await trio.sleep(min(0.05, left))


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_a_paused_node_resumed_cannot_overwrite_the_new_owner_and_stops(
    tmp_path: Path,
) -> None:
    """SIGSTOP of a node, its units taken over, SIGCONT: the stale copies
    write nothing (their writes are refused by epoch) and stop."""
    require_postgres()
    run = ClusterRun(tmp_path, require_nats(), POSTGRES_URL, units=UNITS, lease=2.0, tick=0.05)
    try:
        for node in NODES:
            run.start(node)
        async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
            await _wait_all_placed(system, run, 3)
            await trio.sleep(3 * run.lease)
            stale = await system.ref(run.path("a")).ask(Get(), timeout=10)
            victim = stale.node
            run.signal(victim, signal.SIGSTOP)
            taken = await _ask_until_answered(system.ref(run.path("a")), Get())
            assert taken.node != victim and taken.writers[-1] == taken.instance
            await trio.sleep(run.lease)  # the new owner writes meanwhile
            run.signal(victim, signal.SIGCONT)
            with trio.fail_after(20):  # the stale copy stops
                while not _logged(run, victim, "unit_lost", "a"):  # noqa: ASYNC110 (a log)
                    await trio.sleep(0.1)
            await trio.sleep(2 * run.lease)
            # Whoever runs it now carries on from the new owner's state: the
            # stale instance never wrote again after the new owner started.
            now = await _ask_until_answered(system.ref(run.path("a")), Get())
            history = now.writers
            first_new = history.index(taken.instance)
            assert stale.instance not in history[first_new:], history
            assert now.ticks >= taken.ticks
    finally:
        run.stop_all()


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_nodes_carry_on_after_the_nats_server_restarts(
    tmp_path: Path, private_nats: PrivateNats
) -> None:
    """The NATS server stopped and started again: the nodes reconnect,
    place every unit again and answer asks."""
    require_postgres()
    run = ClusterRun(tmp_path, private_nats.url, POSTGRES_URL, units=UNITS[:3], lease=2.0)
    try:
        for node in NODES:
            run.start(node)
        async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
            await _wait_all_placed(system, run, 3)
            await system.ref(run.path("a")).tell(Add(1, "before"))
            # A plain tell is at most once: it is applied before the server
            # stops, so what the restart must keep is state, not a publish
            # still in a socket buffer.
            with trio.fail_after(15):
                ref = system.ref(run.path("a"))
                while "before" not in (await ref.ask(Get(), timeout=10)).applied:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            await trio.to_thread.run_sync(private_nats.stop)
            await trio.sleep(1.5)
            await trio.to_thread.run_sync(private_nats.start)
            with trio.fail_after(30):
                snapshot = await system.ref(run.path("a")).ask(Get(), timeout=25)
            assert "before" in snapshot.applied
            await system.ref(run.path("a")).tell(Add(1, "after"))
            with trio.fail_after(15):
                ref = system.ref(run.path("a"))
                while "after" not in (await ref.ask(Get(), timeout=10)).applied:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            for unit in run.units:
                await system.ref(run.path(unit)).ask(Where(), timeout=10)
    finally:
        run.stop_all()


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_asks_during_handovers_are_answered_never_left_to_time_out(
    tmp_path: Path,
) -> None:
    """One node holds every unit; two more join and it hands most over while
    askers keep asking each unit. Every ask is answered (by the old holder,
    or sent again to the new one after a ``MOVED`` refusal) or, queued in an
    actor as it stopped, refused with ``ActorStopped``: none is dropped
    between holders to wait out its timeout."""
    require_postgres()
    run = ClusterRun(tmp_path, require_nats(), POSTGRES_URL, units=UNITS, lease=2.0)
    outcomes = {"answered": 0, "stopped": 0}
    try:
        run.start("n1")
        async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
            await _wait_all_placed(system, run, 1)
            done = trio.Event()

            async def asker(unit: str) -> None:
                ref = system.ref(run.path(unit))
                while not done.is_set():
                    try:
                        await ref.ask(Where(), timeout=5)  # an AskTimeout fails the test
                        outcomes["answered"] += 1
                    except ActorStopped:
                        outcomes["stopped"] += 1

            async with trio.open_nursery() as nursery:
                for unit in run.units:
                    nursery.start_soon(asker, unit)
                    nursery.start_soon(asker, unit)
                run.start("n2")
                run.start("n3")
                await _settled(system, run)
                await trio.sleep(0.5)
                done.set()
        released = [e for e in run.events("n1") if e.get("event") == "unit_released"]
        assert released, "n1 handed nothing over"
        assert outcomes["answered"] > 0, outcomes
    finally:
        run.stop_all()
