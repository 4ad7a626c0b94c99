"""Cluster: remote ask and tell against bare nats-py over the same server,
and the failover time after SIGKILLs of a unit's node.

The unit runs in a node process (``python -m runtime start --node``); the
bench process is a client node (``hosts_units=False``). The baselines are
nats-py alone on asyncio, with the responder in a process of its own too:
request/reply for the ask, publishes counted by the subscriber for the tell.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from tests.cluster_app import Add, Get, Where
from tests.clusterkit import ClusterRun
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import require_nats, unique

import runtime

from ._measure import percentile

_RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    count = 0
    async def echo(msg):
        await msg.respond(msg.data)
    async def counted(msg):
        nonlocal count
        count += 1
    async def report(msg):
        await msg.respond(str(count).encode())
    await nc.subscribe(sys.argv[2] + ".echo", cb=echo)
    await nc.subscribe(sys.argv[2] + ".tell", cb=counted)
    await nc.subscribe(sys.argv[2] + ".count", cb=report)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _bare(url: str, asks: int, tells: int) -> tuple[list[float], float]:
    """Ask latencies and tell seconds of nats-py alone, responder in another process."""
    import nats  # noqa: PLC0415 (the baseline's own client)

    subject = unique("bare")
    responder = subprocess.Popen(
        [sys.executable, "-c", _RESPONDER, url, subject], stdout=subprocess.PIPE
    )
    try:
        assert responder.stdout is not None
        responder.stdout.readline()

        async def run() -> tuple[list[float], float]:
            nc = await nats.connect(url)
            payload = b'{"p":"root/a","t":"tests.cluster_app:Where","m":{},"pr":"normal"}'
            samples = []
            for _ in range(asks):
                start = time.perf_counter()
                await nc.request(f"{subject}.echo", payload, timeout=5)
                samples.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(tells):
                await nc.publish(f"{subject}.tell", b'{"p":"root/a","m":{"n":1}}')
            while int((await nc.request(f"{subject}.count", b"", timeout=5)).data) < tells:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            took = time.perf_counter() - start
            await nc.close()
            return samples, took

        return asyncio.run(run())
    finally:
        responder.terminate()
        responder.wait(10)


async def _answering(ref: Any) -> None:
    """Until the unit answers (its node has taken it)."""
    with trio.fail_after(60):
        while True:
            try:
                await ref.ask(Where(), timeout=1)
                break
            except runtime.errors.AskTimeout:
                continue


async def _runtime(run: ClusterRun, asks: int, tells: int) -> tuple[list[float], float]:
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        ref = system.ref(run.path("a"))
        await _answering(ref)
        for _ in range(50):
            await ref.ask(Where(), timeout=5)
        samples = []
        for _ in range(asks):
            start = time.perf_counter()
            await ref.ask(Where(), timeout=5)
            samples.append(time.perf_counter() - start)
        before = (await ref.ask(Get(), timeout=5)).total
        start = time.perf_counter()
        for _ in range(tells):
            await ref.tell(Add(1))
        while (await ref.ask(Get(), timeout=30)).total < before + tells:  # noqa: ASYNC110
            await trio.sleep(0.001)
        return samples, time.perf_counter() - start


def _on_two_nodes(run: ClusterRun, fn: Any, *args: Any) -> Any:
    """``trio.run(fn, run, *args)`` with nodes n1 and n2 of ``run`` up."""
    run.start("n1")
    run.start("n2")
    try:
        return trio.run(fn, run, *args)
    finally:
        run.stop_all()


def test_remote_ask_and_tell_against_bare_nats(bench: Any, quick: bool) -> None:
    """Remote ask p50/p99 against a bare nats-py request/reply; remote tell
    throughput (until the actor has applied them all) against bare publishes
    counted by a subscriber."""
    require_postgres()
    url = require_nats()
    asks, tells = (200, 1_000) if quick else (3_000, 20_000)
    with tempfile.TemporaryDirectory() as directory:
        run = ClusterRun(
            Path(directory), url, POSTGRES_URL, units=("a",), lease=2.0, checkpoint="off"
        )
        run.start("n1")
        try:
            samples, took = trio.run(_runtime, run, asks, tells)
        finally:
            run.stop_all()
    bare_samples, bare_took = _bare(url, asks, tells)
    for q in (50, 99):
        bench.record(
            f"cluster remote ask p{q}",
            percentile(samples, q) * 1e6,
            "us",
            baseline=percentile(bare_samples, q) * 1e6,
            baseline_name="bare nats-py request/reply",
            higher_is_better=False,
        )
    bench.record(
        "cluster remote tell throughput",
        tells / took,
        "msg/s",
        baseline=tells / bare_took,
        baseline_name="bare nats-py publish",
    )


async def _burst_at_one_unit(run: ClusterRun, tells: int) -> str:
    """``tells`` remote tells at unit ``a`` once both nodes run their units;
    the node holding it."""
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        ref = system.ref(run.path("a"))
        with trio.fail_after(60):
            while len(system.cluster.statistics().nodes) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
            await trio.sleep(3 * run.lease)  # the handovers of the staggered starts are done
            for unit in run.units:
                await _answering(system.ref(run.path(unit)))
        owner = str(await ref.ask(Where(), timeout=10))
        before = (await ref.ask(Get(), timeout=10)).total
        for _ in range(tells):
            await ref.tell(Add(1))
        with trio.fail_after(120):
            while (await ref.ask(Get(), timeout=30)).total < before + tells:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await trio.sleep(run.lease)
        return owner


def _renewal_gap(run: ClusterRun, node: str) -> float:
    """The longest renewal gap ``node`` logged as it left the cluster."""
    for event in run.events(node):
        if event.get("event") == "cluster_left":
            return float(event["renewal_gap_max"])  # type: ignore[arg-type]
    raise AssertionError(f"{node} did not leave the cluster gracefully")


def test_lease_renewal_gap_during_a_burst(bench: Any, quick: bool) -> None:
    """The longest time between two renewals (membership entry or lease) on
    the node whose unit receives a burst of remote tells (lease 1 s, three
    units a node), against the other node of the same run, which renews as
    often with no burst. At ``lease`` seconds an entry expires."""
    require_postgres()
    tells = 2_000 if quick else 20_000
    with tempfile.TemporaryDirectory() as directory:
        run = ClusterRun(
            Path(directory),
            require_nats(),
            POSTGRES_URL,
            units=("a", "b", "c", "d", "e", "f"),
            lease=1.0,
            checkpoint="off",
        )
        owner = _on_two_nodes(run, _burst_at_one_unit, tells)
        other = "n2" if owner == "n1" else "n1"
        gap, quiet = _renewal_gap(run, owner), _renewal_gap(run, other)
    bench.record(
        f"cluster lease renewal gap, max, during a burst of {tells:,} tells (lease 1s)",
        gap,
        "s",
        baseline=quiet,
        baseline_name="the other node, no burst",
        higher_is_better=False,
    )


async def _failovers(run: ClusterRun, kills: int) -> list[float]:
    times = []
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        ref = system.ref(run.path("a"))
        for _ in range(kills):
            with trio.fail_after(60):
                while len(system.cluster.statistics().nodes) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await trio.sleep(2 * run.lease)
                owner = (await ref.ask(Get(), timeout=10)).node
            run.signal(owner, signal.SIGKILL)
            killed = time.monotonic()
            with trio.fail_after(60):
                while True:
                    try:
                        if (await ref.ask(Where(), timeout=0.25)) != owner:
                            break
                    except runtime.errors.AskTimeout:
                        continue
            times.append(time.monotonic() - killed)
            run.stop(owner)
            run.start(owner)
    return times


def test_failover_time_after_sigkill(bench: Any, quick: bool) -> None:
    """Seconds from SIGKILL of the unit's node to the unit answering from
    the other node (lease 1 s), over several kills."""
    require_postgres()
    kills = 2 if quick else 10
    with tempfile.TemporaryDirectory() as directory:
        run = ClusterRun(Path(directory), require_nats(), POSTGRES_URL, units=("a",), lease=1.0)
        times = _on_two_nodes(run, _failovers, kills)
    for q in (50, 99):
        bench.record(
            f"cluster failover p{q} (lease 1s, {kills} kills)",
            percentile(times, q),
            "s",
            baseline=run.lease + 2,
            baseline_name="lease + 2 s",
            higher_is_better=False,
            samples=times,
        )


def _bare_jetstream(url: str, tells: int) -> float:
    """Seconds for ``tells`` JetStream publishes, each awaiting its ack, with
    nats-py alone on asyncio (a work-queue stream of its own, then deleted)."""
    import nats  # noqa: PLC0415 (the baseline's own client)
    from nats.js.api import RetentionPolicy  # noqa: PLC0415

    name = unique("benchjs")

    async def run() -> float:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name=name, subjects=[f"{name}.>"], retention=RetentionPolicy.WORK_QUEUE)
        try:
            payload = (
                b'{"p":"root/a","t":"tests.cluster_app:Add","m":{"n":1,"key":""},"pr":"normal"}'
            )
            start = time.perf_counter()
            for _ in range(tells):
                await js.publish(f"{name}.a", payload)
            return time.perf_counter() - start
        finally:
            await js.delete_stream(name)
            await nc.close()

    return asyncio.run(run())


async def _durable(run: ClusterRun, tells: int) -> tuple[float, float]:
    """Seconds until ``tells`` durable tells were acknowledged by the stream,
    and until the actor had applied and checkpointed them all."""
    async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
        ref = system.ref(run.path("a"))
        try:
            await _answering(ref)
            for _ in range(20):
                await ref.tell(Add(1))
            before = 20
            while (await ref.ask(Get(), timeout=5)).total < before:  # noqa: ASYNC110
                await trio.sleep(0.01)
            start = time.perf_counter()
            for _ in range(tells):
                await ref.tell(Add(1))
            acknowledged = time.perf_counter() - start
            with trio.fail_after(300):
                while (await ref.ask(Get(), timeout=30)).total < before + tells:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            return acknowledged, time.perf_counter() - start
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(run.stop_all)
                await system.cluster.backend.delete_stream(system.cluster.durable.stream)


def test_durable_tell_throughput_against_bare_jetstream(bench: Any, quick: bool) -> None:
    """Durable tells (``mailbox: {durable: true}``) from a client node to a
    unit on a node process: acknowledged by the stream, and applied (handled,
    checkpointed in PostgreSQL with its sequence, acknowledged), against
    bare nats-py JetStream publishes each awaiting its ack."""
    require_postgres()
    url = require_nats()
    tells = 100 if quick else 2_000
    with tempfile.TemporaryDirectory() as directory:
        run = ClusterRun(
            Path(directory), url, POSTGRES_URL, units=("a",), lease=2.0, mailbox="{durable: true}"
        )
        run.start("n1")
        acknowledged, applied = trio.run(_durable, run, tells)
    bare = _bare_jetstream(url, tells)
    bench.record(
        "cluster durable tell throughput (acknowledged by the stream)",
        tells / acknowledged,
        "msg/s",
        baseline=tells / bare,
        baseline_name="bare nats-py JetStream publish with ack",
    )
    bench.record(
        "cluster durable tell throughput (applied and checkpointed)",
        tells / applied,
        "msg/s",
        baseline=tells / bare,
        baseline_name="bare nats-py JetStream publish with ack",
    )
