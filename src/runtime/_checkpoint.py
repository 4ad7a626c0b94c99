"""Checkpoint stores and state serialization.

A store keeps, per actor path, the latest state as JSON text and a version.
Every write names the version it read; a write against a newer stored
version fails with ``CheckpointConflict`` and changes nothing, so two
incarnations of one actor never both win. State is (un)structured with
cattrs and written as JSON: nothing is ever unpickled.

Stores are chosen by URL: ``memory://`` (this process only),
``sqlite:///path.db`` (the embedded default; WAL mode, its blocking calls in
a worker thread) and ``postgresql://...`` (asyncpg through trio-asyncio).
"""

from __future__ import annotations

import collections.abc
import json
import os
import random
import sqlite3
import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import asyncpg
import attrs
import cattrs
import cattrs.preconf.json
import trio
import trio_asyncio

from ._durations import SIZE_BUCKETS, Durations
from .errors import CheckpointConflict, StateError, StoreUnavailable

T = TypeVar("T")

__all__ = [
    "STORE_OUTAGE_DEADLINE",
    "CheckpointCounters",
    "CheckpointStatistics",
    "CheckpointStore",
    "Checkpointer",
    "MemoryStore",
    "PostgresStore",
    "SqliteStore",
    "StateError",
    "decode_state",
    "encode_state",
    "json_converter",
    "open_store",
]


def _strict(kind: type, accepts: tuple[type, ...]) -> Any:
    def structure(value: Any, _type: object) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        if not isinstance(value, accepts):
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        return kind(value)

    return structure


def _make_converter() -> cattrs.Converter:
    """cattrs' JSON converter (sets as lists, datetimes as ISO strings), strict:
    unknown keys, a non-object for an attrs class and scalars of the wrong type
    are errors, so a checkpoint that no longer fits is never half-read."""
    converter = cattrs.preconf.json.make_converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict(int, (int,)))
    converter.register_structure_hook(float, _strict(float, (int, float)))
    converter.register_structure_hook(str, _strict(str, (str,)))
    converter.register_structure_hook(bool, _strict(bool, (bool,)))

    def number_keyed(type_: Any) -> bool:
        args = typing.get_args(type_)
        return (
            typing.get_origin(type_)
            in (dict, collections.abc.Mapping, collections.abc.MutableMapping)
            and len(args) == 2
            and args[0] in (int, float)
        )

    def structure_number_keyed(value: Any, type_: Any) -> dict[Any, Any]:
        # JSON object keys are strings: a dict[int, ...] was written with "2" for 2.
        key_type, value_type = typing.get_args(type_)
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {value!r}")
        out = {}
        for key, item in value.items():
            try:
                number = key_type(key)
            except (TypeError, ValueError):
                raise TypeError(f"expected a {key_type.__name__} key, got {key!r}") from None
            out[number] = converter.structure(item, value_type)
        return out

    converter.register_structure_hook_func(number_keyed, structure_number_keyed)
    return converter


_converter = _make_converter()


def json_converter() -> cattrs.Converter:
    """The strict JSON converter of checkpoints (messages crossing the
    network are structured with it too)."""
    return _converter


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. Every method is a checkpoint (it may wait)."""

    url: str

    async def load(self, path: str) -> tuple[int, str] | None:
        """The latest ``(version, json)`` of ``path``, or None if it has none."""
        ...

    async def save(self, path: str, data: str, version: int) -> int:
        """Write ``data`` for ``path`` over ``version`` (0: nothing stored yet).

        Returns the new version (``version + 1``).

        Raises:
            CheckpointConflict: the stored version is not ``version``; the
                stored checkpoint is left as it was.
        """
        ...

    async def delete(self, path: str) -> None:
        """Forget ``path``'s checkpoint (no error if it has none)."""
        ...

    async def paths(self) -> list[str]:
        """Every path that has a checkpoint, sorted."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections; idempotent."""
        ...


def encode_state(path: str, state: object) -> str:
    """State as JSON text.

    Raises:
        StateError: cattrs cannot unstructure it, or it is not JSON-serializable.
    """
    try:
        return json.dumps(_converter.unstructure(state), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateError(
            f"{path}: state {type(state).__qualname__} cannot be checkpointed as JSON: {exc}"
        ) from exc


def decode_state(path: str, data: str, state_type: type) -> Any:
    """The state class instance a checkpoint holds.

    Raises:
        StateError: not JSON, or no longer fits ``state_type``; the message
            names the path and each field at fault.
    """
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise StateError(f"{path}: the stored checkpoint is not valid JSON: {exc}") from None
    if attrs.has(state_type) and not isinstance(raw, dict):
        raise StateError(
            f"{path}: the stored checkpoint does not fit {state_type.__qualname__}: "
            f"expected a JSON object, got {type(raw).__name__}"
        )
    try:
        return _converter.structure(raw, state_type)
    except Exception as exc:  # cattrs reports every failing field in one group
        problems = "; ".join(cattrs.transform_error(exc, path="state"))
        raise StateError(
            f"{path}: the stored checkpoint does not fit {state_type.__qualname__}: {problems}"
        ) from None


class MemoryStore:
    """Checkpoints in this process's memory (tests, throwaway runs)."""

    url = "memory://"

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, str]] = {}

    async def load(self, path: str) -> tuple[int, str] | None:
        await trio.lowlevel.checkpoint()
        return self._rows.get(path)

    async def save(self, path: str, data: str, version: int) -> int:
        await trio.lowlevel.checkpoint()
        stored = self._rows.get(path, (0, ""))[0]
        if stored != version:
            raise CheckpointConflict(
                f"{path}: checkpoint version is {stored}, the write was made against {version}"
            )
        self._rows[path] = (version + 1, data)
        return version + 1

    async def delete(self, path: str) -> None:
        await trio.lowlevel.checkpoint()
        self._rows.pop(path, None)

    async def paths(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(self._rows)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime_checkpoints (
    path TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
)
"""


class SqliteStore:
    """Checkpoints in a SQLite file (WAL mode), one row per actor path.

    One connection, used from worker threads one call at a time (a trio lock
    orders them), so the trio thread never blocks on the disk. A committed
    write survives the process being killed; ``synchronous=NORMAL`` means the
    last writes before a power loss may not.
    """

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = Path(file)
        self.url = f"sqlite:///{self.file}"
        self._connection: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.file, check_same_thread=False, isolation_level=None, timeout=30
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            self._connection = connection
        return self._connection

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(fn, *args)
            except (sqlite3.OperationalError, OSError) as exc:
                # Locked, unopenable or full: the file is there, or will be, later.
                raise StoreUnavailable(f"{self.url}: {exc}") from exc

    async def load(self, path: str) -> tuple[int, str] | None:
        def load() -> tuple[int, str] | None:
            row = (
                self._connect()
                .execute("SELECT version, data FROM runtime_checkpoints WHERE path = ?", (path,))
                .fetchone()
            )
            return None if row is None else (int(row[0]), str(row[1]))

        result: tuple[int, str] | None = await self._run(load)
        return result

    async def save(self, path: str, data: str, version: int) -> int:
        def save() -> int:
            connection = self._connect()
            if version == 0:
                cursor = connection.execute(
                    "INSERT INTO runtime_checkpoints (path, version, data) VALUES (?, 1, ?) "
                    "ON CONFLICT (path) DO NOTHING",
                    (path, data),
                )
            else:
                cursor = connection.execute(
                    "UPDATE runtime_checkpoints SET version = version + 1, data = ? "
                    "WHERE path = ? AND version = ?",
                    (data, path, version),
                )
            if cursor.rowcount != 1:
                row = connection.execute(
                    "SELECT version FROM runtime_checkpoints WHERE path = ?", (path,)
                ).fetchone()
                stored = 0 if row is None else int(row[0])
                raise CheckpointConflict(
                    f"{path}: checkpoint version is {stored}, the write was made against {version}"
                )
            return version + 1

        new_version: int = await self._run(save)
        return new_version

    async def delete(self, path: str) -> None:
        def delete() -> None:
            self._connect().execute("DELETE FROM runtime_checkpoints WHERE path = ?", (path,))

        await self._run(delete)

    async def paths(self) -> list[str]:
        def paths() -> list[str]:
            rows = self._connect().execute("SELECT path FROM runtime_checkpoints ORDER BY path")
            return [str(row[0]) for row in rows]

        result: list[str] = await self._run(paths)
        return result

    async def aclose(self) -> None:
        async with self._lock:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await trio.to_thread.run_sync(connection.close)


_PG_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.InterfaceError,  # the connection was closed under the call
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, not accepting
)
"""What asyncpg raises when the server cannot be reached (StoreUnavailable)."""


def _redacted(url: str) -> str:
    """``url`` without a password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


_PG_SCHEMA_VERSION = 1
_PG_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS runtime_schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runtime_checkpoints ("
    " path TEXT PRIMARY KEY, version BIGINT NOT NULL, data TEXT NOT NULL)",
]


_PG_FENCES = (
    "CREATE TABLE IF NOT EXISTS runtime_fences (unit TEXT PRIMARY KEY, epoch BIGINT NOT NULL)"
)
"""One fencing epoch per placement unit of a cluster (its lease's)."""


class PostgresStore:
    """Checkpoints in PostgreSQL through an asyncpg pool, one row per actor path.

    asyncpg runs on asyncio; this store calls it through trio-asyncio, so it
    must be used inside ``trio_asyncio.open_loop()`` (``open_system`` opens
    one when its store is PostgreSQL). The pool and the schema (versioned in
    ``runtime_schema``) are made on first use. Each write is one conditional
    ``INSERT ... ON CONFLICT DO NOTHING`` or ``UPDATE ... WHERE version = $n``.

    Args:
        url: ``postgresql://user@host:port/database``.
        max_connections: the pool's size.
    """

    def __init__(self, url: str, max_connections: int = 4) -> None:
        self.url = url
        self.max_connections = max_connections
        self._pool: Any = None
        self._opening = trio.Lock()

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            pool = await self._connect()
            return await trio_asyncio.aio_as_trio(getattr(pool, method))(*args)
        except _PG_UNREACHABLE as exc:
            raise StoreUnavailable(f"{_redacted(self.url)}: {type(exc).__name__}: {exc}") from exc

    async def _connect(self) -> Any:
        async with self._opening:
            if self._pool is None:
                pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
                    self.url, min_size=1, max_size=self.max_connections
                )
                try:
                    await trio_asyncio.aio_as_trio(self._migrate)(pool)
                except BaseException:
                    await trio_asyncio.aio_as_trio(pool.close)()
                    raise
                self._pool = pool
        return self._pool

    @staticmethod
    async def _migrate(pool: Any) -> None:
        async with pool.acquire() as connection, connection.transaction():
            # One migration at a time across processes.
            await connection.execute("SELECT pg_advisory_xact_lock(7240411)")
            for statement in _PG_SCHEMA:
                await connection.execute(statement)
            found = await connection.fetchval("SELECT max(version) FROM runtime_schema")
            if found is None:
                await connection.execute(
                    "INSERT INTO runtime_schema (version) VALUES ($1)", _PG_SCHEMA_VERSION
                )
            elif found > _PG_SCHEMA_VERSION:
                raise RuntimeError(
                    f"the checkpoint schema is at version {found}, newer than this "
                    f"runtime's {_PG_SCHEMA_VERSION}: upgrade the runtime"
                )

    async def load(self, path: str) -> tuple[int, str] | None:
        row = await self._call(
            "fetchrow", "SELECT version, data FROM runtime_checkpoints WHERE path = $1", path
        )
        return None if row is None else (int(row["version"]), str(row["data"]))

    async def save(
        self, path: str, data: str, version: int, *, fence: tuple[str, int] | None = None
    ) -> int:
        """``CheckpointStore.save``; with ``fence=(unit, epoch)``, the write is
        made only while ``epoch`` is the unit's fencing epoch (see
        ``raise_fence``), checked in the same statement as the write."""
        if fence is not None:
            return await self._save_fenced(path, data, version, fence)
        if version == 0:
            new = await self._call(
                "fetchval",
                "INSERT INTO runtime_checkpoints (path, version, data) VALUES ($1, 1, $2) "
                "ON CONFLICT (path) DO NOTHING RETURNING version",
                path,
                data,
            )
        else:
            new = await self._call(
                "fetchval",
                "UPDATE runtime_checkpoints SET version = version + 1, data = $2 "
                "WHERE path = $1 AND version = $3 RETURNING version",
                path,
                data,
                version,
            )
        if new is None:
            stored = await self._call(
                "fetchval", "SELECT version FROM runtime_checkpoints WHERE path = $1", path
            )
            raise CheckpointConflict(
                f"{path}: checkpoint version is {stored or 0}, the write was made against {version}"
            )
        return int(new)

    async def delete(self, path: str) -> None:
        await self._call("execute", "DELETE FROM runtime_checkpoints WHERE path = $1", path)

    async def raise_fence(self, unit: str, epoch: int) -> None:
        """Make ``epoch`` the fencing epoch of ``unit``: from now on only
        writes fenced with it are made. Waits for a fenced write in progress
        (it holds the fence row), so a read after this sees that write.

        Raises:
            CheckpointConflict: the unit's epoch is newer than ``epoch``.
        """
        await self._call("execute", _PG_FENCES)
        raised = await self._call(
            "fetchval",
            "INSERT INTO runtime_fences (unit, epoch) VALUES ($1, $2) ON CONFLICT (unit) "
            "DO UPDATE SET epoch = EXCLUDED.epoch WHERE runtime_fences.epoch <= EXCLUDED.epoch "
            "RETURNING epoch",
            unit,
            epoch,
        )
        if raised is None:
            current = await self._fence_epoch(unit)
            raise CheckpointConflict(f"{unit}: fencing epoch is {current}, newer than {epoch}")

    async def _fence_epoch(self, unit: str) -> int:
        found = await self._call(
            "fetchval", "SELECT epoch FROM runtime_fences WHERE unit = $1", unit
        )
        return int(found or 0)

    async def _save_fenced(
        self, path: str, data: str, version: int, fence: tuple[str, int]
    ) -> int:
        unit, epoch = fence
        # FOR SHARE: raise_fence waits for this write, and this write sees a
        # raise committed before it (READ COMMITTED re-reads a locked row).
        if version == 0:
            new = await self._call(
                "fetchval",
                "WITH fence AS (SELECT epoch FROM runtime_fences WHERE unit = $3 FOR SHARE) "
                "INSERT INTO runtime_checkpoints (path, version, data) "
                "SELECT $1, 1, $2 WHERE (SELECT epoch FROM fence) = $4 "
                "ON CONFLICT (path) DO NOTHING RETURNING version",
                path,
                data,
                unit,
                epoch,
            )
        else:
            new = await self._call(
                "fetchval",
                "WITH fence AS (SELECT epoch FROM runtime_fences WHERE unit = $4 FOR SHARE) "
                "UPDATE runtime_checkpoints SET version = version + 1, data = $2 "
                "WHERE path = $1 AND version = $3 AND (SELECT epoch FROM fence) = $5 "
                "RETURNING version",
                path,
                data,
                version,
                unit,
                epoch,
            )
        if new is None:
            current = await self._fence_epoch(unit)
            if current != epoch:
                raise CheckpointConflict(
                    f"{path}: written under epoch {epoch} of {unit}, whose epoch is now "
                    f"{current} (another node owns it)"
                )
            stored = await self._call(
                "fetchval", "SELECT version FROM runtime_checkpoints WHERE path = $1", path
            )
            raise CheckpointConflict(
                f"{path}: checkpoint version is {stored or 0}, the write was made against {version}"
            )
        return int(new)

    async def paths(self) -> list[str]:
        rows = await self._call("fetch", "SELECT path FROM runtime_checkpoints ORDER BY path")
        return [str(row["path"]) for row in rows]

    async def aclose(self) -> None:
        async with self._opening:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await trio_asyncio.aio_as_trio(pool.close)()


@attrs.define
class CheckpointCounters:
    """Running totals of one system's checkpoint traffic (see ``statistics()``)."""

    reads: int = 0
    read_seconds: float = 0.0
    writes: int = 0
    write_seconds: float = 0.0
    bytes_written: int = 0
    conflicts: int = 0
    failures: int = 0
    # Distributions for the metrics (writes are slow: each one is observed).
    write_durations: Durations = attrs.field(factory=Durations)
    sizes: Durations = attrs.field(factory=lambda: Durations(SIZE_BUCKETS))

    def record_failure(self, error: BaseException) -> None:
        if isinstance(error, CheckpointConflict):
            self.conflicts += 1
        else:
            self.failures += 1

    def statistics(self) -> CheckpointStatistics:
        """A frozen snapshot."""
        return CheckpointStatistics(
            **{
                field.name: getattr(self, field.name)
                for field in attrs.fields(CheckpointStatistics)
            }
        )


@attrs.frozen
class CheckpointStatistics:
    """Checkpoint reads and writes of a system since it started.

    Attributes:
        reads, read_seconds: checkpoints loaded at actor starts, and the time.
        writes, write_seconds, bytes_written: checkpoints written.
        conflicts: writes refused because another incarnation wrote first.
        failures: other failed writes (unserializable state, store errors).
    """

    reads: int
    read_seconds: float
    writes: int
    write_seconds: float
    bytes_written: int
    conflicts: int
    failures: int


def default_store_url(system: str) -> str:
    """The embedded default: ``sqlite:///.runtime/<system>.db``."""
    return f"sqlite:///.runtime/{system}.db"


def open_store(url: str) -> CheckpointStore:
    """The store a URL names (it connects on first use).

    Raises:
        ValueError: an unknown scheme or a malformed URL.
    """
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        file = url[len("sqlite:///") :]
        if not file:
            raise ValueError(f"{url!r}: name a file, e.g. sqlite:///.runtime/app.db")
        return SqliteStore(file)
    if url.startswith(("postgresql://", "postgres://")):
        if url.rstrip("/") in ("postgresql:", "postgres:"):
            raise ValueError(f"{url!r}: name a server, e.g. postgresql://user@host:5432/db")
        return PostgresStore(url)
    raise ValueError(
        f"unknown checkpoint store {url!r}: use memory://, sqlite:///path.db or postgresql://..."
    )


STORE_OUTAGE_DEADLINE = 30.0
"""Seconds an actor keeps retrying a read or write that meets an unreachable
store (``StoreUnavailable``) before it gives up and crashes with it."""

STORE_RETRY_INITIAL = 0.1
STORE_RETRY_MAX = 5.0
"""The wait before the n-th retry: ``min(MAX, INITIAL * 2**(n-1))``, with full jitter."""


async def _retry_outage(
    attempt: Callable[[], Awaitable[T]], log: Any, action: str, deadline: float
) -> T:
    """``await attempt()``, retried with backoff while the store is
    unreachable, until ``deadline`` (trio's clock). Raises the last
    ``StoreUnavailable`` after it, and any other error at once."""
    retries = 0
    while True:
        try:
            return await attempt()
        except StoreUnavailable as exc:
            now = trio.current_time()
            if now >= deadline:
                log.warning(f"checkpoint_{action}_gave_up", retries=retries, error=str(exc))
                raise
            retries += 1
            delay = min(STORE_RETRY_MAX, STORE_RETRY_INITIAL * 2 ** (retries - 1))
            if retries == 1:
                log.warning(f"checkpoint_{action}_waiting_for_store", error=str(exc))
            await trio.sleep(min(random.random() * delay, deadline - now))


class Checkpointer:
    """One actor's checkpoints: its state read at every start, conditional
    writes, and the last write of a graceful stop.

    It outlives the actor's incarnations (the version it read or last wrote
    is the one the next write is conditional on). Writes are one at a time:
    ``save`` waits for a write in progress before starting its own. A read
    or write that meets an unreachable store is retried with backoff for up
    to ``outage_deadline`` seconds (the actor's reply waits meanwhile, and it
    handles nothing else, so its memory never runs ahead of the store).
    """

    __slots__ = (
        "_lock",
        "counters",
        "log",
        "outage_deadline",
        "path",
        "saved",
        "state_type",
        "store",
        "version",
    )

    def __init__(
        self,
        path: str,
        store: CheckpointStore,
        counters: CheckpointCounters,
        state_type: type,
        log: Any,
        *,
        outage_deadline: float = STORE_OUTAGE_DEADLINE,
    ) -> None:
        self.outage_deadline = outage_deadline
        self.path = path
        self.store = store
        self.counters = counters
        self.state_type = state_type
        self.log = log
        self.version = 0  # read or last written
        # The JSON last read or written: an unchanged state is not written again.
        self.saved: str | None = None
        self._lock = trio.Lock()

    async def load(self) -> object:
        """The latest checkpoint of this path, or a fresh state if there is none.

        Raises:
            StateError: the stored checkpoint cannot be read back (the start
                fails; it is never replaced by a fresh state).
            What the store raises when it cannot be reached.
        """
        counters = self.counters
        start = trio.current_time()
        try:
            row = await _retry_outage(
                lambda: self.store.load(self.path),
                self.log,
                "read",
                start + self.outage_deadline,
            )
            counters.reads += 1
            counters.read_seconds += trio.current_time() - start
            if row is None:
                self.version, self.saved = 0, None
                return self.state_type()
            self.version, self.saved = row
            state = decode_state(self.path, row[1], self.state_type)
        except Exception as exc:
            counters.failures += 1
            self.log.warning("checkpoint_unreadable", error=f"{type(exc).__name__}: {exc}")
            raise
        self.log.info("checkpoint_restored", version=row[0], size=len(row[1]))
        return state

    async def save(self, state: object) -> None:
        """Write ``state`` if it changed since the last write.

        Waits for the store. Raises what the store raises
        (``CheckpointConflict``, ``StateError``, I/O errors); the previous
        checkpoint is then intact and the caller crashes the actor.
        """
        counters = self.counters
        async with self._lock:
            try:
                data = encode_state(self.path, state)
                if data == self.saved:
                    return
                # What cannot be read back would fail every later start.
                decode_state(self.path, data, self.state_type)
                start = trio.current_time()
                self.version = await _retry_outage(
                    lambda: self.store.save(self.path, data, self.version),
                    self.log,
                    "write",
                    start + self.outage_deadline,
                )
            except Exception as exc:
                counters.record_failure(exc)
                self.log.warning(
                    "checkpoint_failed", version=self.version, error=f"{type(exc).__name__}: {exc}"
                )
                raise
            counters.writes += 1
            counters.bytes_written += len(data)
            counters.sizes.observe(len(data))
            elapsed = trio.current_time() - start
            counters.write_seconds += elapsed
            counters.write_durations.observe(elapsed)
            self.saved = data

    async def save_every(
        self, period: float, state: Callable[[], object], scope: trio.CancelScope
    ) -> None:
        """Write ``state()`` every ``period`` seconds until ``scope`` is cancelled."""
        with scope:
            while True:
                await trio.sleep(period)
                await self.save(state())

    async def flush(self, state: object, deadline: float) -> bool:
        """The last write of a graceful stop, shielded from cancellation until
        ``deadline``; False when the deadline cut it short."""
        with trio.move_on_at(deadline, shield=True) as scope:
            await self.save(state)
        return not scope.cancelled_caught
