"""A shared limiter's side of shared limits, on virtual time: several
limiters (each as one process would have it) share an engine kept in
memory here, with the semantics the PostgreSQL and NATS engines implement
(tests/test_shared_engines.py checks those against the real servers).

What is checked: the sum of the limiters never exceeds the concurrency or
the rate window; a higher-priority waiter in one limiter goes before lower
ones in another; one limiter's pause pauses the others; an engine that goes
away makes each fall back to its share, said in statistics and the log
once, and recovers by itself."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from runtime import ResourceSpec, Topology, open_system
from runtime._backends import Backends, BackendUnavailable
from runtime._limiter import Limiter
from runtime._shared import Denial, Grant, SharedLimits
from runtime._specs import RateSpec
from tests.resource_kinds import Echo, Ping
from tests.servers import unique


class MemoryEngine:
    """The engine's state in memory, on trio's clock; ``down`` makes every
    call fail as an unreachable engine does."""

    def __init__(self) -> None:
        self.down = False
        self.leases: dict[str, float] = {}  # lease -> expiry
        self.starts: list[float] = []
        self.paused_until = -math.inf
        self.members: dict[str, tuple[int | None, float]] = {}  # member -> (waiting, expiry)
        self.granted: list[tuple[float, str]] = []  # (time, member), every grant
        self._next = 0

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable("memory engine is down")

    async def acquire(
        self,
        member: str,
        priority: int,
        *,
        max_concurrency: int | None,
        requests: int | None,
        window: float,
        lease: float,
    ) -> Grant | Denial:
        await trio.lowlevel.checkpoint()
        self._check()
        now = trio.current_time()
        if self.paused_until > now:
            return Denial(self.paused_until - now, "paused")
        if any(
            other != member and waiting is not None and waiting < priority and expiry > now
            for other, (waiting, expiry) in self.members.items()
        ):
            return Denial(None, "priority")
        self.leases = {key: expiry for key, expiry in self.leases.items() if expiry > now}
        if max_concurrency is not None and len(self.leases) >= max_concurrency:
            return Denial(None, "concurrency")
        if requests is not None:
            self.starts = [t for t in self.starts if t + window > now]
            if len(self.starts) >= requests:
                return Denial(self.starts[len(self.starts) - requests] + window - now, "rate")
            self.starts.append(now)
        self.granted.append((now, member))
        if max_concurrency is None:
            return Grant(None)
        self._next += 1
        key = f"lease-{self._next}"
        self.leases[key] = now + lease
        return Grant(key)

    async def renew(self, grants: list[Grant], lease: float) -> None:
        self._check()
        for grant in grants:
            if grant.lease in self.leases:
                self.leases[grant.lease] = trio.current_time() + lease

    async def release(self, grants: list[Grant]) -> None:
        self._check()
        for grant in grants:
            if grant.lease is not None:
                self.leases.pop(grant.lease, None)

    async def pause(self, seconds: float) -> None:
        self._check()
        self.paused_until = max(self.paused_until, trio.current_time() + seconds)

    async def heartbeat(
        self, member: str, node: str, pid: int, waiting: int | None, lease: float
    ) -> int:
        self._check()
        now = trio.current_time()
        self.members[member] = (waiting, now + lease)
        return sum(expiry > now for _, expiry in self.members.values())

    async def leave(self, member: str, grants: list[Grant]) -> None:
        self._check()
        self.members.pop(member, None)
        await self.release(grants)


def _limiter(engine: MemoryEngine, name: str, **limits: Any) -> Limiter:
    shared = SharedLimits(
        "postgresql://unused",
        Backends(),
        system="s",
        resource="r",
        lease=3.0,
        guard=0.0,
        name=name,
        engine=engine,
    )
    return Limiter(name=name, **limits, shared=shared)


def _shared(limiter: Limiter) -> SharedLimits:
    shared = limiter._shared
    assert shared is not None
    return shared


async def test_concurrency_and_rate_hold_for_the_sum(autojump_clock: object) -> None:
    engine = MemoryEngine()
    rate = RateSpec(requests=3, period=1.0)
    limiters = [_limiter(engine, f"p{i}", max_concurrency=2, rate=rate) for i in range(3)]
    running = peak = 0
    starts: list[float] = []

    async def work() -> None:
        nonlocal running, peak
        starts.append(trio.current_time())
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.4)
        running -= 1

    with trio.fail_after(60):
        async with trio.open_nursery() as services:
            for limiter in limiters:
                services.start_soon(_shared(limiter).serve)
            async with trio.open_nursery() as callers:
                for limiter in limiters:
                    for _ in range(6):
                        callers.start_soon(limiter.call, work)
            services.cancel_scope.cancel()
    assert len(starts) == 18
    assert peak == 2
    starts.sort()
    assert max(sum(t <= u < t + 1.0 for u in starts) for t in starts) == 3
    # The limit is reached, not only respected: 18 calls at 3 per second.
    assert starts[-1] - starts[0] < 6.0
    assert all(_shared(limiter).members == 3 for limiter in limiters)


async def test_a_higher_priority_waiter_elsewhere_goes_first(autojump_clock: object) -> None:
    engine = MemoryEngine()
    a = _limiter(engine, "a", max_concurrency=1)
    b = _limiter(engine, "b", max_concurrency=1)
    order: list[str] = []
    release = trio.Event()

    async def hold() -> None:
        await release.wait()

    async def note(label: str) -> None:
        order.append(label)
        await trio.sleep(0.1)

    with trio.fail_after(60):
        async with trio.open_nursery() as services:
            for limiter in (a, b):
                services.start_soon(_shared(limiter).serve)
            async with trio.open_nursery() as callers:
                callers.start_soon(b.call, hold)  # b holds the only token
                await trio.sleep(0.5)
                for i in range(3):
                    callers.start_soon(partial(b.call, note, f"b-low-{i}", priority="low"))
                await trio.sleep(0.5)
                callers.start_soon(partial(a.call, note, "a-high", priority="high"))
                await trio.sleep(0.5)  # a publishes its high waiter
                assert a.statistics().waiting["high"] == 1
                assert b.statistics().waiting["low"] == 3
                release.set()
            services.cancel_scope.cancel()
    assert order[0] == "a-high"
    assert sorted(order[1:]) == ["b-low-0", "b-low-1", "b-low-2"]


async def test_a_pause_in_one_pauses_the_others(autojump_clock: object) -> None:
    engine = MemoryEngine()
    a = _limiter(engine, "a", max_concurrency=4)
    b = _limiter(engine, "b", max_concurrency=4)
    started: list[float] = []

    async def work() -> None:
        started.append(trio.current_time())
        await trio.lowlevel.checkpoint()

    with trio.fail_after(60):
        async with trio.open_nursery() as services:
            for limiter in (a, b):
                services.start_soon(_shared(limiter).serve)
            await a.call(work)
            begin = trio.current_time()
            a.pause(5.0)  # a 429 with Retry-After: 5 seen by a
            await trio.sleep(0.1)  # written to the engine
            await b.call(work)
            assert started[-1] >= begin + 5.0
            assert b.statistics().paused_for == 0.0
            services.cancel_scope.cancel()


async def test_fallback_share_then_recovery(autojump_clock: object) -> None:
    engine = MemoryEngine()
    rate = RateSpec(requests=10, period=1.0)
    limiters = [_limiter(engine, f"p{i}", max_concurrency=7, rate=rate) for i in range(3)]
    first = limiters[0]
    running = peak = 0
    starts: list[float] = []

    async def work() -> None:
        nonlocal running, peak
        starts.append(trio.current_time())
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.05)
        running -= 1

    with trio.fail_after(120), capture_logs() as logs:
        async with trio.open_nursery() as services:
            for limiter in limiters:
                services.start_soon(_shared(limiter).serve)
            await trio.sleep(1.5)  # every member has beaten, the first twice
            assert first.statistics().shared == "backend"
            assert first.statistics().members == 3
            engine.down = True
            async with trio.open_nursery() as callers:
                for _ in range(20):
                    callers.start_soon(first.call, work)
            stats = first.statistics()
            assert stats.shared == "fallback"
            assert stats.members == 3  # the last count seen
            assert (stats.share_concurrency, stats.share_rate) == (2, 3)
            assert peak == 2
            starts.sort()
            assert max(sum(t <= u < t + 1.0 for u in starts) for t in starts) == 3
            engine.down = False
            await trio.sleep(2.0)  # a probe finds the engine again
            assert first.statistics().shared == "backend"
            assert first.statistics().share_concurrency is None
            before = len(engine.granted)
            await first.call(work)
            assert len(engine.granted) == before + 1  # the engine grants again
            services.cancel_scope.cancel()
    events = [(entry["event"], entry.get("resource")) for entry in logs]
    assert events.count(("shared_limit_fallback", "p0")) == 1
    assert events.count(("shared_limit_recovered", "p0")) == 1
    fallback = next(entry for entry in logs if entry["event"] == "shared_limit_fallback")
    assert fallback["log_level"] == "warning"


async def test_a_cancelled_waiter_gives_its_grant_back(autojump_clock: object) -> None:
    engine = MemoryEngine()
    limiter = _limiter(engine, "a", max_concurrency=1)
    with trio.fail_after(60):
        async with trio.open_nursery() as services:
            services.start_soon(_shared(limiter).serve)
            with trio.move_on_after(0.0):
                await limiter.call(trio.sleep, 10)
            await trio.sleep(0.1)
            assert engine.leases == {}
            assert limiter.statistics().tokens_in_use == 0
            await limiter.call(trio.sleep, 0)
            services.cancel_scope.cancel()


@pytest.mark.parametrize("shared", [False, True])
async def test_statistics_say_whether_shared(shared: bool, autojump_clock: object) -> None:
    engine = MemoryEngine()
    limiter = _limiter(engine, "a", max_concurrency=1) if shared else Limiter(max_concurrency=1)
    stats = limiter.statistics()
    assert stats.shared == ("backend" if shared else None)
    assert stats.members == (1 if shared else None)


async def test_an_unreachable_engine_serves_the_share_and_says_so() -> None:
    """A shared resource whose engine refuses connections serves requests on
    its own share from the first one, and says so in statistics and metrics."""
    registry = CollectorRegistry()
    spec = ResourceSpec(kind=Echo, max_concurrency=4, shared=True, shared_via="nats://127.0.0.1:1")
    topology = Topology(system=unique("shared"), resources={"echo": spec})
    with trio.fail_after(30), capture_logs() as logs:
        async with open_system(topology, store="memory://", registry=registry) as system:
            assert system.uses_asyncio()
            ref = system.resource("echo")
            assert [await ref.ask(Ping(n)) for n in range(3)] == [0, 1, 2]
            stats = system.resource_statistics()["echo"].limiter
            assert (stats.shared, stats.members, stats.share_concurrency) == ("fallback", 1, 4)
            sample = registry.get_sample_value
            assert sample("runtime_resource_shared_fallback", {"resource": "echo"}) == 1
            assert sample("runtime_resource_shared_members", {"resource": "echo"}) == 1
    assert [entry["event"] for entry in logs].count("shared_limit_fallback") == 1
