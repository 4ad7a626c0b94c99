"""A burst of remote tells at one unit does not cost its node its leases:
three node processes (``multiprocess``), a 1 s lease, and a client that
sends 20,000 tells to one unit as fast as it can. The node renews its
membership entry and leases on a connection and a task of their own, so
neither the messages queued on the data connection nor the work of
delivering them holds the renewals back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import runtime
from tests.cluster_app import Add, Get, Snapshot, Where
from tests.clusterkit import ClusterRun
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import require_nats

UNITS = ("a", "b", "c", "d", "e", "f")
NODES = ("n1", "n2", "n3")
BURST = 20_000
MOVES = ("unit_lost", "unit_released", "unit_acquired")


@pytest.fixture
def burst_run(tmp_path: Path) -> Iterator[ClusterRun]:
    require_postgres()
    # Checkpointed every half second: a unit started again would show in
    # its ``starts``; a handler is cheap, so the burst keeps the node busy.
    run = ClusterRun(
        tmp_path, require_nats(), POSTGRES_URL, units=UNITS, lease=1.0, checkpoint="0.5s"
    )
    try:
        yield run
    finally:
        run.stop_all()


async def _snapshots(system: runtime.ActorSystem, run: ClusterRun) -> dict[str, Snapshot]:
    return {unit: await system.ref(run.path(unit)).ask(Get(), timeout=10) for unit in run.units}


def _moves(run: ClusterRun) -> list[dict[str, object]]:
    """The log lines, on every node, of a unit taken, released or lost."""
    return [e for node in NODES for e in run.events(node) if e.get("event") in MOVES]


async def _burst(ref: runtime.ActorRef[object], nowait: bool) -> None:
    sent = 0
    while sent < BURST:
        if nowait:
            try:
                ref.tell_nowait(Add(1))
            except runtime.errors.MailboxFull:
                await trio.lowlevel.checkpoint()  # the sender task publishes the queue
                continue
        else:
            await ref.tell(Add(1))
        sent += 1


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.parametrize("nowait", [False, True], ids=["tell", "tell_nowait"])
async def test_a_burst_of_remote_tells_keeps_the_owner_and_its_leases(
    burst_run: ClusterRun, nowait: bool
) -> None:
    """20,000 tells at one unit with a 1 s lease: no unit moves or starts
    again (no ``unit_lost``, no takeover, same instance and ``starts``),
    every unit answers, and every tell is applied: a plain tell is at most
    once, and with no failover and the server up none is lost."""
    run = burst_run
    for node in NODES:
        run.start(node)
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        with trio.fail_after(60):
            while True:
                stats = system.cluster.statistics()
                if len(stats.nodes) == 3 and all(p.node in stats.nodes for p in stats.placement):
                    break
                await trio.sleep(0.1)
            for unit in run.units:
                await system.ref(run.path(unit)).ask(Where(), timeout=20)
        await trio.sleep(3 * run.lease)  # handovers of the nodes' staggered starts are done
        before = await _snapshots(system, run)
        settled = len(_moves(run))

        ref = system.ref(run.path("a"))
        await _burst(ref, nowait)
        with trio.fail_after(60):
            while (await ref.ask(Get(), timeout=30)).total < before["a"].total + BURST:  # noqa: ASYNC110
                await trio.sleep(0.05)
        await trio.sleep(2 * run.lease)  # a lease lost at the end of the burst shows by now

        after = await _snapshots(system, run)
        assert _moves(run)[settled:] == []
        for unit in run.units:
            kept = (after[unit].node, after[unit].instance, after[unit].starts)
            assert kept == (before[unit].node, before[unit].instance, before[unit].starts), unit
        assert after["a"].total == before["a"].total + BURST
