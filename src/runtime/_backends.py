"""Coordination backends shared by processes: connections to PostgreSQL and
to NATS JetStream KV, reached from trio.

Locks, shared resource limits and budgets coordinate the processes that run
a system of the same name through one of these engines. Both drivers run on
asyncio (asyncpg, nats-py); this module calls them through trio-asyncio, so
it must be used inside ``trio_asyncio.open_loop()`` (``open_system`` opens
one when the topology needs it).

``Backends`` keeps one connection per URL for a system, made on first use
and closed when the system stops. Every call is bounded by a timeout, and an
engine that cannot be reached is ``BackendUnavailable`` (the caller decides
what to do then: a lock waits, a shared limit falls back to its local share).
A connection that was lost is made again by the next call.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import nats
import nats.errors
import nats.js.errors
import trio
import trio_asyncio

__all__ = [
    "BackendUnavailable",
    "Backends",
    "NatsBackend",
    "NatsKV",
    "PostgresBackend",
    "backend_kind",
    "process_identity",
    "redacted",
]

T = TypeVar("T")

DEFAULT_OP_TIMEOUT = 2.0
"""Seconds one call to an engine may take before it counts as unreachable."""

_KINDS = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "nats": "nats",
    "tls": "nats",
}

PG_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.InterfaceError,  # the connection was closed under the call
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, not accepting
    asyncpg.exceptions.CannotConnectNowError,
)
"""What asyncpg raises when the server cannot be reached."""

NATS_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    nats.errors.Error,  # no servers, connection closed, timeout, ...
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
"""What nats-py raises when the server or JetStream cannot be reached."""


_NATS_DOWN: tuple[type[BaseException], ...] = (*NATS_UNREACHABLE, trio.TooSlowError)
_PG_DOWN: tuple[type[BaseException], ...] = (*PG_UNREACHABLE, trio.TooSlowError)

_NATS_ANSWERS: tuple[type[BaseException], ...] = (
    nats.js.errors.NotFoundError,  # no such key, bucket or stream
    nats.js.errors.BadRequestError,  # a compare-and-set that lost, among others
    nats.js.errors.NoKeysError,
)
"""What nats-py raises for an answer the engine gave (passed on as it is)."""


_WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a write whose expected revision was not the last."""


class BackendUnavailable(Exception):
    """A coordination engine (PostgreSQL, NATS) could not be reached in time."""


def process_identity() -> tuple[str, int, str]:
    """This process as other processes see it: ``(node, pid, member)``,
    ``node`` the host's name, ``member`` unique to this process's life
    (``node-pid-random``: a pid reused after a crash is another member)."""
    pid = os.getpid()
    found = _IDENTITY.get(pid)  # keyed by pid: a forked child makes its own
    if found is None:
        node = socket.gethostname()
        found = _IDENTITY[pid] = (node, pid, f"{node}-{pid}-{secrets.token_hex(3)}")
    return found


_IDENTITY: dict[int, tuple[str, int, str]] = {}


def backend_kind(url: str) -> str:
    """``memory``, ``sqlite``, ``postgresql`` or ``nats``: the engine ``url`` names.

    Raises:
        ValueError: not one of those schemes.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    kind = _KINDS.get(scheme)
    if kind is None:
        raise ValueError(
            f"{redacted(url)!r} is not a backend URL: use memory://, sqlite:///path, "
            "postgresql://... or nats://..."
        )
    return kind


def redacted(url: str) -> str:
    """``url`` without its password or token (for logs and errors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username if parts.password is not None else None
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return parts._replace(netloc=netloc).geturl()


class NatsKV:
    """One JetStream KV bucket, called from trio.

    Values are JSON objects. ``create`` and ``update`` are the engine's
    compare-and-set: they return None instead of raising when another
    process got there first.
    """

    def __init__(self, backend: NatsBackend, bucket: str, kv: Any) -> None:
        self.backend = backend
        self.bucket = bucket
        self._kv = kv

    async def get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The value of ``key`` and its revision; None if it has none."""
        try:
            entry = await self.backend.call(self._kv.get, key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or not entry.value:
            return None
        return json.loads(entry.value), int(entry.revision)

    async def create(self, key: str, value: dict[str, Any]) -> int | None:
        """Set ``key`` if it has no value; its revision, or None if it has one."""
        try:
            return int(await self.backend.call(self._kv.create, key, _encode(value)))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def update(self, key: str, value: dict[str, Any], revision: int) -> int | None:
        """Set ``key`` if its revision is still ``revision``; the new revision,
        or None if another write came first."""
        try:
            return int(await self.backend.call(self._kv.update, key, _encode(value), revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def put(self, key: str, value: dict[str, Any]) -> int:
        """Set ``key`` whatever its revision; the new revision."""
        return int(await self.backend.call(self._kv.put, key, _encode(value)))

    async def delete(self, key: str, revision: int | None = None) -> bool:
        """Delete ``key`` (only at ``revision``, if given); False if another
        write came first."""
        try:
            await self.backend.call(self._kv.delete, key, revision)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def keys(self) -> list[str]:
        """Every key with a value now."""
        try:
            return list(await self.backend.call(self._kv.keys))
        except nats.js.errors.NoKeysError:
            return []


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class NatsBackend:
    """A NATS connection with JetStream, for KV buckets.

    Args:
        url: ``nats://host:port`` (credentials in the URL are passed on).
        op_timeout: seconds one call may take.
        name: the connection's name, as the server shows it.
    """

    def __init__(
        self, url: str, *, op_timeout: float = DEFAULT_OP_TIMEOUT, name: str = "runtime"
    ) -> None:
        self.url = url
        self.op_timeout = op_timeout
        self.name = name
        self._client: Any = None
        self._js: Any = None
        self._buckets: dict[str, NatsKV] = {}
        self._lock = trio.Lock()

    async def _connected(self) -> Any:
        """The JetStream context, connecting first if need be."""
        if self._client is not None and self._client.is_connected:
            return self._js
        async with self._lock:
            if self._client is not None and self._client.is_connected:
                return self._js
            await self._close_client()
            try:
                with trio.fail_after(self.op_timeout * 2):
                    client = await trio_asyncio.aio_as_trio(nats.connect)(
                        self.url,
                        name=self.name,
                        connect_timeout=self.op_timeout,
                        allow_reconnect=False,
                        # nats-py reads 0 as "no limit" and retries a refused
                        # first connect forever: one retry, at once, then
                        # NoServersError (the next call connects anew).
                        max_reconnect_attempts=1,
                        reconnect_time_wait=0,
                        error_cb=_quiet,
                        disconnected_cb=_quiet_event,
                        closed_cb=_quiet_event,
                    )
            except _NATS_DOWN as exc:
                raise BackendUnavailable(f"NATS at {redacted(self.url)}: {exc!r}") from exc
            self._client = client
            self._js = client.jetstream(timeout=self.op_timeout)
            self._buckets.clear()
            return self._js

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on asyncio, within ``op_timeout``."""
        try:
            with trio.fail_after(self.op_timeout):
                result: T = await trio_asyncio.aio_as_trio(fn)(*args)
                return result
        except _NATS_ANSWERS:
            raise  # the engine answered: not an outage
        except _NATS_DOWN as exc:
            raise BackendUnavailable(f"NATS at {redacted(self.url)}: {exc!r}") from exc

    async def kv(self, bucket: str, *, ttl: float | None = None, history: int = 1) -> NatsKV:
        """The KV bucket ``bucket``, made if it does not exist.

        Args:
            ttl: seconds a value lives after its last write (the engine
                removes it then); None: forever. A bucket that exists keeps
                its own setting.
            history: values kept per key.
        """
        js = await self._connected()
        found = self._buckets.get(bucket)
        if found is not None:
            return found
        try:
            kv = await self.call(js.key_value, bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await self._create_bucket(js, bucket, ttl, history)
        handle = NatsKV(self, bucket, kv)
        self._buckets[bucket] = handle
        return handle

    async def _create_bucket(self, js: Any, bucket: str, ttl: float | None, history: int) -> Any:
        async def create() -> Any:
            return await js.create_key_value(bucket=bucket, ttl=ttl, history=history)

        return await self.call(create)

    async def delete_bucket(self, bucket: str) -> None:
        """Remove ``bucket`` and every key in it (tests and tools)."""
        js = await self._connected()
        self._buckets.pop(bucket, None)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.call(js.delete_key_value, bucket)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                with trio.move_on_after(self.op_timeout):
                    await trio_asyncio.aio_as_trio(client.close)()
            except Exception:  # a lost connection has nothing left to close
                pass

    async def aclose(self) -> None:
        """Close the connection."""
        async with self._lock:
            await self._close_client()
            self._buckets.clear()


async def _quiet(_error: Exception) -> None:
    """nats-py's error callback: the caller sees every failure as an error of
    its own call, so nothing is printed or logged here."""


async def _quiet_event() -> None:
    """nats-py's connection callbacks: nothing to do."""


class PostgresBackend:
    """An asyncpg pool, called from trio.

    Args:
        url: ``postgresql://...`` (libpq's ``options=-csearch_path=...``
            selects a schema).
        op_timeout: seconds one call may take.
        max_connections: connections in the pool.
    """

    def __init__(
        self, url: str, *, op_timeout: float = DEFAULT_OP_TIMEOUT, max_connections: int = 4
    ) -> None:
        self.url = url
        self.op_timeout = op_timeout
        self.max_connections = max_connections
        self._pool: Any = None
        self._lock = trio.Lock()
        self._migrations: list[Callable[[Any], Awaitable[None]]] = []
        self._migrated = 0  # how many of _migrations the pool has run

    def migrate_with(self, migration: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``migration(connection)`` (an asyncio coroutine function) on
        every new pool, before it is used: ``CREATE TABLE IF NOT EXISTS``."""
        if migration not in self._migrations:
            self._migrations.append(migration)

    async def _connected(self) -> Any:
        if self._pool is not None and self._migrated == len(self._migrations):
            return self._pool
        async with self._lock:
            if self._pool is None:
                try:
                    with trio.fail_after(self.op_timeout * 2):
                        self._pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
                            self.url,
                            min_size=1,
                            max_size=self.max_connections,
                            timeout=self.op_timeout,
                        )
                except _PG_DOWN as exc:
                    raise BackendUnavailable(
                        f"PostgreSQL at {redacted(self.url)}: {exc!r}"
                    ) from exc
                self._migrated = 0
            pending = self._migrations[self._migrated :]
            if pending:
                pool = self._pool

                async def migrate() -> None:
                    async with pool.acquire() as connection:
                        for migration in pending:
                            await migration(connection)

                await self._call_on_pool(migrate)
                self._migrated += len(pending)
            return self._pool

    async def _call_on_pool(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            with trio.fail_after(self.op_timeout):
                result: T = await trio_asyncio.aio_as_trio(fn)()
                return result
        except _PG_DOWN as exc:
            raise BackendUnavailable(f"PostgreSQL at {redacted(self.url)}: {exc!r}") from exc

    async def run(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(connection)`` on asyncio with a pooled connection,
        within ``op_timeout``: the body of a transaction, a query or several.

        ``fn`` is an asyncio coroutine function (asyncpg's API as it is);
        open ``connection.transaction()`` in it for a transaction.
        """
        pool = await self._connected()

        async def body() -> T:
            async with pool.acquire() as connection:
                return await fn(connection)

        return await self._call_on_pool(body)

    async def aclose(self) -> None:
        """Close the pool."""
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                with trio.move_on_after(self.op_timeout):
                    await trio_asyncio.aio_as_trio(pool.close)()
                pool.terminate()


class Backends:
    """One connection per engine URL for a system, made on first use and
    closed together."""

    def __init__(self, *, name: str = "runtime") -> None:
        self.name = name
        self._nats: dict[str, NatsBackend] = {}
        self._postgres: dict[str, PostgresBackend] = {}

    def nats(self, url: str) -> NatsBackend:
        """The NATS connection for ``url`` (it connects on first use)."""
        backend = self._nats.get(url)
        if backend is None:
            backend = self._nats[url] = NatsBackend(url, name=self.name)
        return backend

    def postgres(self, url: str) -> PostgresBackend:
        """The PostgreSQL pool for ``url`` (it connects on first use)."""
        backend = self._postgres.get(url)
        if backend is None:
            backend = self._postgres[url] = PostgresBackend(url)
        return backend

    async def aclose(self) -> None:
        """Close every connection."""
        backends: list[NatsBackend | PostgresBackend] = [
            *self._nats.values(),
            *self._postgres.values(),
        ]
        self._nats.clear()
        self._postgres.clear()
        for backend in backends:
            await backend.aclose()
