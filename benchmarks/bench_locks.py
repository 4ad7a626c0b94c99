"""Locks: one uncontended acquire+release through ``system.lock`` on each
backend, against the backend's own primitive measured bare in the same run.

The bare primitives: a ``trio.Lock`` (memory); ``BEGIN IMMEDIATE`` and
``COMMIT`` on the same SQLite file, each in a worker thread as the backend
runs its calls (sqlite; also, as the analogue of the KV baseline, a row
inserted and deleted in two write transactions: "sqlite, row");
``pg_advisory_lock`` and ``pg_advisory_unlock`` round trips on one
connection through trio-asyncio (postgresql); a KV ``create`` of a new key
and its ``delete`` (nats). A lock adds what a lease needs over them: its
holder and expiry written, a fencing token, and (for SQLite) a write that
survives the process. Also recorded: the p99 of the acquire alone (target:
under 100 ms on every backend). The bare primitives and the lock run in
alternating rounds of 50 cycles.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
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


Cycle = Callable[[], Awaitable[None]]

ROUND = 50
"""Cycles of one kind in a row: the bare primitive and the lock alternate
by rounds, so a load that changes during the run weighs on both alike."""


async def _interleaved(cycles: list[Cycle], count: int) -> list[list[float]]:
    """``count`` timed runs of each cycle, alternating by rounds, after a warm-up."""
    for cycle in cycles:
        for _ in range(max(10, count // 10)):  # warm-up: connections, caches, statements
            await cycle()
    samples: list[list[float]] = [[] for _ in cycles]
    for _ in range(0, count, ROUND):
        for cycle, found in zip(cycles, samples, strict=True):
            for _ in range(ROUND):
                start = time.perf_counter()
                await cycle()
                found.append(time.perf_counter() - start)
    return samples


@asynccontextmanager
async def _bare(kind: str, url: str) -> AsyncIterator[Cycle]:
    """The backend's own primitive as one cycle."""
    if kind == "memory":
        lock = trio.Lock()

        async def cycle() -> None:
            await lock.acquire()
            lock.release()

        yield cycle
    elif kind == "sqlite":
        async with _bare_sqlite(url) as cycle:
            yield cycle
    elif kind == "nats":
        async with _bare_nats(url) as cycle:
            yield cycle
    else:
        async with _bare_postgres(url) as cycle:
            yield cycle


@asynccontextmanager
async def _bare_sqlite(url: str) -> AsyncIterator[Cycle]:
    connection = sqlite3.connect(
        url.removeprefix("sqlite:///"), check_same_thread=False, isolation_level=None
    )
    connection.execute("PRAGMA journal_mode=WAL")

    async def cycle() -> None:
        await trio.to_thread.run_sync(connection.execute, "BEGIN IMMEDIATE")
        await trio.to_thread.run_sync(connection.execute, "COMMIT")

    try:
        yield cycle
    finally:
        connection.close()


@asynccontextmanager
async def _bare_postgres(url: str) -> AsyncIterator[Cycle]:
    connection = await trio_asyncio.aio_as_trio(asyncpg.connect)(url)
    fetch = trio_asyncio.aio_as_trio(connection.fetchval)

    async def cycle() -> None:
        await fetch("SELECT pg_advisory_lock(7240499)")
        await fetch("SELECT pg_advisory_unlock(7240499)")

    try:
        yield cycle
    finally:
        await trio_asyncio.aio_as_trio(connection.close)()


@asynccontextmanager
async def _bare_nats(url: str) -> AsyncIterator[Cycle]:
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
        yield cycle
    finally:
        await backend.delete_bucket(bucket)
        await backend.aclose()


@asynccontextmanager
async def _bare_sqlite_row(url: str) -> AsyncIterator[Cycle]:
    """A row written and deleted, each in its own write transaction in a
    worker thread: what a lease that outlives its process costs at least."""
    connection = sqlite3.connect(
        url.removeprefix("sqlite:///"), check_same_thread=False, isolation_level=None
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS bare_rows (name TEXT PRIMARY KEY, v REAL)")

    async def cycle() -> None:
        await trio.to_thread.run_sync(
            connection.execute, "INSERT INTO bare_rows VALUES ('one', 1.0)"
        )
        await trio.to_thread.run_sync(connection.execute, "DELETE FROM bare_rows WHERE name='one'")

    try:
        yield cycle
    finally:
        connection.close()


async def _run(
    kind: str, url: str, count: int
) -> tuple[list[list[float]], list[float], list[float]]:
    """The bare primitives' cycles, the lock's acquire+release cycles and,
    separately, the lock's acquire alone."""
    acquired: list[float] = []
    topology = runtime.Topology(system=unique("bench_locks"), locks=url)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(trio_asyncio.open_loop())
        bares = [await stack.enter_async_context(_bare(kind, url))]
        if kind == "sqlite":
            bares.append(await stack.enter_async_context(_bare_sqlite_row(url)))
        system = await stack.enter_async_context(runtime.open_system(topology, store="memory://"))

        async def cycle() -> None:
            started = time.perf_counter()
            async with system.lock("bench:one", ttl=30):
                acquired.append(time.perf_counter() - started)

        *bare_samples, cycles = await _interleaved([*bares, cycle], count)
    return bare_samples, cycles, acquired[-count:]


@pytest.mark.parametrize("kind", BACKENDS)
def test_lock_acquire_release(bench: Any, quick: bool, kind: str) -> None:
    """p50 and p99 of one uncontended acquire+release through ``system.lock``,
    against the backend's own primitive (target: at most 1.5x), and the p99
    of the acquire alone (target: under 100 ms)."""
    count = 100 if quick else 2_000
    with tempfile.TemporaryDirectory() as directory:
        bares, cycles, acquired = trio.run(_run, kind, _url(kind, Path(directory)), count)
    baseline = {
        "memory": "trio.Lock",
        "sqlite": "BEGIN IMMEDIATE+COMMIT",
        "nats": "KV create+delete",
    }.get(kind, "pg_advisory_lock+unlock")
    names = [(kind, baseline), ("sqlite, row", "row INSERT+DELETE")]
    for (label, name), bare in zip(names, bares, strict=False):
        for q in (50, 99):
            bench.record(
                f"lock acquire+release p{q} ({label})",
                percentile(cycles, q),
                "s",
                baseline=percentile(bare, q),
                baseline_name=name,
                higher_is_better=False,
            )
    bench.record(
        f"lock acquire p99, uncontended ({kind})",
        percentile(acquired, 99),
        "s",
        higher_is_better=False,
    )
