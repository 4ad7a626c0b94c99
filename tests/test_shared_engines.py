"""The shared-limit engines against the real servers: PostgreSQL (rows under
an advisory transaction lock, the server's clock) and NATS JetStream KV
(keys per slot, compare-and-set by revision). Each test keys its state by
a system name of its own, so runs never collide.

Expiry is the engines' own clock (PostgreSQL's ``clock_timestamp()``, the
wall clock on NATS): those checks wait a fraction of a second of real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio_asyncio

from runtime._backends import Backends
from runtime._shared import Denial, Grant, NatsEngine, PostgresEngine, SharedEngine, nats_bucket
from tests.conftest import POSTGRES_URL
from tests.servers import NATS_URL, unique

ENGINES = [
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("nats", marks=pytest.mark.nats),
]


@asynccontextmanager
async def engines_of(kind: str, system: str, *resources: str) -> AsyncIterator[list[SharedEngine]]:
    """Engines for ``resources`` of ``system`` on one connection, its state removed afterwards."""
    async with trio_asyncio.open_loop():
        backends = Backends()
        try:
            if kind == "postgresql":
                yield [
                    PostgresEngine(backends.postgres(POSTGRES_URL), system, resource)
                    for resource in resources
                ]
            else:
                backend = backends.nats(NATS_URL)
                try:
                    yield [NatsEngine(backend, system, resource) for resource in resources]
                finally:
                    for resource in resources:
                        await backend.delete_bucket(nats_bucket(system, resource))
        finally:
            await backends.aclose()


@asynccontextmanager
async def engine_of(kind: str, system: str) -> AsyncIterator[SharedEngine]:
    async with engines_of(kind, system, "llm") as engines:
        yield engines[0]


async def _grant(
    engine: SharedEngine, member: str = "m1", priority: int = 1, **limits: object
) -> Grant | Denial:
    settings: dict[str, object] = {
        "max_concurrency": None,
        "requests": None,
        "window": 0.0,
        "lease": 10.0,
    }
    settings.update(limits)
    return await engine.acquire(member, priority, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ENGINES)
async def test_concurrency_leases(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            first = await _grant(engine, max_concurrency=2)
            second = await _grant(engine, "m2", max_concurrency=2)
            assert isinstance(first, Grant) and isinstance(second, Grant)
            assert first.lease != second.lease
            third = await _grant(engine, max_concurrency=2)
            assert isinstance(third, Denial) and third.reason == "concurrency"
            await engine.release([first])
            again = await _grant(engine, max_concurrency=2)
            assert isinstance(again, Grant)
            await engine.renew([second, again], 10.0)
            assert isinstance(await _grant(engine, max_concurrency=2), Denial)


@pytest.mark.parametrize("kind", ENGINES)
async def test_an_expired_lease_comes_back(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            held = await _grant(engine, "dead", max_concurrency=1, lease=0.3)
            assert isinstance(held, Grant)
            assert isinstance(await _grant(engine, "live", max_concurrency=1), Denial)
            await trio.sleep(0.4)  # the holder never renewed: its lease ends
            assert isinstance(await _grant(engine, "live", max_concurrency=1), Grant)


@pytest.mark.parametrize("kind", ENGINES)
async def test_renewal_keeps_a_lease(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            held = await _grant(engine, "a", max_concurrency=1, lease=0.4)
            assert isinstance(held, Grant)
            for _ in range(3):
                await trio.sleep(0.2)
                await engine.renew([held], 0.4)
            assert isinstance(await _grant(engine, "b", max_concurrency=1), Denial)


@pytest.mark.parametrize("kind", ENGINES)
async def test_rate_window(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            for member in ("a", "b", "c"):
                assert isinstance(await _grant(engine, member, requests=3, window=0.5), Grant)
            refused = await _grant(engine, "a", requests=3, window=0.5)
            assert isinstance(refused, Denial) and refused.reason == "rate"
            assert refused.wait is not None and 0.3 < refused.wait <= 0.5
            await trio.sleep(refused.wait + 0.01)
            assert isinstance(await _grant(engine, "b", requests=3, window=0.5), Grant)


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_full_rate_window_takes_no_lease(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            assert isinstance(
                await _grant(engine, max_concurrency=5, requests=1, window=5.0), Grant
            )
            for _ in range(5):
                refused = await _grant(engine, max_concurrency=5, requests=1, window=5.0)
                assert isinstance(refused, Denial) and refused.reason == "rate"
            # Refusals held nothing: four leases are still free.
            for _ in range(4):
                assert isinstance(await _grant(engine, max_concurrency=5), Grant)


@pytest.mark.parametrize("kind", ENGINES)
async def test_pause(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            await engine.pause(5.0)
            await engine.pause(1.0)  # a shorter pause does not shorten it
            refused = await _grant(engine, max_concurrency=3)
            assert isinstance(refused, Denial) and refused.reason == "paused"
            assert refused.wait is not None and 4.0 < refused.wait <= 5.0


@pytest.mark.parametrize("kind", ENGINES)
async def test_priority_and_membership(kind: str) -> None:
    with trio.fail_after(30):
        async with engine_of(kind, unique("sys")) as engine:
            assert await engine.heartbeat("a", "node", 1, None, 10.0) == 1
            assert await engine.heartbeat("b", "node", 2, 0, 10.0) == 2  # b has a high waiter
            low = await _grant(engine, "a", priority=2)
            assert isinstance(low, Denial) and low.reason == "priority"
            assert isinstance(await _grant(engine, "a", priority=0), Grant)  # as good: goes
            assert isinstance(await _grant(engine, "b", priority=2), Grant)  # its own: no bar
            assert await engine.heartbeat("b", "node", 2, None, 10.0) == 2
            assert isinstance(await _grant(engine, "a", priority=2), Grant)
            await engine.heartbeat("c", "node", 3, 0, 0.3)  # c dies with a high waiter
            await trio.sleep(0.4)
            assert isinstance(await _grant(engine, "a", priority=2), Grant)
            assert await engine.heartbeat("a", "node", 1, None, 10.0) == 2
            await engine.leave("b", [])
            assert await engine.heartbeat("a", "node", 1, None, 10.0) == 1


@pytest.mark.parametrize("kind", ENGINES)
async def test_systems_and_resources_are_apart(kind: str) -> None:
    system = unique("sys")
    with trio.fail_after(30):
        async with engines_of(kind, system, "llm", "db") as (one, other):
            assert isinstance(await _grant(one, max_concurrency=1), Grant)
            assert isinstance(await _grant(other, max_concurrency=1), Grant)
            assert isinstance(await _grant(one, max_concurrency=1), Denial)
