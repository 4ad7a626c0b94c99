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

import math
import os
import re
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ._backends import (
    Backends,
    NatsBackend,
    NatsKV,
    PostgresBackend,
    SqliteFile,
    backend_kind,
    redacted,
)

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


@attrs.define
class _Lease:
    token: int
    owner: Owner
    expires_at: float  # trio's clock


class MemoryLocks:
    """Leases in this process, on trio's clock (virtual under a mock clock).

    Tokens come from one counter for every name, so a name's tokens grow
    with every grant while a released name keeps nothing behind.
    """

    kind = "memory"
    url = "memory://"
    poll = math.inf  # waiters here are woken by the release itself

    def __init__(self) -> None:
        self.leases: dict[str, _Lease] = {}
        self.last_token = 0

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        lease = self.leases.get(name)
        if lease is not None and lease.expires_at > now:
            return _holding(lease.owner, lease.expires_at - now)
        self.last_token += 1
        self.leases[name] = _Lease(self.last_token, owner, now + ttl)
        return Grant(self.last_token, self.last_token)

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        await trio.lowlevel.checkpoint()
        lease = self.leases.get(name)
        if lease is None or lease.token != token:
            return None
        lease.expires_at = trio.current_time() + ttl
        return revision

    async def release(self, name: str, token: int, revision: int) -> None:
        await trio.lowlevel.checkpoint()
        lease = self.leases.get(name)
        if lease is not None and lease.token == token:
            del self.leases[name]

    async def holder(self, name: str) -> Holding | None:
        await trio.lowlevel.checkpoint()
        lease = self.leases.get(name)
        now = trio.current_time()
        if lease is None or lease.expires_at <= now:
            return None
        return _holding(lease.owner, lease.expires_at - now)

    async def sweep(self) -> int:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        expired = [name for name, lease in self.leases.items() if lease.expires_at <= now]
        for name in expired:
            del self.leases[name]
        return len(expired)

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

SQLITE_BUSY_TIMEOUT = 5.0
"""Seconds a SQLite call waits for another process's write transaction."""


class SqliteLocks:
    """Leases in a table of a SQLite file, for the processes of one machine.

    A grant is one ``BEGIN IMMEDIATE`` transaction (the file's write lock
    orders it against every other process) that reads the lease, and takes
    it if it is free or expired with a token from a counter row kept in the
    same file: tokens grow across every name and every process. Expiry is
    the machine's wall clock, which every process on it shares. Calls run
    in a worker thread, one at a time, so the trio thread never waits on
    the file.
    """

    kind = "sqlite"
    poll = 0.2

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

    def _try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding:
        connection = self._connect()
        # A read first: a waiter polling a held lock takes no write lock.
        held = self._read(connection, name, time.time())
        if held is not None:
            return held
        connection.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            held = self._read(connection, name, now)
            if held is not None:
                connection.execute("COMMIT")
                return held
            (token,) = connection.execute(
                "UPDATE runtime_lock_tokens SET last = last + 1 WHERE id = 0 RETURNING last"
            ).fetchone()
            connection.execute(
                "INSERT OR REPLACE INTO runtime_locks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.system, name, token, owner.path, owner.node, owner.pid, owner.member,
                 now + ttl),
            )  # fmt: skip
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return Grant(int(token), int(token))

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        result: Grant | Holding = await self._run(self._try_acquire, name, owner, ttl)
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
            self._connect().execute(
                "DELETE FROM runtime_locks WHERE system = ? AND name = ? AND token = ?",
                (self.system, name, token),
            )

        await self._run(release)

    async def holder(self, name: str) -> Holding | None:
        def holder() -> Holding | None:
            return self._read(self._connect(), name, time.time())

        result: Holding | None = await self._run(holder)
        return result

    async def sweep(self) -> int:
        def sweep() -> int:
            cursor = self._connect().execute(
                "DELETE FROM runtime_locks WHERE expires_at <= ?", (time.time(),)
            )
            return cursor.rowcount

        swept: int = await self._run(sweep)
        return swept

    async def aclose(self) -> None:
        await self._file.aclose()


# -- PostgreSQL ----------------------------------------------------------------------

_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runtime_locks ("
    " system text NOT NULL, name text NOT NULL, token bigint NOT NULL,"
    " holder text NOT NULL, node text NOT NULL, pid integer NOT NULL, member text NOT NULL,"
    " expires_at timestamptz NOT NULL, PRIMARY KEY (system, name))",
    "CREATE SEQUENCE IF NOT EXISTS runtime_lock_tokens",
)

_PG_MIGRATION_LOCK = 7240413  # an advisory lock key: one migration at a time

# One round trip: the advisory lock orders the acquirers of one name, the
# upsert takes the lease only if it is free or expired (server clock), and
# the holder is read in the same statement when it is not taken. The
# statement's snapshot predates the advisory lock, so a lease granted by a
# concurrent statement may be missing from that read: the caller then sees
# None (held, holder unknown) and tries again.
_PG_ACQUIRE = """
WITH locked AS (
    SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))
), taken AS (
    INSERT INTO runtime_locks AS l (system, name, token, holder, node, pid, member, expires_at)
    SELECT $1, $2, nextval('runtime_lock_tokens'), $3, $4, $5, $6,
           clock_timestamp() + make_interval(secs => $7)
    FROM locked
    ON CONFLICT (system, name) DO UPDATE
        SET token = EXCLUDED.token, holder = EXCLUDED.holder, node = EXCLUDED.node,
            pid = EXCLUDED.pid, member = EXCLUDED.member, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at <= clock_timestamp()
    RETURNING l.token
)
SELECT true AS granted, token, NULL::text AS holder, NULL::text AS node, NULL::int AS pid,
       NULL::float8 AS expires_in
FROM taken
UNION ALL
SELECT false, token, holder, node, pid,
       extract(epoch FROM expires_at - clock_timestamp())::float8
FROM runtime_locks
WHERE system = $1 AND name = $2 AND NOT EXISTS (SELECT 1 FROM taken)
"""

_PG_RENEW = (
    "UPDATE runtime_locks SET expires_at = clock_timestamp() + make_interval(secs => $4) "
    "WHERE system = $1 AND name = $2 AND token = $3 RETURNING token"
)
_PG_RELEASE = "DELETE FROM runtime_locks WHERE system = $1 AND name = $2 AND token = $3"
_PG_HOLDER = (
    "SELECT holder, node, pid, extract(epoch FROM expires_at - clock_timestamp())::float8 "
    "FROM runtime_locks WHERE system = $1 AND name = $2 AND expires_at > clock_timestamp()"
)
_PG_SWEEP = "DELETE FROM runtime_locks WHERE expires_at <= clock_timestamp()"


async def _pg_migrate(connection: Any) -> None:
    async with connection.transaction():
        await connection.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        for statement in _PG_SCHEMA:
            await connection.execute(statement)


class PostgresLocks:
    """Leases in a PostgreSQL table, with expiry on the server's clock.

    Acquire and release are one statement each (one round trip): see
    ``_PG_ACQUIRE``. Tokens come from a sequence, so they grow across every
    name and every process; a released lease's row is deleted, and expired
    ones are taken over by the next acquirer or deleted by ``sweep``.
    """

    kind = "postgresql"
    poll = 0.2

    def __init__(self, backend: PostgresBackend, system: str) -> None:
        self.backend = backend
        self.url = redacted(backend.url)
        self.system = system
        backend.migrate_with(_pg_migrate)

    async def try_acquire(self, name: str, owner: Owner, ttl: float) -> Grant | Holding | None:
        system = self.system

        async def acquire(connection: Any) -> Any:
            return await connection.fetchrow(
                _PG_ACQUIRE, system, name, owner.path, owner.node, owner.pid, owner.member, ttl
            )

        row = await self.backend.run(acquire)
        if row is None:
            return None
        if row["granted"]:
            return Grant(int(row["token"]), int(row["token"]))
        if row["expires_in"] <= 0:
            return None  # expired: taken over by a concurrent acquirer just now
        return Holding(row["holder"], row["node"], int(row["pid"]), float(row["expires_in"]))

    async def renew(
        self, name: str, owner: Owner, token: int, revision: int, ttl: float
    ) -> int | None:
        system = self.system

        async def renew(connection: Any) -> Any:
            return await connection.fetchval(_PG_RENEW, system, name, token, ttl)

        return revision if await self.backend.run(renew) is not None else None

    async def release(self, name: str, token: int, revision: int) -> None:
        system = self.system

        async def release(connection: Any) -> None:
            await connection.execute(_PG_RELEASE, system, name, token)

        await self.backend.run(release)

    async def holder(self, name: str) -> Holding | None:
        system = self.system

        async def holder(connection: Any) -> Any:
            return await connection.fetchrow(_PG_HOLDER, system, name)

        row = await self.backend.run(holder)
        return None if row is None else Holding(row[0], row[1], int(row[2]), float(row[3]))

    async def sweep(self) -> int:
        async def sweep(connection: Any) -> str:
            return str(await connection.execute(_PG_SWEEP))

        status = await self.backend.run(sweep)  # "DELETE <count>"
        return int(status.rsplit(" ", 1)[-1])

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # the pool is the system's Backends'


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

    async def sweep(self) -> int:
        await trio.lowlevel.checkpoint()
        return 0  # the bucket's max_age removes what dead holders left

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()  # the connection is the system's Backends'
