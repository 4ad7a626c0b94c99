"""Locks: one uncontended acquire+release through ``system.lock`` on each
backend, against the backend's own primitive measured bare in the same run.

The bare primitives: a ``trio.Lock`` (memory); ``BEGIN IMMEDIATE`` and
``COMMIT`` on the same SQLite file, each in a worker thread as the backend
runs its calls (sqlite); ``pg_advisory_lock`` and ``pg_advisory_unlock``
round trips on one connection through trio-asyncio (postgresql); a KV
``create`` of a new key and its ``delete`` (nats). A lock adds what a lease
needs over them: its holder and expiry written, a fencing token, and (for
SQLite) a write that survives the process. Also recorded:
the p99 of the acquire alone (target: under 100 ms on every backend).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio
from tests import postgres_session
from tests.servers import require_nats, unique

import runtime
from runtime._backends import NatsBackend

from ._measure import percentile

BACKENDS = ["memory", "sqlite", "postgresql", "nats"]


def _url(kind: str, directory: Path) -> str:
    if kind == "postgresql":
        postgres_session.require()  # this session's own schema on the shared server
        return postgres_session.URL
    if kind == "nats":
        return require_nats()
    return "memory://" if kind == "memory" else f"sqlite:///{directory / 'locks.db'}"


async def _timed(cycle: Callable[[], Awaitable[None]], count: int) -> list[float]:
    for _ in range(max(10, count // 10)):  # warm-up: connections, caches, statements
        await cycle()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await cycle()
        samples.append(time.perf_counter() - start)
    return samples


async def _bare(kind: str, url: str, count: int) -> list[float]:
    if kind == "memory":
        lock = trio.Lock()

        async def cycle() -> None:
            await lock.acquire()
            lock.release()

        return await _timed(cycle, count)
    if kind == "sqlite":
        connection = sqlite3.connect(
            url.removeprefix("sqlite:///"), check_same_thread=False, isolation_level=None
        )
        connection.execute("PRAGMA journal_mode=WAL")

        async def cycle() -> None:
            await trio.to_thread.run_sync(connection.execute, "BEGIN IMMEDIATE")
            await trio.to_thread.run_sync(connection.execute, "COMMIT")

        try:
            return await _timed(cycle, count)
        finally:
            connection.close()
    if kind == "nats":
        return await _bare_nats(url, count)
    return await _bare_postgres(url, count)


async def _bare_postgres(url: str, count: int) -> list[float]:
    connection = await trio_asyncio.aio_as_trio(asyncpg.connect)(url)
    fetch = trio_asyncio.aio_as_trio(connection.fetchval)

    async def cycle() -> None:
        await fetch("SELECT pg_advisory_lock(7240499)")
        await fetch("SELECT pg_advisory_unlock(7240499)")

    try:
        return await _timed(cycle, count)
    finally:
        await trio_asyncio.aio_as_trio(connection.close)()


async def _bare_nats(url: str, count: int) -> list[float]:
    backend = NatsBackend(url)
    bucket = unique("bench_kv")
    kv = await backend.kv(bucket, ttl=600)
    keys = iter(range(10**9))

    async def cycle() -> None:
        key = f"k{next(keys)}"  # a new key: create's one round trip
        revision = await kv.create(key, {"holder": "bench", "expires_at": time.time() + 30})
        assert revision is not None
        await kv.delete(key, revision)

    try:
        return await _timed(cycle, count)
    finally:
        await backend.delete_bucket(bucket)
        await backend.aclose()


async def _locks(url: str, count: int) -> tuple[list[float], list[float]]:
    """Acquire+release cycles and, separately, the acquire alone."""
    topology = runtime.Topology(system=unique("bench_locks"), locks=url)
    async with runtime.open_system(topology, store="memory://") as system:
        acquired: list[float] = []
        started = 0.0

        async def cycle() -> None:
            nonlocal started
            started = time.perf_counter()
            async with system.lock("bench:one", ttl=30):
                acquired.append(time.perf_counter() - started)

        cycles = await _timed(cycle, count)
        return cycles, acquired[-count:]


async def _run(kind: str, url: str, count: int) -> tuple[list[float], list[float], list[float]]:
    async with trio_asyncio.open_loop():
        bare = await _bare(kind, url, count)
        cycles, acquired = await _locks(url, count)
    return bare, cycles, acquired


@pytest.mark.parametrize("kind", BACKENDS)
def test_lock_acquire_release(bench: Any, quick: bool, kind: str) -> None:
    """p50 and p99 of one uncontended acquire+release through ``system.lock``,
    against the backend's own primitive (target: at most 1.5x), and the p99
    of the acquire alone (target: under 100 ms)."""
    count = 100 if quick else 2_000
    with tempfile.TemporaryDirectory() as directory:
        bare, cycles, acquired = trio.run(_run, kind, _url(kind, Path(directory)), count)
    baseline = {
        "memory": "trio.Lock",
        "sqlite": "BEGIN IMMEDIATE+COMMIT",
        "nats": "KV create+delete",
    }.get(kind, "pg_advisory_lock+unlock")
    for q in (50, 99):
        bench.record(
            f"lock acquire+release p{q} ({kind})",
            percentile(cycles, q),
            "s",
            baseline=percentile(bare, q),
            baseline_name=baseline,
            higher_is_better=False,
        )
    bench.record(
        f"lock acquire p99, uncontended ({kind})",
        percentile(acquired, 99),
        "s",
        higher_is_better=False,
    )
