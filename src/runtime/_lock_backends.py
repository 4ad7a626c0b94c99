"""Where leases of locks are kept: in this process, in a SQLite file, in
PostgreSQL or in a JetStream KV bucket.

Each backend keeps one lease per lock name: who holds it (path, node, pid,
member), its fencing token and when it expires. Every operation is one
atomic step of the engine, so two processes never both get a grant:

- ``try_acquire`` grants a free or expired lease (with a new, greater
  token) or answers who holds it;
- ``renew`` extends the caller's lease if it still has it;
- ``release`` ends it if it still has it;
- ``holder`` reads who holds a lease now.

An engine that cannot be reached raises ``BackendUnavailable``; the lock
manager (``_locks``) decides what to do then. Expiry is decided by one
clock per lease: trio's clock in process, the machine's wall clock for
SQLite, the server's ``clock_timestamp()`` for PostgreSQL, and the writers'
wall clocks for NATS (see docs/locks.md on clock assumptions).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import attrs
import trio
import trio_asyncio

from ._backends import (
    PG_UNREACHABLE,
    Backends,
    BackendUnavailable,
    NatsBackend,
    NatsKV,
    PostgresBackend,
    SqliteFile,
    backend_kind,
    redacted,
)
from ._logging import get_logger

__all__ = [
    "Grant",
    "Holding",
    "LockBackend",
    "MemoryLocks",
    "NatsLocks",
    "Owner",
    "PostgresLocks",
    "SqliteLocks",
    "check_locks_url",
    "open_lock_backend",
]

logger = get_logger()


@attrs.frozen
class Owner:
    """Who asks for a lock: the holder's path and its process."""

    path: str
    node: str
    pid: int
    member: str


@attrs.frozen
class Grant:
    """A lease granted: its fencing token, and the revision that renewing
    and releasing it must name (the token itself, except on NATS)."""

    token: int
    revision: int


@attrs.frozen
class Holding:
    """Who holds a lease, and the seconds until it ends unless renewed."""

    path: str
    node: str
    pid: int
    expires_in: float


class LockBackend(Protocol):
    """One engine's leases. Every call is atomic; none waits for a lock."""

    kind: str
    url: str
    poll: float  # the longest wait between two tries of a waiter
    in_process: bool  # leases held in this process only: nothing to renew
    sessions: bool  # a lease's revision names a session whose end ``wait_lost`` reports

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        """Grant the lease if it is free or expired; else who holds it (None:
        held, but the holder could not be read in the same step)."""
        ...

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        """Extend the lease to ``ttl`` from now; its new revision, or None
        if it is no longer this one (expired and taken, or removed)."""
        ...

    async def release(self, name: str, token: int, revision: int) -> None:
        """End the lease if it is still this one."""
        ...

    async def holder(self, name: str) -> Holding | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        ...

    async def wait_lost(self, revision: int) -> None:
        """Return when the backend knows that the lease granted with
        ``revision`` is lost (its PostgreSQL session ended); most never do."""
        ...

    async def sweep(self) -> int:
        """Remove expired leases; how many."""
        ...

    async def aclose(self) -> None: ...


def check_locks_url(url: str) -> str:
    """The kind of lock backend ``url`` names.

    Raises:
        ValueError: not a lock backend URL.
    """
    kind = backend_kind(url)
    if kind == "memory" and url != "memory://":
        raise ValueError(f"{url!r}: the in-process backend is memory:// (nothing after it)")
    if kind == "sqlite" and (not url.startswith("sqlite:///") or url == "sqlite:///"):
        raise ValueError(f"{url!r}: name a file, e.g. sqlite:///.runtime/app.db")
    if kind in ("postgresql", "nats") and url.split("://", 1)[1].strip("/") == "":
        raise ValueError(f"{redacted(url)!r}: name a server, e.g. {kind}://host")
    return kind


def open_lock_backend(url: str, system: str, backends: Backends) -> LockBackend:
    """The backend ``url`` names, for the system ``system`` (it connects on
    first use, through ``backends`` for PostgreSQL and NATS).

    Raises:
        ValueError: not a lock backend URL.
    """
    kind = check_locks_url(url)
    if kind == "memory":
        return MemoryLocks()
    if kind == "sqlite":
        return SqliteLocks(url[len("sqlite:///") :], system)
    if kind == "postgresql":
        return PostgresLocks(backends.postgres(url), system)
    return NatsLocks(backends.nats(url), system, url)


# -- in process ---------------------------------------------------------------------


class MemoryLocks:
    """Leases in this process.

    The holder of a lease is a task of this process, which releases it when
    its block ends (also when it fails or is cancelled), and a process that
    dies takes its locks with it: a lease lasts as long as its block, with
    nothing to renew and nothing to expire. Tokens come from one counter
    for every name, so a name's tokens grow with every grant while a
    released name keeps nothing behind.
    """

    kind = "memory"
    url = "memory://"
    poll = math.inf  # waiters here are woken by the release itself
    in_process = True
    sessions = False

    def __init__(self) -> None:
        self.leases: dict[str, tuple[int, Owner, float]] = {}  # token, owner, ttl
        self.last_token = 0

    def grant_nowait(self, name: str, owner: Owner, ttl: float) -> int | None:
        """The token of a new lease of ``name``; None if it is held."""
        if name in self.leases:
            return None
        token = self.last_token = self.last_token + 1
        self.leases[name] = (token, owner, ttl)
        return token

    def release_nowait(self, name: str, token: int) -> None:
        """End the lease of ``name`` if it is still the one of ``token``."""
        lease = self.leases.get(name)
        if lease is not None and lease[0] == token:
            del self.leases[name]

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        await trio.lowlevel.checkpoint()
        token = self.grant_nowait(name, owner, ttl)
        if token is None:
            _, holder, held_for = self.leases[name]
            return _holding(holder, held_for)
        return Grant(token, token)

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        await trio.lowlevel.checkpoint()
        lease = self.leases.get(name)
        if lease is None or lease[0] != token:
            return None
        self.leases[name] = (token, lease[1], ttl)
        return revision

    async def release(self, name: str, token: int, revision: int) -> None:
        await trio.lowlevel.checkpoint()
        self.release_nowait(name, token)

    async def holder(self, name: str) -> Holding | None:
        await trio.lowlevel.checkpoint()
        lease = self.leases.get(name)
        return None if lease is None else _holding(lease[1], lease[2])

    async def wait_lost(self, revision: int) -> None:
        await trio.sleep_forever()

    async def sweep(self) -> int:
        await trio.lowlevel.checkpoint()
        return 0  # nothing expires: every lease ends with its block

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _holding(owner: Owner, expires_in: float) -> Holding:
    return Holding(owner.path, owner.node, owner.pid, max(0.0, expires_in))


# -- SQLite --------------------------------------------------------------------------

_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runtime_locks ("
    " system TEXT NOT NULL, name TEXT NOT NULL, token INTEGER NOT NULL,"
    " holder TEXT NOT NULL, node TEXT NOT NULL, pid INTEGER NOT NULL, member TEXT NOT NULL,"
    " expires_at REAL NOT NULL, PRIMARY KEY (system, name))",
    "CREATE TABLE IF NOT EXISTS runtime_lock_tokens ("
    " id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO runtime_lock_tokens (id, last) VALUES (0, 0)",
)

_SQLITE_HOLDER = (
    "SELECT holder, node, pid, expires_at FROM runtime_locks WHERE system = ? AND name = ?"
)

# One statement, its own write transaction: a new row takes the counter's
# next token; a free or expired row is taken with its own token plus one;
# a held row is left as it is (no row returned). A released lease keeps its
# row (ended now), so the name's tokens keep growing.
_SQLITE_ACQUIRE = (
    "INSERT INTO runtime_locks (system, name, token, holder, node, pid, member, expires_at)"
    " VALUES (?1, ?2, (SELECT last + 1 FROM runtime_lock_tokens WHERE id = 0),"
    " ?3, ?4, ?5, ?6, ?7 + ?8)"
    " ON CONFLICT (system, name) DO UPDATE SET token = token + 1, holder = excluded.holder,"
    " node = excluded.node, pid = excluded.pid, member = excluded.member,"
    " expires_at = excluded.expires_at"
    " WHERE expires_at <= ?7"
    " RETURNING token"
)
_SQLITE_RELEASE = (
    "UPDATE runtime_locks SET expires_at = ? WHERE system = ? AND name = ? AND token = ?"
)
SQLITE_BUSY_TIMEOUT = 5.0
"""Seconds a SQLite call waits for another process's write transaction."""

SQLITE_KEEP_ENDED = 3600.0
"""Seconds the row of an ended lease is kept before a sweep deletes it (the
counter row is raised past its token first, so a new row's token exceeds it)."""


class SqliteLocks:
    """Leases in a table of a SQLite file, for the processes of one machine.

    A grant is one statement (its own write transaction: the file's write
    lock orders it against every other process) that takes the lease only if
    it is free or expired; renewal and release are one statement each. A
    name's token is its row's plus one; rows of ended leases are kept an
    hour, and a counter row in the same file, raised past the tokens of the
    rows a sweep deletes, starts new rows: tokens grow across every process.
    Expiry is the machine's wall clock, which every process on it shares.
    Calls run in a worker thread, one at a time, so the trio thread never
    waits on the file.
    """

    kind = "sqlite"
    poll = 0.2
    in_process = False
    sessions = False

    def __init__(self, file: str | os.PathLike[str], system: str) -> None:
        self.file = Path(file)
        self.url = f"sqlite:///{self.file}"
        self.system = system
        self._file = SqliteFile(self.file, _SQLITE_SCHEMA, busy_timeout=SQLITE_BUSY_TIMEOUT)
        self._connect = self._file.connection
        self._run = self._file.run

    def _read(self, connection: sqlite3.Connection, name: str, now: float) -> Holding | None:
        row = connection.execute(_SQLITE_HOLDER, (self.system, name)).fetchone()
        if row is None or row[3] <= now:
            return None
        return Holding(row[0], row[1], int(row[2]), row[3] - now)

    def _try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        connection = self._connect()
        now = time.time()
        row = connection.execute(
            _SQLITE_ACQUIRE,
            (self.system, name, owner.path, owner.node, owner.pid, owner.member, now, ttl),
        ).fetchone()
        if row is not None:
            return Grant(int(row[0]), int(row[0]))
        return self._read(connection, name, now)  # None: released meanwhile

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        result: Grant | Holding | None = await self._run(self._try_acquire, name, owner, ttl)
        return result

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        def renew() -> int:
            cursor = self._connect().execute(
                "UPDATE runtime_locks SET expires_at = ? WHERE system = ? AND name = ? "
                "AND token = ?",
                (time.time() + ttl, self.system, name, token),
            )
            return cursor.rowcount

        return revision if await self._run(renew) == 1 else None

    async def release(self, name: str, token: int, revision: int) -> None:
        def release() -> None:
            self._connect().execute(_SQLITE_RELEASE, (time.time(), self.system, name, token))

        await self._run(release)

    async def holder(self, name: str) -> Holding | None:
        def holder() -> Holding | None:
            return self._read(self._connect(), name, time.time())

        result: Holding | None = await self._run(holder)
        return result

    async def wait_lost(self, revision: int) -> None:
        await trio.sleep_forever()  # only a renewal finds out

    async def sweep(self) -> int:
        def sweep() -> int:
            connection = self._connect()
            ended = (time.time() - SQLITE_KEEP_ENDED,)
            with connection:  # one transaction: the counter passes what is deleted
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(
                    "UPDATE runtime_lock_tokens SET last = max(last, coalesce("
                    "(SELECT max(token) FROM runtime_locks WHERE expires_at <= ?), 0))",
                    ended,
                )
                cursor = connection.execute(
                    "DELETE FROM runtime_locks WHERE expires_at <= ?", ended
                )
            return cursor.rowcount

        swept: int = await self._run(sweep)
        return swept

    async def aclose(self) -> None:
        await self._file.aclose()


# -- PostgreSQL ----------------------------------------------------------------------

_PG_SCHEMA = (
    # UNLOGGED: the leases live as long as the sessions that hold their
    # advisory locks, and a crash ends both together; writing them costs no
    # WAL and no wait for the disk.
    "CREATE UNLOGGED TABLE IF NOT EXISTS runtime_lock_leases ("
    " system text NOT NULL, name text NOT NULL, token bigint NOT NULL,"
    " holder text NOT NULL, node text NOT NULL, pid integer NOT NULL, member text NOT NULL,"
    " session integer NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (system, name))",
)

_PG_MIGRATION_LOCK = 7240413  # an advisory lock key: one migration at a time

# One round trip. The session advisory lock of (system, name) is the mutual
# exclusion: it is held by the session (this process's lock connection)
# until released, and the server drops it the moment the session ends (the
# process killed, its connection closed). When it is taken, the lease row
# (holder, expiry, token) is written in the same statement; the token is the
# server's clock in microseconds, raised past the name's last token when the
# clock is behind it. Otherwise the row says who holds it (a row written by
# a statement that committed after this one's snapshot may be missing: the
# caller then sees None, held by someone unknown, and tries again).
_PG_ACQUIRE = """
WITH locked AS (
    SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS got
), taken AS (
    INSERT INTO runtime_lock_leases AS l
        (system, name, token, holder, node, pid, member, session, expires_at)
    SELECT $1, $2, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
           $3, $4, $5, $6, pg_backend_pid(), clock_timestamp() + make_interval(secs => $7)
    FROM locked WHERE got
    ON CONFLICT (system, name) DO UPDATE
        SET token = greatest(l.token + 1, EXCLUDED.token), holder = EXCLUDED.holder,
            node = EXCLUDED.node, pid = EXCLUDED.pid, member = EXCLUDED.member,
            session = EXCLUDED.session, expires_at = EXCLUDED.expires_at
    RETURNING l.token
)
SELECT true AS granted, token, NULL::text AS holder, NULL::text AS node, NULL::int AS pid,
       NULL::float8 AS expires_in
FROM taken
UNION ALL
SELECT false, token, holder, node, pid,
       extract(epoch FROM expires_at - clock_timestamp())::float8
FROM runtime_lock_leases
WHERE system = $1 AND name = $2 AND NOT EXISTS (SELECT 1 FROM taken)
"""

# A lease that expired while its advisory lock is still held: its holder
# stopped renewing (stalled, or its machine is gone and the server has not
# noticed the connection's end yet). Its session is ended, which frees the
# lock; the row is locked first, so a grant that just renewed or replaced it
# is not ended by mistake.
_PG_END_EXPIRED = """
SELECT pg_terminate_backend(l.session)
FROM runtime_lock_leases AS l
WHERE l.system = $1 AND l.name = $2 AND l.expires_at <= clock_timestamp()
  AND l.session <> pg_backend_pid()
  AND EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND pid = l.session AND objsubid = 2
        AND classid = hashtext($1)::oid AND objid = hashtext($2)::oid
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
FOR UPDATE OF l
"""

_PG_RENEW = (
    "UPDATE runtime_lock_leases SET expires_at = clock_timestamp() + make_interval(secs => $4) "
    "WHERE system = $1 AND name = $2 AND token = $3 AND session = pg_backend_pid() "
    "RETURNING token"
)
# A release is the unlock alone, no write: the row stays as it was, the
# description of the last holder and the name's last token; a reader trusts
# a row only while its session holds the advisory lock (see _PG_HOLDER).
_PG_UNLOCK = "SELECT pg_advisory_unlock(hashtext($1), hashtext($2))"
_PG_HOLDER = """
SELECT holder, node, pid, extract(epoch FROM expires_at - clock_timestamp())::float8
FROM runtime_lock_leases AS l
WHERE system = $1 AND name = $2 AND expires_at > clock_timestamp()
  AND EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND pid = l.session AND objsubid = 2
        AND classid = hashtext($1)::oid AND objid = hashtext($2)::oid)
"""
# Rows of leases that ended (released or expired) an hour ago: only the
# token chain of a name that nobody locked for an hour is forgotten (its next
# token is the clock's). A row's lease ends at its last expiry at the latest.
_PG_SWEEP = (
    "DELETE FROM runtime_lock_leases WHERE expires_at <= clock_timestamp() - interval '1 hour'"
)

PG_DOWN: tuple[type[BaseException], ...] = (*PG_UNREACHABLE, trio.TooSlowError)


async def _pg_migrate(connection: Any) -> None:
    async with connection.transaction():
        await connection.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        for statement in _PG_SCHEMA:
            await connection.execute(statement)


class PostgresLocks:
    """Leases held as session advisory locks of PostgreSQL, described in an
    unlogged table.

    The process keeps one connection of its own for its locks (the pool's
    connections go back to the pool after each call; a session lock must
    stay with its session). Acquire, renew and release are one statement
    each (one round trip; see ``_PG_ACQUIRE``), and only the grant and the
    renewal write. A killed holder's lock is
    free at once: the server ends its session. A holder that stops renewing
    (stalled, or unreachable while the server still sees its connection)
    has its session ended by the next acquirer once its lease expired.
    When this process's lock connection ends, every lease it held is lost.
    """

    kind = "postgresql"
    poll = 0.2
    in_process = False
    sessions = True

    def __init__(self, backend: PostgresBackend, system: str) -> None:
        self.backend = backend
        self.url = redacted(backend.url)
        self.system = system
        self._connection: Any = None
        self._session = 0  # the connection's generation: a lease's revision
        self._lost: trio.Event = trio.Event()  # set when that connection ends
        self._lock = trio.Lock()  # one statement at a time on the connection
        # Held through the current session: owner and ttl, by name.
        self._local: dict[str, tuple[Owner, float]] = {}

    async def _call(self, query: str, *args: Any) -> tuple[Any, int]:
        """``fetch(query, *args)`` on the lock connection (made if need be),
        and the connection's generation."""
        async with self._lock:
            if self._connection is None or self._connection.is_closed():
                await self._connect()
            connection = self._connection
            try:
                # Shielded (and bounded): a statement cancelled half-way
                # would leave the session's locks unknown.
                with trio.CancelScope(shield=True), trio.fail_after(self.backend.op_timeout):
                    rows = await trio_asyncio.aio_as_trio(connection.fetch)(query, *args)
            except PG_DOWN as exc:
                self._drop(connection)  # its locks end with it, surely
                raise BackendUnavailable(f"PostgreSQL at {self.url}: {exc!r}") from exc
            return rows, self._session

    async def _connect(self) -> None:
        self._drop(self._connection)
        try:
            with trio.fail_after(self.backend.op_timeout * 2):
                connection = await trio_asyncio.aio_as_trio(asyncpg.connect)(
                    self.backend.url, timeout=self.backend.op_timeout
                )
                await trio_asyncio.aio_as_trio(_pg_migrate)(connection)
        except PG_DOWN as exc:
            raise BackendUnavailable(f"PostgreSQL at {self.url}: {exc!r}") from exc
        lost = self._lost = trio.Event()
        local = self._local = {}

        def ended(_connection: Any) -> None:
            lost.set()  # every lease of the session is lost with it
            local.clear()

        connection.add_termination_listener(ended)
        self._connection = connection
        self._session += 1

    def _drop(self, connection: Any) -> None:
        """Forget ``connection`` (its session's locks are gone with it)."""
        if connection is not None:
            self._lost.set()
            if connection is self._connection:
                self._connection = None
                self._local.clear()
            connection.terminate()

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        local = self._local.get(name)
        if local is not None:
            # Advisory locks are re-entrant in a session: a holder in this
            # process is answered here, without asking the server.
            await trio.lowlevel.checkpoint()
            return _holding(local[0], local[1])
        rows, session = await self._call(
            _PG_ACQUIRE, self.system, name, owner.path, owner.node, owner.pid, owner.member, ttl
        )
        if not rows:
            return None
        row = rows[0]
        if row["granted"]:
            self._local[name] = (owner, ttl)
            return Grant(int(row["token"]), session)
        if row["expires_in"] <= 0:
            await self._end_expired(name)
            return None
        return Holding(row["holder"], row["node"], int(row["pid"]), float(row["expires_in"]))

    async def _end_expired(self, name: str) -> None:
        try:
            await self._call(_PG_END_EXPIRED, self.system, name)
        except asyncpg.PostgresError as exc:  # not allowed to: the lease waits for its end
            logger.warning("lock_session_not_ended", lock=name, error=repr(exc))

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        if revision != self._session or self._lost.is_set():
            await trio.lowlevel.checkpoint()
            return None  # the session that held it has ended
        rows, session = await self._call(_PG_RENEW, self.system, name, token, ttl)
        if session != revision:
            return None
        if not rows:
            # The lease row was removed or taken over: the lease is lost, and
            # this session lets go of the advisory lock it may still hold.
            self._local.pop(name, None)
            await self._call(_PG_UNLOCK, self.system, name)
            return None
        self._local[name] = (owner, ttl)
        return revision

    async def release(self, name: str, token: int, revision: int) -> None:
        self._local.pop(name, None)
        if revision != self._session or self._lost.is_set():
            await trio.lowlevel.checkpoint()
            return  # the lock ended with its session
        await self._call(_PG_UNLOCK, self.system, name)

    async def wait_lost(self, revision: int) -> None:
        """Return when the session of ``revision`` has ended (its locks with it)."""
        if revision == self._session:
            await self._lost.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def holder(self, name: str) -> Holding | None:
        rows, _ = await self._call(_PG_HOLDER, self.system, name)
        if not rows:
            return None
        row = rows[0]
        return Holding(row[0], row[1], int(row[2]), float(row[3]))

    async def sweep(self) -> int:
        rows, _ = await self._call(f"WITH d AS ({_PG_SWEEP} RETURNING 1) SELECT count(*) FROM d")
        return int(rows[0][0])

    async def aclose(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
            self._local.clear()
            if connection is not None:
                # A lost connection has nothing left to close.
                with trio.move_on_after(self.backend.op_timeout), contextlib.suppress(Exception):
                    await trio_asyncio.aio_as_trio(connection.close)()
                connection.terminate()


# -- NATS JetStream KV ------------------------------------------------------------------

NATS_BUCKET_MAX_AGE = 24 * 3600.0
"""Seconds a key lives in the locks bucket after its last write: the engine's
cleanup of the keys (and delete markers) of holders that died. A lease's own
expiry is in its value; a held lock is rewritten every ttl/3, so this only
has to exceed the longest ``ttl`` (see docs/locks.md)."""

_KEY_SAFE = re.compile(r"[A-Za-z0-9_-]")
_BUCKET_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_REMEMBERED = 1024  # names whose last revision this process remembers


def nats_key(name: str) -> str:
    """A lock name as a KV key: letters, digits, ``_`` and ``-`` as they are,
    any other character as ``=`` and its UTF-8 bytes in hex (``deploy:prod``
    is ``deploy=3Aprod``)."""
    return "".join(
        char if _KEY_SAFE.fullmatch(char) else "".join(f"={b:02X}" for b in char.encode())
        for char in name
    )


def nats_bucket(system: str) -> str:
    """The locks bucket of the system ``system``."""
    return f"runtime_locks_{_BUCKET_UNSAFE.sub('_', system)}"


class NatsLocks:
    """Leases in a JetStream KV bucket of the system's own.

    A free lock is taken with ``create`` (or an update over the delete
    marker its last holder left, when this process knows its revision), an
    expired one with ``update`` at the revision read, a lease is renewed
    with ``update`` at its revision and released with a delete at its
    revision: every write is a compare-and-set, so two writers never both
    win. The fencing token is the revision of the grant, a stream sequence
    that grows with every write to the bucket. Expiry is the wall-clock
    ``expires_at`` in the value, written by the holder.
    """

    kind = "nats"
    poll = 0.2
    in_process = False
    sessions = False

    def __init__(self, backend: NatsBackend, system: str, url: str) -> None:
        self.backend = backend
        self.url = redacted(url)
        self.bucket = nats_bucket(system)
        # name -> the revision of the delete marker its last release left
        self._freed: OrderedDict[str, int] = OrderedDict()

    async def _kv(self) -> NatsKV:
        return await self.backend.kv(self.bucket, ttl=NATS_BUCKET_MAX_AGE)

    @staticmethod
    def _value(owner: Owner, ttl: float) -> dict[str, Any]:
        return {
            "holder": owner.path,
            "node": owner.node,
            "pid": owner.pid,
            "member": owner.member,
            "expires_at": time.time() + ttl,
        }

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        kv = await self._kv()
        key = nats_key(name)
        freed = self._freed.pop(name, None)
        if freed is not None:
            revision = await kv.update(key, self._value(owner, ttl), freed)
            if revision is not None:
                return Grant(revision, revision)
        found = await kv.get(key)
        if found is None:
            revision = await kv.create(key, self._value(owner, ttl))
            return None if revision is None else Grant(revision, revision)
        value, current = found
        expires_in = float(value.get("expires_at", 0.0)) - time.time()
        if expires_in > 0:
            return Holding(str(value["holder"]), str(value["node"]), int(value["pid"]), expires_in)
        revision = await kv.update(key, self._value(owner, ttl), current)  # take over
        return None if revision is None else Grant(revision, revision)

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        kv = await self._kv()
        return await kv.update(nats_key(name), self._value(owner, ttl), revision)

    async def release(self, name: str, token: int, revision: int) -> None:
        kv = await self._kv()
        marker = await kv.delete_at(nats_key(name), revision)
        if marker is not None:
            self._freed[name] = marker
            if len(self._freed) > _REMEMBERED:
                self._freed.popitem(last=False)

    async def holder(self, name: str) -> Holding | None:
        found = await (await self._kv()).get(nats_key(name))
        if found is None:
            return None
        value = found[0]
        expires_in = float(value.get("expires_at", 0.0)) - time.time()
        if expires_in <= 0:
            return None
        return Holding(str(value["holder"]), str(value["node"]), int(value["pid"]), expires_in)

    async def wait_lost(self, revision: int) -> None:
        await trio.sleep_forever()  # only a renewal finds out

    async def sweep(self) -> int:
        await trio.lowlevel.checkpoint()
        return 0  # the bucket's max_age removes what dead holders left

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # the connection is the system's Backends'
