"""Messaging: tell throughput, ask latency and restart latency against raw trio.

Every actor figure is measured next to a raw-trio program doing the same work
in the same process, so the ratio holds on a noisy machine.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel

import runtime

from ._measure import percentile, repeat


@attrs.frozen
class Msg:
    n: int


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Boom:
    pass


@attrs.frozen
class Token:
    hops: int


class Sink(runtime.Actor[None]):
    """A trivial handler: the cost measured is the runtime's, not the handler's."""

    @runtime.handler
    async def msg(self, msg: Msg) -> None:
        pass

    @runtime.handler
    async def ping(self, msg: Ping) -> int:
        return 1


RESTART_MARKS: list[float] = []


class Crasher(runtime.Actor[None]):
    @runtime.handler
    async def boom(self, msg: Boom) -> None:
        RESTART_MARKS.append(time.perf_counter())
        raise RuntimeError("restart me")

    @runtime.handler
    async def ping(self, msg: Ping) -> None:
        RESTART_MARKS.append(time.perf_counter())


class Hop(runtime.Actor[None]):
    """One actor of a ring: passes the token to the next until it is spent."""

    def __init__(self, next_path: str, done: Any) -> None:
        self.next = self.ctx.ref(next_path)
        self.done = done

    @runtime.handler
    async def token(self, msg: Token) -> None:
        if msg.hops == 0:
            self.done.set()
        else:
            await self.next.tell(Token(msg.hops - 1))


async def _handler(msg: object) -> None:
    pass


# -- baselines ------------------------------------------------------------------


async def _raw_batch_drain(messages: int, senders: int) -> float:
    """A consumer that drains a memory channel in batches and awaits a trivial
    handler per message; senders use send_nowait, waiting only when full."""
    send, receive = trio.open_memory_channel[Msg](100)
    msg = Msg(1)

    async def consumer() -> None:
        while True:
            try:
                item = receive.receive_nowait()
            except trio.WouldBlock:
                try:
                    item = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            await _handler(item)

    async def sender(channel: trio.MemorySendChannel[Msg], count: int) -> None:
        async with channel:
            for _ in range(count):
                try:
                    channel.send_nowait(msg)
                except trio.WouldBlock:
                    await channel.send(msg)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        async with send:
            for _ in range(senders):
                nursery.start_soon(sender, send.clone(), messages // senders)
    return messages / (time.perf_counter() - start)


async def _raw_async_for(messages: int) -> float:
    """The plain loop: ``await send`` per message and ``async for`` to receive."""
    send, receive = trio.open_memory_channel[Msg](100)
    msg = Msg(1)

    async def consumer() -> None:
        async for item in receive:
            await _handler(item)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        async with send:
            for _ in range(messages):
                await send.send(msg)
    return messages / (time.perf_counter() - start)


async def _raw_event_round_trips(count: int, clients: int) -> list[float]:
    """Requests over a channel to one server task, each answered through a
    trio.Event, from ``clients`` tasks at once."""
    send, receive = trio.open_memory_channel[trio.Event](max(1, clients))

    async def server() -> None:
        async for event in receive:
            event.set()

    samples: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            event = trio.Event()
            await send.send(event)
            await event.wait()
            samples.append(time.perf_counter() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        async with trio.open_nursery() as clients_nursery:
            for _ in range(clients):
                clients_nursery.start_soon(client, count // clients)
        nursery.cancel_scope.cancel()
    return samples


# -- actor workloads -------------------------------------------------------------


async def _actor_tell(messages: int, senders: int) -> float:
    async with runtime.open_system() as system:
        ref = await system.spawn(Sink, name="sink")
        msg = Msg(1)

        async def sender(count: int) -> None:
            for _ in range(count):
                await ref.tell(msg)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(senders):
                nursery.start_soon(sender, messages // senders)
        await ref.ask(Ping())  # every message before it has been handled
        return messages / (time.perf_counter() - start)


async def _actor_asks(count: int, askers: int) -> list[float]:
    samples: list[float] = []
    async with runtime.open_system() as system:
        ref = await system.spawn(Sink, name="sink", mailbox={"capacity": max(100, askers)})
        msg = Ping()

        async def asker(n: int) -> None:
            for _ in range(n):
                start = time.perf_counter()
                await ref.ask(msg)
                samples.append(time.perf_counter() - start)

        async with trio.open_nursery() as nursery:
            for _ in range(askers):
                nursery.start_soon(asker, count // askers)
    return samples


async def _raw_ring(size: int, hops: int) -> float:
    channels = [trio.open_memory_channel[int](100) for _ in range(size)]
    done = trio.Event()

    async def hop(index: int) -> None:
        receive = channels[index][1]
        send = channels[(index + 1) % size][0]
        async for left in receive:
            if left == 0:
                done.set()
            else:
                await send.send(left - 1)

    async with trio.open_nursery() as nursery:
        for index in range(size):
            nursery.start_soon(hop, index)
        start = time.perf_counter()
        await channels[0][0].send(hops)
        await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return hops / elapsed


async def _actor_ring(size: int, hops: int) -> float:
    done = trio.Event()
    children = [
        runtime.ChildSpec(
            name=f"h{i}", actor=Hop, args={"next_path": f"root/h{(i + 1) % size}", "done": done}
        )
        for i in range(size)
    ]
    topology = runtime.Topology(supervisor=runtime.SupervisorSpec(name="root", children=children))
    async with runtime.open_system(topology) as system:
        start = time.perf_counter()
        await system.ref("root/h0").tell(Token(hops))
        await done.wait()
        return hops / (time.perf_counter() - start)


async def _actor_restarts(count: int) -> list[float]:
    RESTART_MARKS.clear()
    root = runtime.SupervisorSpec(name="root", max_restarts=count + 1, within=3600)
    async with runtime.open_system(runtime.Topology(supervisor=root)) as system:
        ref = await system.spawn(Crasher, name="crasher")
        latencies = []
        for _ in range(count):
            RESTART_MARKS.clear()
            ref.tell_nowait(Boom())
            ref.tell_nowait(Ping())
            while len(RESTART_MARKS) < 2:
                await trio.lowlevel.checkpoint()
            latencies.append(RESTART_MARKS[1] - RESTART_MARKS[0])
    return latencies


async def _raw_restarts(count: int) -> list[float]:
    """A raw-trio supervisor loop: a worker task raises, the loop catches it and
    starts a new worker on the same channel, which handles the next item."""
    send, receive = trio.open_memory_channel[object](100)
    marks: list[float] = []

    async def worker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for item in receive:
            marks.append(time.perf_counter())
            if item == "boom":
                raise RuntimeError("restart me")

    latencies = []
    async with trio.open_nursery() as outer:

        async def supervise() -> None:
            while True:
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(worker)
                except* RuntimeError:
                    pass  # restart the worker

        outer.start_soon(supervise)
        for _ in range(count):
            marks.clear()
            send.send_nowait("boom")
            send.send_nowait("next")
            while len(marks) < 2:
                await trio.lowlevel.checkpoint()
            latencies.append(marks[1] - marks[0])
        outer.cancel_scope.cancel()
    return latencies


# -- the benchmarks ----------------------------------------------------------------


@pytest.mark.parametrize("senders", [1, 8], ids=["1_sender", "8_senders"])
def test_tell_throughput(bench: Any, quick: bool, senders: int) -> None:
    """Messages per second from ``senders`` tasks to one actor with a trivial
    handler, against the raw-trio batch drain (the figure to approach) and,
    for one sender, the plain ``async for`` loop."""
    messages = 20_000 if quick else 400_000
    times = 1 if quick else 5
    actor, spread = repeat(lambda: trio.run(_actor_tell, messages, senders), times)
    raw, _ = repeat(lambda: trio.run(_raw_batch_drain, messages, senders), times)
    bench.record(
        f"tell throughput {senders}->1",
        actor,
        "msg/s",
        baseline=raw,
        baseline_name="batch drain",
        spread=spread,
    )
    if senders == 1:
        plain, _ = repeat(lambda: trio.run(_raw_async_for, messages), times)
        bench.record(
            "tell throughput 1->1 vs async for",
            actor,
            "msg/s",
            baseline=plain,
            baseline_name="async for",
        )


def test_ring(bench: Any, quick: bool) -> None:
    """A token passed around a ring of 1,000 actors: hops per second, against
    1,000 raw trio tasks passing it over memory channels."""
    size, hops = (100, 5_000) if quick else (1_000, 200_000)
    times = 1 if quick else 3
    actor, spread = repeat(lambda: trio.run(_actor_ring, size, hops), times)
    raw, _ = repeat(lambda: trio.run(_raw_ring, size, hops), times)
    bench.record(f"ring of {size} actors", actor, "msg/s", baseline=raw, spread=spread)


@pytest.mark.parametrize("askers", [1, 100], ids=["sequential", "100_concurrent"])
def test_ask_latency(bench: Any, quick: bool, askers: int) -> None:
    """ask round trip p50 and p99, against requests over a channel answered
    through a trio.Event by one server task, with as many concurrent clients."""
    count = 2_000 if quick else 50_000
    actor = trio.run(_actor_asks, count, askers)
    raw = trio.run(_raw_event_round_trips, count, askers)
    for q in (50, 99):
        bench.record(
            f"ask p{q} ({'sequential' if askers == 1 else f'{askers} askers'})",
            percentile(actor, q),
            "s",
            baseline=percentile(raw, q),
            baseline_name="trio.Event round trip",
            higher_is_better=False,
        )


def test_restart_latency(bench: Any, quick: bool) -> None:
    """From a handler raising to the next message handled by the new
    incarnation (one_for_one, no backoff), against a raw-trio loop that
    restarts a crashed task on the same channel."""
    count = 100 if quick else 2_000
    actor = trio.run(_actor_restarts, count)
    raw = trio.run(_raw_restarts, count)
    for q in (50, 99):
        bench.record(
            f"restart latency p{q}",
            percentile(actor, q),
            "s",
            baseline=percentile(raw, q),
            baseline_name="raw task restart",
            higher_is_better=False,
        )
