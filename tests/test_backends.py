"""The coordination engines reached from trio: JetStream KV compare-and-set,
PostgreSQL through a pool, and each one stopped and started again (a
private server): calls fail fast as BackendUnavailable, then work again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trio_asyncio

from runtime._backends import (
    Backends,
    BackendUnavailable,
    NatsBackend,
    PostgresBackend,
    SqliteFile,
    backend_kind,
    redacted,
    run_inline,
    run_to_end,
)
from tests.conftest import POSTGRES_URL
from tests.servers import NATS_URL, PrivateNats, PrivatePostgres, unique


def test_backend_kinds_and_redaction() -> None:
    assert backend_kind("memory://") == "memory"
    assert backend_kind("sqlite:///x.db") == "sqlite"
    assert backend_kind("postgres://h/db") == "postgresql"
    assert backend_kind("nats://127.0.0.1:4222") == "nats"
    with pytest.raises(ValueError, match="not a backend URL"):
        backend_kind("redis://127.0.0.1")
    assert redacted("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("nats://token@h:4222") == "nats://***@h:4222"
    assert redacted("nats://h:4222") == "nats://h:4222"


@pytest.mark.nats
async def test_kv_compare_and_set() -> None:
    bucket = unique("kv")
    async with trio_asyncio.open_loop():
        backend = NatsBackend(NATS_URL)
        try:
            with trio.fail_after(20):
                kv = await backend.kv(bucket, ttl=60)
                first = await kv.create("a.b", {"owner": "one"})
                assert first is not None
                assert await kv.create("a.b", {"owner": "two"}) is None  # taken
                assert await kv.get("a.b") == ({"owner": "one"}, first)
                second = await kv.update("a.b", {"owner": "three"}, first)
                assert second is not None and second > first
                assert await kv.update("a.b", {"owner": "four"}, first) is None  # stale
                assert await kv.keys() == ["a.b"]
                assert not await kv.delete("a.b", first)  # stale revision
                assert await kv.delete("a.b", second)
                assert await kv.get("a.b") is None
                third = await kv.create("a.b", {"owner": "five"})  # over the tombstone
                assert third is not None and third > second
                assert await kv.delete_at("a.b", second) is None  # stale revision
                marker = await kv.delete_at("a.b", third)
                assert marker is not None and marker > third
                assert await kv.get("a.b") is None
                fourth = await kv.update("a.b", {"owner": "six"}, marker)  # one round trip
                assert fourth is not None and fourth > marker
                assert await kv.get("a.b") == ({"owner": "six"}, fourth)
        finally:
            await backend.delete_bucket(bucket)
            await backend.aclose()


@pytest.mark.postgres
async def test_postgres_runs_on_a_pooled_connection() -> None:
    async with trio_asyncio.open_loop():
        backends = Backends()
        table = unique("t")

        async def migrate(connection: object) -> None:
            await connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (n int)")  # type: ignore[attr-defined]

        try:
            backend = backends.postgres(POSTGRES_URL)
            assert backends.postgres(POSTGRES_URL) is backend
            backend.migrate_with(migrate)

            async def insert(connection: object) -> int:
                await connection.execute(f"INSERT INTO {table} VALUES (1), (2)")  # type: ignore[attr-defined]
                return int(await connection.fetchval(f"SELECT sum(n) FROM {table}"))  # type: ignore[attr-defined]

            with trio.fail_after(20):
                assert await backend.run(insert) == 3

                async def drop(connection: object) -> None:
                    await connection.execute(f"DROP TABLE {table}")  # type: ignore[attr-defined]

                await backend.run(drop)
        finally:
            await backends.aclose()


async def _sum(connection: object) -> int:
    return int(await connection.fetchval("SELECT 1 + 1"))  # type: ignore[attr-defined]


async def test_postgres_outage_fails_fast_then_recovers(private_postgres: PrivatePostgres) -> None:
    async with trio_asyncio.open_loop():
        backend = PostgresBackend(private_postgres.url, op_timeout=2.0)
        try:
            with trio.fail_after(30):
                assert await backend.run(_sum) == 2
                await trio.to_thread.run_sync(private_postgres.stop)
                with pytest.raises(BackendUnavailable, match="PostgreSQL at"):
                    await backend.run(_sum)
                await trio.to_thread.run_sync(private_postgres.start)
                assert await backend.run(_sum) == 2  # the pool makes new connections
        finally:
            await backend.aclose()


async def test_nats_outage_fails_fast_then_recovers(private_nats: PrivateNats) -> None:
    async with trio_asyncio.open_loop():
        backend = NatsBackend(private_nats.url, op_timeout=1.0)
        try:
            with trio.fail_after(30):
                kv = await backend.kv("outage", ttl=60)
                revision = await kv.create("k", {"n": 1})
                assert revision is not None
                await trio.to_thread.run_sync(private_nats.stop)
                with pytest.raises(BackendUnavailable, match="NATS at"):
                    await kv.get("k")
                with pytest.raises(BackendUnavailable):
                    await backend.kv("outage")
                await trio.to_thread.run_sync(private_nats.start)
                kv = await backend.kv("outage", ttl=60)  # a new connection
                assert await kv.get("k") == ({"n": 1}, revision)  # kept on disk
        finally:
            await backend.aclose()


def test_nats_is_not_imported_by_a_system_that_does_not_use_it() -> None:
    """A system that coordinates through nothing, or PostgreSQL only, never
    loads nats-py: a fresh interpreter runs one and looks."""
    code = (
        "import sys, trio, runtime\n"
        "async def main():\n"
        "    async with runtime.open_system(None, store='memory://'):\n"
        "        pass\n"
        "trio.run(main)\n"
        "assert 'nats' not in sys.modules, sorted(m for m in sys.modules if 'nats' in m)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


async def test_run_inline_returns_at_once_or_waits_for_the_futures_it_awaits(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A coroutine that never waits completes in the calling task; one that
    waits for asyncio futures is resumed as they complete; one that waits
    past the limit is closed where it waits."""
    import asyncio

    async def at_once() -> int:
        return 1

    async def waits() -> int:
        await asyncio.sleep(1)
        await asyncio.sleep(0)
        return 2

    closed = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            closed.append(True)

    async with trio_asyncio.open_loop():
        assert await run_inline(at_once(), 1) == 1
        assert await run_inline(waits(), 5) == 2
        with pytest.raises(trio.TooSlowError):
            await run_inline(forever(), 0.5)
    assert closed == [True]


async def test_a_sqlite_files_calls_run_in_a_worker_thread_one_at_a_time(tmp_path: Path) -> None:
    """Calls run in a worker thread, one at a time, in call order. One
    cancelled while it waits for its turn never runs; one cancelled while
    running returns its result."""
    file = SqliteFile(tmp_path / "a.db", ("CREATE TABLE t (x INTEGER)",))
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []
    outcome: dict[str, Any] = {}

    def call(name: str) -> str:
        assert threading.current_thread() is not threading.main_thread()
        ran.append(name)
        if name == "first":
            started.set()
            release.wait(10)
        file.connection().execute("INSERT INTO t (x) VALUES (1)")
        return name

    async def run(name: str, scope: trio.CancelScope) -> None:
        with scope:
            outcome[name] = await file.run(call, name)

    scopes = {name: trio.CancelScope() for name in ("first", "second", "cancelled")}
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "first", scopes["first"])
                await trio.to_thread.run_sync(started.wait, 10)
                for name in ("second", "cancelled"):
                    nursery.start_soon(run, name, scopes[name])
                    await trio.testing.wait_all_tasks_blocked()
                assert ran == ["first"]  # the others wait for it
                scopes["cancelled"].cancel()
                scopes["first"].cancel()
                await trio.testing.wait_all_tasks_blocked()
                release.set()
            assert ran == ["first", "second"]
            assert outcome == {"first": "first", "second": "second"}
            assert scopes["cancelled"].cancelled_caught
            rows = await file.run(
                lambda: file.connection().execute("SELECT count(*) FROM t").fetchone()
            )
            assert rows == (2,)
    finally:
        release.set()
        await file.aclose()


async def _cancelled_while_waiting(answer: object) -> dict[str, Any]:
    """``run_to_end`` of an asyncio call answered with ``answer`` (a value
    or an error) after its caller was cancelled: what the caller got."""
    loop = trio_asyncio.current_loop.get()
    future = loop.create_future()

    async def call_on_asyncio() -> Any:
        return await future

    scope = trio.CancelScope()
    got: dict[str, Any] = {}

    async def caller() -> None:
        with scope:
            try:
                got["value"] = await run_to_end(call_on_asyncio())
            except OSError as exc:
                got["error"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert got == {}  # still waiting for the answer
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
    assert not future.cancelled()
    return got


async def test_run_to_end_waits_for_the_answer_even_when_cancelled() -> None:
    """A call cancelled while its asyncio task runs still gets the task's
    outcome (the task is not cancelled), its value or its error; with no
    trio-asyncio loop open it fails at once."""
    with pytest.raises(RuntimeError, match="open_loop"):
        await run_to_end(asyncio.sleep(0))
    with trio.fail_after(5):
        async with trio_asyncio.open_loop():
            assert await _cancelled_while_waiting(7) == {"value": 7}
            error = OSError("gone")
            assert await _cancelled_while_waiting(error) == {"error": error}
