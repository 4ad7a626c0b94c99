"""Locks on the engines shared by processes: SQLite (a temporary file),
PostgreSQL (this session's schema) and NATS JetStream KV (a bucket of the
test's own). Each test uses a system name of its own, so runs never collide.

These run on real time (the engines answer in real time), with leases of
about a second: contention, tries, expiry after a holder in another OS
process is SIGKILLed, fencing order across processes, renewal keeping a
long holder's lock, and LockLost when the lease is taken from under its
holder or the engine stops.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio_asyncio

from runtime import Topology, open_system
from runtime._backends import NatsBackend, PostgresBackend
from runtime._lock_backends import nats_bucket, nats_key
from runtime.errors import LockHeld, LockLost
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import PrivateNats, PrivatePostgres, require_nats, unique

REPO = Path(__file__).resolve().parent.parent
KINDS = ["sqlite", "postgresql", "nats"]
TTL = 1.0


@pytest.fixture(params=KINDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``(kind, url, system)``: a lock backend and a system name of this test's own."""
    kind = request.param
    system = unique("locks")
    if kind == "sqlite":
        yield kind, f"sqlite:///{tmp_path / 'locks.db'}", system
    elif kind == "postgresql":
        require_postgres()
        yield kind, POSTGRES_URL, system
    else:
        url = require_nats()
        yield kind, url, system
        trio.run(_delete_bucket, url, nats_bucket(system))


@pytest.fixture
def postgres_url() -> str:
    """This session's schema on the shared PostgreSQL (skipped when unreachable)."""
    require_postgres()
    return POSTGRES_URL


async def _delete_bucket(url: str, bucket: str) -> None:
    async with trio_asyncio.open_loop():
        backend = NatsBackend(url)
        await backend.delete_bucket(bucket)
        await backend.aclose()


def _topology(url: str, system: str) -> Topology:
    return Topology(system=system, locks=url)


async def test_a_waiter_gets_the_lock_after_release(engine: tuple[str, str, str]) -> None:
    """The second asker waits while the first holds, then gets the lock with
    a greater token."""
    _, url, system_name = engine
    tokens: list[int] = []
    with trio.fail_after(20):
        async with open_system(_topology(url, system_name), store="memory://") as system:

            async def hold(seconds: float) -> None:
                async with system.lock("job:1", ttl=TTL, wait_timeout=10) as lease:
                    tokens.append(lease.token)
                    await trio.sleep(seconds)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold, 0.5)
                await trio.sleep(0.2)
                nursery.start_soon(hold, 0.0)
                await trio.sleep(0.1)
                assert len(tokens) == 1
                assert system.lock_statistics().waiting == 1
            stats = system.lock_statistics()
    assert len(tokens) == 2 and tokens[1] > tokens[0]
    assert (stats.acquired, stats.contentions) == (2, 1)


async def test_lock_lost_when_the_lease_is_removed(engine: tuple[str, str, str]) -> None:
    """Removing the lease on the engine under its holder (an operator, or a
    sweep after a stall) makes the next renewal fail: the body is cancelled
    within ttl/3 and LockLost raised."""
    kind, url, system_name = engine
    with trio.fail_after(20):
        async with open_system(_topology(url, system_name), store="memory://") as system:
            with pytest.raises(LockLost):
                async with system.lock("victim", ttl=TTL) as lease:
                    await _remove(kind, url, system_name, "victim")
                    start = trio.current_time()
                    await trio.sleep(10)
            assert trio.current_time() - start < TTL
            assert not lease.held
            assert system.lock_statistics().lost == 1


async def _remove(kind: str, url: str, system: str, name: str) -> None:
    if kind == "sqlite":
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute("DELETE FROM runtime_locks WHERE system = ? AND name = ?",
                               (system, name))  # fmt: skip
    elif kind == "postgresql":
        backend = PostgresBackend(url)

        async def delete(connection: object) -> None:
            await connection.execute(  # type: ignore[attr-defined]
                "DELETE FROM runtime_lock_leases WHERE system = $1 AND name = $2", system, name
            )

        await backend.run(delete)
        await backend.aclose()
    else:
        backend_nats = NatsBackend(url)
        kv = await backend_nats.kv(nats_bucket(system))
        await kv.delete(nats_key(name))
        await backend_nats.aclose()


def _holder(
    url: str, system: str, name: str, hold: str, ttl: float = TTL
) -> tuple[subprocess.Popen[str], int]:
    """A holder in another process; its token once it holds the lock."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.lock_holder", url, system, name, str(ttl), hold],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("held "):
        process.kill()
        pytest.fail(f"the holder did not take the lock: {line!r}")
    return process, int(line.split()[1])


@pytest.mark.multiprocess
async def test_a_killed_holder_frees_the_lock_within_its_ttl(
    engine: tuple[str, str, str],
) -> None:
    """A holder in another process: a try names it (path, node, pid, expiry);
    SIGKILLed, its lock is free within its ttl, and the next grant's token
    is greater than the dead holder's."""
    _, url, system_name = engine
    process, dead_token = await trio.to_thread.run_sync(
        _holder, url, system_name, "deploy:prod", "inf"
    )
    try:
        with trio.fail_after(30):
            async with open_system(_topology(url, system_name), store="memory://") as system:
                with pytest.raises(LockHeld) as info:
                    async with system.lock("deploy:prod", wait_timeout=0):
                        pass
                error = info.value
                assert (error.holder, error.pid) == (system_name, process.pid)
                assert error.node == socket.gethostname()
                assert error.expires_in is not None and 0 < error.expires_in <= TTL
                assert f"pid {process.pid}" in str(error)
                process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                async with system.lock("deploy:prod", ttl=TTL, wait_timeout=5 * TTL) as lease:
                    freed_after = time.monotonic() - killed
                    assert lease.token > dead_token
    finally:
        process.kill()
        process.wait()
    assert freed_after <= TTL + 0.5  # its last renewal was at most ttl before the kill


@pytest.mark.multiprocess
async def test_renewal_keeps_a_long_holder_across_processes(
    engine: tuple[str, str, str],
) -> None:
    """A holder in another process keeps its lock for more than 3 ttls (its
    renewals): every try fails meanwhile; when it releases, a waiter gets
    the lock with a greater token."""
    _, url, system_name = engine
    hold = 3.5 * TTL
    process, token = await trio.to_thread.run_sync(_holder, url, system_name, "long", str(hold))
    started = time.monotonic()
    try:
        with trio.fail_after(30):
            async with open_system(_topology(url, system_name), store="memory://") as system:
                while time.monotonic() - started < hold - 0.5:
                    with pytest.raises(LockHeld):
                        async with system.lock("long", wait_timeout=0):
                            pass
                    await trio.sleep(0.25)
                async with system.lock("long", ttl=TTL, wait_timeout=10) as lease:
                    assert lease.token > token
                    assert time.monotonic() - started >= hold
    finally:
        process.kill()
        process.wait()


@pytest.mark.nats
async def test_nats_stopped_under_a_holder_loses_the_lock(private_nats: PrivateNats) -> None:
    """The engine stopped while a lock is held: renewals fail, and the body
    is cancelled with LockLost when the lease expires (not later)."""
    system_name = unique("locks")
    with trio.fail_after(30):
        async with open_system(_topology(private_nats.url, system_name), store="memory://") as s:
            with pytest.raises(LockLost, match="expired before it could be renewed"):
                async with s.lock("held", ttl=TTL) as lease:
                    await trio.to_thread.run_sync(private_nats.stop)
                    await trio.sleep(10)
            assert trio.current_time() <= lease.expires_at + 0.1


@pytest.mark.multiprocess
async def test_postgresql_frees_a_killed_holders_lock_at_once(postgres_url: str) -> None:
    """PostgreSQL: the lock is the holder's session advisory lock, so a
    SIGKILLed holder's lock is free as soon as the server sees its
    connection end, long before its ttl (30 s here)."""
    system_name = unique("locks")
    process, dead_token = await trio.to_thread.run_sync(
        functools.partial(_holder, POSTGRES_URL, system_name, "job", "inf", ttl=30.0)
    )
    try:
        with trio.fail_after(20):
            async with open_system(_topology(POSTGRES_URL, system_name), store="memory://") as s:
                assert await s.is_locked("job")
                process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                async with s.lock("job", ttl=30.0, wait_timeout=10) as lease:
                    freed_after = time.monotonic() - killed
                    assert lease.token > dead_token
    finally:
        process.kill()
        process.wait()
    assert freed_after < 3.0


@pytest.mark.multiprocess
async def test_postgresql_ends_the_session_of_a_stalled_holder(postgres_url: str) -> None:
    """PostgreSQL: a holder that stops renewing (SIGSTOPped: its connection
    stays open, so the server keeps its advisory lock) loses its lock when
    its lease expires: the next acquirer ends its session. Resumed, the
    stalled holder finds its lease lost and does not print "released"."""
    system_name = unique("locks")
    process, stalled_token = await trio.to_thread.run_sync(
        _holder, POSTGRES_URL, system_name, "job", "inf"
    )
    try:
        with trio.fail_after(20):
            async with open_system(_topology(POSTGRES_URL, system_name), store="memory://") as s:
                process.send_signal(signal.SIGSTOP)
                stopped = time.monotonic()
                async with s.lock("job", ttl=TTL, wait_timeout=10) as lease:
                    taken_after = time.monotonic() - stopped
                    assert lease.token > stalled_token
                    process.send_signal(signal.SIGCONT)
                    status = await trio.to_thread.run_sync(process.wait, 10)
    finally:
        process.kill()
        process.wait()
    assert TTL * 2 / 3 <= taken_after <= TTL + 1.0  # its last renewal was at most ttl/3 before
    assert status != 0  # LockLost: it never printed "released"


async def test_postgresql_crash_loses_held_locks_at_once_and_tokens_keep_growing(
    private_postgres: PrivatePostgres,
) -> None:
    """A server crash ends the holder's session: the body is cancelled with
    LockLost at once (not after the ttl). After the restart (crash recovery
    empties the unlogged lease table) the next grant's token is still
    greater than every token granted before the crash."""
    system_name = unique("locks")
    url = private_postgres.url
    with trio.fail_after(60):
        async with open_system(_topology(url, system_name), store="memory://") as s:
            tokens = []
            for _ in range(3):
                async with s.lock("job", ttl=30.0) as lease:
                    tokens.append(lease.token)
            with pytest.raises(LockLost, match="ended the session"):
                async with s.lock("job", ttl=30.0) as lease:
                    tokens.append(lease.token)
                    await trio.to_thread.run_sync(private_postgres.crash)
                    crashed = trio.current_time()
                    await trio.sleep(30)
            assert trio.current_time() - crashed < 2.0
            await trio.to_thread.run_sync(private_postgres.start)
            async with s.lock("job", ttl=30.0, wait_timeout=10) as after:
                assert after.token > max(tokens)
    assert tokens == sorted(set(tokens))
