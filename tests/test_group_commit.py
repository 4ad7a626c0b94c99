"""Group commit: concurrent checkpoint writes share a transaction, each
writer is told its own outcome, and a batch is all or nothing."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
import trio.testing
import trio_asyncio

from runtime._checkpoint import (
    GroupCommit,
    PostgresStore,
    SqliteStore,
    open_store,
)
from runtime.errors import CheckpointConflict, StoreUnavailable
from tests.conftest import POSTGRES_URL, open_test_store
from tests.servers import PrivatePostgres

Rows = list[tuple[str, str, int]]


class Recorder:
    """A batch commit that records each batch and holds it until let go."""

    def __init__(self) -> None:
        self.batches: list[Rows] = []
        self.gate: trio.Event | None = None
        self.stored: dict[str, int] = {}
        self.fail: BaseException | None = None

    async def __call__(self, rows: Rows) -> list[int | None]:
        self.batches.append(rows)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        outcome: list[int | None] = []
        for path, _, version in rows:
            stored = self.stored.get(path, 0)
            if stored == version:
                self.stored[path] = version + 1
                outcome.append(None)
            else:
                outcome.append(stored)
        return outcome


async def _writers(
    group: GroupCommit, rows: Rows, results: dict[str, Any], nursery: trio.Nursery
) -> None:
    async def write(path: str, data: str, version: int) -> None:
        try:
            results[path] = await group.save(path, data, version)
        except Exception as exc:
            results[path] = exc

    for row in rows:
        nursery.start_soon(write, *row)


async def _queued_behind_first(
    recorder: Recorder, group: GroupCommit, *waves: Rows
) -> dict[str, Any]:
    """A write of "first" leads and its batch is held; each wave of writes
    then queues (one wave at a time: their order is known); nobody is told
    anything until the held batch is let go. Each writer's outcome."""
    recorder.gate = trio.Event()
    results: dict[str, Any] = {}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for wave in ([("first", "x", 0)], *waves):
                await _writers(group, wave, results, nursery)
                await trio.testing.wait_all_tasks_blocked()
            assert results == {}  # nothing is told before its batch committed
            recorder.gate.set()
    return results


async def test_writers_waiting_together_share_one_batch() -> None:
    """While one batch commits, the writes that arrive wait and then go
    together in the next one; each writer gets its own new version."""
    recorder = Recorder()
    group = GroupCommit(recorder)
    results = await _queued_behind_first(recorder, group, [(f"p{i}", "y", 0) for i in range(50)])
    assert [len(batch) for batch in recorder.batches] == [1, 50]
    assert results == {"first": 1, **{f"p{i}": 1 for i in range(50)}}
    assert (group.batches, group.writes, group.largest) == (2, 51, 50)


async def test_batches_are_bounded_by_max_batch() -> None:
    """Writes beyond max_batch wait for the next batch, in arrival order."""
    recorder = Recorder()
    group = GroupCommit(recorder, max_batch=8)
    await _queued_behind_first(recorder, group, *([(f"p{i:02}", "y", 0)] for i in range(20)))
    assert [len(batch) for batch in recorder.batches] == [1, 8, 8, 4]
    assert [row[0] for batch in recorder.batches[1:] for row in batch] == [
        f"p{i:02}" for i in range(20)
    ]


async def test_one_conflicting_writer_fails_alone() -> None:
    """A stale version fails its own writer with CheckpointConflict; the
    others in the batch are written."""
    recorder = Recorder()
    recorder.stored = {"a": 3, "b": 5, "c": 0}
    group = GroupCommit(recorder)
    results = await _queued_behind_first(
        recorder, group, [("a", "1", 3), ("b", "1", 4), ("c", "1", 0)]
    )
    assert len(recorder.batches[1]) == 3
    assert results["a"] == 4 and results["c"] == 1
    assert isinstance(results["b"], CheckpointConflict)
    assert str(results["b"]) == "b: checkpoint version is 5, the write was made against 4"


async def test_a_failed_batch_fails_each_writer_with_the_stores_error() -> None:
    """Every writer of a failed batch raises the store's error type, each
    its own instance, caused by the original."""
    recorder = Recorder()
    original = StoreUnavailable("postgresql://db: connection refused")
    recorder.fail = original
    group = GroupCommit(recorder)
    results: dict[str, Any] = {}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await _writers(group, [(f"p{i}", "y", 0) for i in range(5)], results, nursery)
    errors = list(results.values())
    assert all(type(error) is StoreUnavailable for error in errors)
    assert all(str(error) == str(original) for error in errors)
    assert len({id(error) for error in errors}) == 5
    assert all(error.__cause__ is original for error in errors)


async def test_two_writes_of_one_path_go_in_successive_batches() -> None:
    """A batch holds one write per path: the second write of a path waits
    for the next batch, so versions apply in order."""
    recorder = Recorder()
    group = GroupCommit(recorder)
    recorder.gate = trio.Event()
    results: list[Any] = []

    async def write(version: int) -> None:
        try:
            results.append(await group.save("a", str(version), version))
        except CheckpointConflict as exc:
            results.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await _writers(group, [("first", "x", 0)], {}, nursery)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, 0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, 0)  # a racing second writer of "a"
            await trio.testing.wait_all_tasks_blocked()
            recorder.gate.set()
    assert [[row[0] for row in batch] for batch in recorder.batches] == [["first"], ["a"], ["a"]]
    assert results[0] == 1 and isinstance(results[1], CheckpointConflict)


async def test_linger_waits_for_companions_up_to_its_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a linger, a batch is sent once its oldest write has waited that
    long, or at once when max_batch writes are queued."""
    recorder = Recorder()
    group = GroupCommit(recorder, max_batch=3, linger=1.0)
    sent_at: list[float] = []
    inner = recorder.__call__

    async def timed(rows: Rows) -> list[int | None]:
        sent_at.append(trio.current_time())
        return await inner(rows)

    group.commit = timed
    results: dict[str, Any] = {}
    start = trio.current_time()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await _writers(group, [("a", "x", 0)], results, nursery)
            await trio.sleep(0.5)
            await _writers(group, [("b", "x", 0)], results, nursery)
        assert [t - start for t in sent_at] == [1.0]  # a waited its linger; b joined
        async with trio.open_nursery() as nursery:
            await _writers(group, [("c", "x", 0), ("d", "x", 0), ("e", "x", 0)], results, nursery)
        assert sent_at[1] - start == 1.0  # full at once: no linger
    assert [len(batch) for batch in recorder.batches] == [2, 3]
    assert results == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1}


async def test_a_cancelled_writer_leaves_the_queue_or_sees_its_write_through() -> None:
    """Cancelled while queued: its row is never sent. Cancelled while its
    batch commits: the batch completes and its version is returned."""
    recorder = Recorder()
    group = GroupCommit(recorder)
    recorder.gate = trio.Event()
    outcome: dict[str, Any] = {}

    async def write(path: str, scope: trio.CancelScope) -> None:
        with scope:
            outcome[path] = await group.save(path, "x", 0)

    queued, taken = trio.CancelScope(), trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "taken", taken)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, "queued", queued)
            await trio.testing.wait_all_tasks_blocked()
            queued.cancel()
            taken.cancel()
            await trio.testing.wait_all_tasks_blocked()
            recorder.gate.set()
    assert recorder.batches == [[("taken", "x", 0)]]
    assert outcome == {"taken": 1}
    assert recorder.stored == {"taken": 1}


async def test_a_lone_write_cancelled_before_it_is_sent_writes_nothing() -> None:
    """With a commit that, once sent, runs to its end (a worker thread's
    call), a lone write is not shielded: cancelled before its row was sent,
    it raises Cancelled, nothing is written, and the next write leads."""
    recorder = Recorder()

    async def commit(rows: Rows) -> list[int | None]:
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.CancelScope(shield=True):
            return await recorder(rows)

    group = GroupCommit(commit, runs_to_end=True)
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            scope.cancel()
            await group.save("a", "x", 0)
        assert scope.cancelled_caught
        assert recorder.batches == []
        assert await group.save("a", "x", 0) == 1
    assert recorder.batches == [[("a", "x", 0)]]


def test_store_urls_take_the_group_commit_bounds(tmp_path: Path) -> None:
    """max_batch, linger and synchronous come from the URL's query; the
    PostgreSQL URL keeps its other parameters for the server."""
    store = open_store(f"sqlite:///{tmp_path}/a.db?max_batch=16&linger=2ms&synchronous=full")
    assert isinstance(store, SqliteStore)
    assert (store.group.max_batch, store.group.linger, store.synchronous) == (16, 0.002, "full")
    default = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(default, SqliteStore)
    assert (default.group.max_batch, default.group.linger, default.synchronous) == (
        256,
        0.0,
        "normal",
    )
    pg = open_store("postgresql://u@h/db?options=-csearch_path%3Ds&max_batch=32&linger=0.01")
    assert isinstance(pg, PostgresStore)
    assert pg.url == "postgresql://u@h/db?options=-csearch_path%3Ds"
    assert (pg.group.max_batch, pg.group.linger) == (32, 0.01)
    for bad in ("max_batch=0", "max_batch=x", "linger=-1", "synchronous=off", "cache=shared"):
        with pytest.raises(ValueError):
            open_store(f"sqlite:///{tmp_path}/a.db?{bad}")


# -- on the real stores -------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with open_test_store(request.param, tmp_path) as opened:
        yield opened


LEADS = [("root/lead0", "x", 0), ("root/lead1", "x", 0)]


async def _concurrently(store: Any, rows: Rows) -> dict[str, Any]:
    """Write ``rows`` from one task each, started together, between two
    first writes (LEADS); each outcome. trio runs a round's tasks in order
    or reversed: one of the LEADS runs first and commits alone, while every
    other write queues, so ``rows`` share the second batch."""
    results: dict[str, Any] = {}
    rows = [LEADS[0], *rows, LEADS[1]]

    async def write(path: str, data: str, version: int) -> None:
        try:
            results[path] = await store.save(path, data, version)
        except Exception as exc:
            results[path] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for row in rows:
                nursery.start_soon(write, *row)
    return results


async def _rows_per_transaction(store: Any, paths: list[str]) -> list[int]:
    """How many of ``paths`` each transaction last wrote (PostgreSQL: by xmin)."""
    rows = await store._call(
        "fetch",
        "SELECT count(*) AS n FROM runtime_checkpoints WHERE path = ANY($1) "
        "GROUP BY xmin::text ORDER BY n",
        paths,
    )
    return [int(row["n"]) for row in rows]


async def test_concurrent_writers_commit_in_one_transaction(store: Any) -> None:
    """50 writers started together (and LEADS): the first commits alone, the
    51 that queued meanwhile in one transaction (SQLite: one BEGIN/COMMIT,
    seen by its trace; PostgreSQL: one statement, its rows written by one xid)."""
    await store.save("warm", "x", 0)  # connected, statement prepared
    statements: list[str] = []
    if isinstance(store, SqliteStore):
        store._connect().set_trace_callback(statements.append)  # made by the save above
    calls: list[str] = []
    if isinstance(store, PostgresStore):
        call = store._call

        async def counted(method: str, *args: Any) -> Any:
            calls.append(method)
            return await call(method, *args)

        store._call = counted  # type: ignore[method-assign]
    before = store.group.batches
    paths = [f"root/a{i}" for i in range(50)]
    results = await _concurrently(store, [(path, f"{i}", 0) for i, path in enumerate(paths)])
    assert results == dict.fromkeys([*paths, "root/lead0", "root/lead1"], 1)
    assert store.group.batches - before == 2
    if isinstance(store, SqliteStore):
        assert sum(s == "BEGIN IMMEDIATE" for s in statements) == 1
        assert sum(s == "COMMIT" for s in statements) == 1
    else:
        assert calls == ["fetchval", "fetch"]  # one round trip per batch (alone: a plain write)
        store._call = call  # type: ignore[method-assign]
        written = [*paths, "root/lead0", "root/lead1"]
        assert await _rows_per_transaction(store, written) == [1, 51]
    for i, path in enumerate(paths):
        assert await store.load(path) == (1, f"{i}")


async def test_a_conflicting_writer_in_a_batch_fails_alone(store: Any) -> None:
    """In one batch: one stale version fails with CheckpointConflict and
    changes nothing; the others are written."""
    for path in ("root/a", "root/b", "root/c"):
        await store.save(path, "v1", 0)
    await store.save("root/b", "v2", 1)
    results = await _concurrently(
        store,
        [("root/a", "new", 1), ("root/b", "stale", 1), ("root/c", "new", 1)],
    )
    assert results["root/a"] == 2 and results["root/c"] == 2
    assert store.group.largest == 4  # a, b, c and a lead together
    assert isinstance(results["root/b"], CheckpointConflict)
    assert "version is 2, the write was made against 1" in str(results["root/b"])
    assert await store.load("root/b") == (2, "v2")
    assert await store.load("root/a") == (2, "new")


async def test_a_failing_row_rolls_back_its_whole_batch(store: Any) -> None:
    """A batch whose transaction fails writes nothing (no row before the
    failing one stays), and each writer gets the store's error type."""
    for i in range(6):
        await store.save(f"root/a{i}", "v1", 0)
    trigger = (
        "CREATE TRIGGER refuse BEFORE UPDATE ON runtime_checkpoints "
        "WHEN (NEW.data = 'boom') BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    if isinstance(store, SqliteStore):
        await store._run(lambda: store._connect().execute(trigger))
        expected: type = sqlite3.IntegrityError
    else:
        await store._call(
            "execute",
            "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.data = 'boom' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$; "
            "CREATE TRIGGER refuse BEFORE UPDATE ON runtime_checkpoints "
            "FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
        expected = asyncpg.RaiseError
    try:
        rows = [(f"root/a{i}", "boom" if i == 3 else "new", 1) for i in range(6)]
        results = await _concurrently(store, rows)
    finally:
        if isinstance(store, SqliteStore):
            await store._run(lambda: store._connect().execute("DROP TRIGGER refuse"))
        else:
            await store._call("execute", "DROP TRIGGER refuse ON runtime_checkpoints")
    # One lead committed alone; the other shared the failed batch.
    assert sum(results[lead[0]] == 1 for lead in LEADS) == 1
    for i in range(6):
        assert type(results[f"root/a{i}"]) is expected, results
        assert await store.load(f"root/a{i}") == (1, "v1")


@contextlib.asynccontextmanager
async def _row_held(store: Any, path: str) -> AsyncIterator[None]:
    """Another connection holds ``path``'s row (SQLite: the file's write
    lock) until the block ends: a write of it waits in the store meanwhile."""
    if isinstance(store, SqliteStore):
        blocker = sqlite3.connect(store.file, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            yield
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        return
    connection = await trio_asyncio.aio_as_trio(asyncpg.connect)(POSTGRES_URL)
    try:
        await trio_asyncio.aio_as_trio(connection.execute)(
            f"BEGIN; SELECT 1 FROM runtime_checkpoints WHERE path = '{path}' FOR UPDATE"
        )
        yield
        await trio_asyncio.aio_as_trio(connection.execute)("ROLLBACK")
    finally:
        await trio_asyncio.aio_as_trio(connection.close)()


async def test_a_lone_writer_cancelled_in_flight_sees_its_write_through(store: Any) -> None:
    """A write that found nothing committing goes to the store at once, as
    a batch of one: its writer, cancelled while the store holds the write,
    still gets its new version, and the store has it."""
    await store.save("root/held", "v1", 0)
    outcome: dict[str, int] = {}
    scope = trio.CancelScope()

    async def write() -> None:
        with scope:
            outcome["version"] = await store.save("root/held", "v2", 1)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, _row_held(store, "root/held"):
            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == {}  # still held by the other connection
    assert outcome == {"version": 2}
    assert await store.load("root/held") == (2, "v2")
    assert await store.save("root/held", "v3", 2) == 3  # the group is free again


@pytest.mark.postgres
async def test_a_batch_meeting_a_stopped_server_fails_each_writer_as_unavailable(
    private_postgres: PrivatePostgres,
) -> None:
    """The server stops: every writer of the batch gets StoreUnavailable,
    and once it is back nothing of that batch was written."""
    with trio.fail_after(60):
        async with trio_asyncio.open_loop():
            store = open_store(private_postgres.url)
            try:
                paths = [f"root/a{i}" for i in range(20)]
                await _concurrently(store, [(path, "v1", 0) for path in paths])
                await trio.to_thread.run_sync(private_postgres.stop)
                results = await _concurrently(store, [(path, "v2", 1) for path in paths])
                assert all(type(error) is StoreUnavailable for error in results.values())
                await trio.to_thread.run_sync(private_postgres.start)
                for _ in range(100):  # the pool replaces its dead connections
                    try:
                        loaded = [await store.load(path) for path in paths]
                        break
                    except StoreUnavailable:
                        await trio.sleep(0.1)
                assert loaded == [(1, "v1")] * 20
            finally:
                await store.aclose()
