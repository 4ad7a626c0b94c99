"""Checkpoint stores and state serialization.

A store keeps, per actor path, the latest state as JSON text and a version.
Every write names the version it read; a write against a newer stored
version fails with ``CheckpointConflict`` and changes nothing, so two
incarnations of one actor never both win. State is (un)structured with
cattrs and written as JSON: nothing is ever unpickled.

Stores are chosen by URL: ``memory://`` (this process only),
``sqlite:///path.db`` (the embedded default; WAL mode, its blocking calls in
a worker thread) and ``postgresql://...`` (asyncpg through trio-asyncio).

The SQLite and PostgreSQL stores commit writes in groups (``GroupCommit``):
the writes of actors waiting at the same time go to the store in one
transaction, each writer still told only once its own write committed, and
each version checked on its own.
"""

from __future__ import annotations

import collections
import collections.abc
import contextlib
import copy
import json
import os
import random
import sqlite3
import typing
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import asyncpg
import attrs
import cattrs
import cattrs.preconf.json
import trio
import trio_asyncio

from ._backends import PG_UNREACHABLE, SqliteFile, run_to_end
from ._durations import SIZE_BUCKETS, Durations
from ._specs import to_seconds
from .errors import CheckpointConflict, StateError, StoreUnavailable

T = TypeVar("T")

__all__ = [
    "RESERVED_PREFIX",
    "SEQUENCE_KEY",
    "STORE_OUTAGE_DEADLINE",
    "WORKFLOW_PREFIX",
    "CheckpointCounters",
    "CheckpointStatistics",
    "CheckpointStore",
    "Checkpointer",
    "GroupCommit",
    "MemoryStore",
    "PostgresStore",
    "SqliteStore",
    "StateError",
    "decode_state",
    "encode_state",
    "json_converter",
    "open_store",
    "stored_sequence",
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

RESERVED_PREFIX = "__budget__/"
"""Paths of the runtime's own records in a store (budgets' spending), which
are no actor's checkpoint: ``paths()`` leaves them out."""

WORKFLOW_PREFIX = "workflow/"
"""Paths of workflow journals (``runtime.workflow``), no actor's checkpoint
either: ``paths()`` leaves them out too."""


def _actor_paths(paths: list[str]) -> list[str]:
    return [path for path in paths if not path.startswith((RESERVED_PREFIX, WORKFLOW_PREFIX))]


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
        """Every actor path that has a checkpoint, sorted; the runtime's own
        records (under ``RESERVED_PREFIX``, ``__budget__/``, and
        ``WORKFLOW_PREFIX``, ``workflow/``) are left out."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections; idempotent."""
        ...


SEQUENCE_KEY = "__stream_sequence__"
"""The key of a durable mailbox's last applied stream sequence, kept in the
JSON object of its actor's checkpoint beside the state's fields."""


def encode_state(path: str, state: object, sequence: int | None = None) -> str:
    """State as JSON text; with ``sequence``, the last stream sequence applied
    to it rides along under ``SEQUENCE_KEY`` (the state must be an object).

    Raises:
        StateError: cattrs cannot unstructure it, or it is not JSON-serializable.
    """
    try:
        raw = _converter.unstructure(state)
        if sequence is not None:
            raw = _with_sequence(raw, sequence)
        return json.dumps(raw, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateError(
            f"{path}: state {type(state).__qualname__} cannot be checkpointed as JSON: {exc}"
        ) from exc


def _with_sequence(raw: object, sequence: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError("a durable mailbox's actor needs a state that is a JSON object")
    return {**raw, SEQUENCE_KEY: sequence}


def stored_sequence(data: str) -> int:
    """The stream sequence a checkpoint's JSON records (0: none)."""
    try:
        raw = json.loads(data)
    except ValueError:
        return 0
    found = raw.get(SEQUENCE_KEY, 0) if isinstance(raw, dict) else 0
    return found if isinstance(found, int) else 0


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
    if isinstance(raw, dict):
        raw.pop(SEQUENCE_KEY, None)
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
        return _actor_paths(sorted(self._rows))

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


DEFAULT_MAX_BATCH = 256
"""The most writes one group commit sends in one transaction."""

DEFAULT_LINGER = 0.0
"""How long a write waits for companions before its batch is sent: 0, so a
batch holds whatever queued while the previous one was committing."""


@attrs.define(eq=False)
class _Write:
    """One writer's place in the group commit: its row, then its outcome."""

    path: str
    data: str
    version: int
    queued_at: float
    # Set when the write's outcome is known, or when its writer is to lead.
    wake: trio.Event = attrs.Factory(trio.Event)
    taken: bool = False  # in a batch that is being committed
    # The new version, or the error to raise in the writer's task.
    outcome: int | BaseException | None = None


def conflict(path: str, stored: int, version: int) -> CheckpointConflict:
    """The error of a write made against ``version`` when ``stored`` is stored."""
    return CheckpointConflict(
        f"{path}: checkpoint version is {stored}, the write was made against {version}"
    )


def _for_writer(error: BaseException) -> BaseException:
    """``error`` as one writer of a failed batch raises it: a copy of the same
    type (each writer's traceback is its own), caused by the original."""
    try:
        own = copy.copy(error)
    except Exception:
        return error
    own.__cause__ = error if error.__cause__ is None else error.__cause__
    own.__traceback__ = None
    return own


BatchCommit = Callable[[list[tuple[str, str, int]]], Awaitable[list[int | None]]]
"""Commits rows ``(path, data, version)`` (distinct paths) in one transaction.
Returns, per row, None when it was written, else the version stored (a
conflict: that row changed nothing). Raises when the transaction failed:
then nothing of it was written."""


def _bounds(max_batch: object, linger: object) -> tuple[int, float]:
    """A group commit's ``max_batch`` and ``linger``, checked.

    Raises:
        ValueError: not a whole number of at least 1, not a duration.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch: expected a whole number of at least 1, got {max_batch!r}")
    return max_batch, float(to_seconds(linger))


class GroupCommit:
    """Group commit of one store's writes: leader and followers, no task of its own.

    A writer queues its row. If no batch is being committed it leads: it takes
    up to ``max_batch`` queued rows (one per path, in arrival order), commits
    them in one transaction, tells each their outcome, and hands the lead to
    the oldest write still queued, whose writer then commits the writes that
    queued meanwhile. So under load a batch holds what arrived while the
    previous one was committing. ``linger`` (seconds) lets a leader wait up
    to that long after the oldest queued write arrived for companions, until
    ``max_batch`` are queued.

    Alone (no batch committing, hence none queued, and no ``linger``), a
    write goes straight to ``commit`` as a batch of one, without a place in
    the queue: a lone writer pays the store's own write and little more.
    Writes arriving meanwhile queue behind it as behind any batch.

    Each writer gets its own outcome: its new version, ``CheckpointConflict``
    for its own row alone (the others are written), or, when the whole
    transaction failed and wrote nothing, the error the store raised (a copy
    per writer). A write taken into a batch is carried to its end even when
    its writer is cancelled meanwhile (companions depend on the batch, and
    the writer's version must follow what the store holds).

    Args:
        commit: sends one batch (``BatchCommit``).
        max_batch, linger: the bounds above.
        runs_to_end: ``commit``, when its caller is cancelled, either raises
            ``trio.Cancelled`` before it sent anything or returns the batch's
            outcome (as a call in a worker thread does), so a lone write
            needs no cancel shield of its own.
    """

    def __init__(
        self,
        commit: BatchCommit,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = DEFAULT_LINGER,
        runs_to_end: bool = False,
    ) -> None:
        self.max_batch, self.linger = _bounds(max_batch, linger)
        self.commit = commit  # what sends one batch to the store
        self.runs_to_end = runs_to_end
        self._queue: collections.deque[_Write] = collections.deque()
        self._leading = False
        self._full = trio.Event()  # set when max_batch writes are queued
        self.batches = 0  # transactions committed or attempted
        self.writes = 0  # rows in them
        self.largest = 0  # the largest batch

    async def save(self, path: str, data: str, version: int) -> int:
        """Write one row in the next batch; its new version once committed.

        Raises:
            CheckpointConflict: its own version check failed.
            What the store raised when the batch failed.
        """
        if self._leading or self.linger:
            return await self._save_queued(path, data, version)
        # Alone: nothing committing, hence nothing queued. A batch of one,
        # sent at once without a place in the queue; writes arriving
        # meanwhile queue behind it, and the oldest of them leads the next
        # batch. Once sent it is carried to its end as any batch: shielded,
        # or, with runs_to_end, by commit itself (cancelled before its row
        # was sent, it raises Cancelled with nothing written).
        self._leading = True
        self._count(1)
        failed: BaseException | None = None
        try:
            if self.runs_to_end:
                found = (await self.commit([(path, data, version)]))[0]
            else:
                with trio.CancelScope(shield=True):
                    found = (await self.commit([(path, data, version)]))[0]
        except Exception as error:
            failed = _for_writer(error)
        finally:
            self._pass_lead()
        if failed is not None:
            raise failed
        if found is None:
            return version + 1
        raise conflict(path, found, version)

    async def _save_queued(self, path: str, data: str, version: int) -> int:
        """``save`` behind a batch being committed, or with a linger: the
        write queues, and leads when no batch is being committed."""
        write = _Write(path, data, version, trio.current_time() if self.linger else 0.0)
        queue = self._queue
        queue.append(write)
        if len(queue) >= self.max_batch:
            self._full.set()
        if self._leading:
            await self._follow(write)
            if write.outcome is None:  # handed the lead
                await self._lead(write, handed=True)
        else:
            self._leading = True
            await self._lead(write, handed=False)
        outcome = write.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    async def _follow(self, write: _Write) -> None:
        try:
            await write.wake.wait()
        except trio.Cancelled:
            if not write.taken:
                self._queue.remove(write)  # never sent: nothing to undo
                raise
            with trio.CancelScope(shield=True):
                await write.wake.wait()

    async def _lead(self, write: _Write, *, handed: bool) -> None:
        with trio.CancelScope(shield=True):
            try:
                if self.linger:
                    await self._linger()
                elif handed:
                    # Writers told by the previous batch queue their next
                    # writes in this scheduling round: they join this batch.
                    await trio.lowlevel.checkpoint()
                while write.outcome is None:
                    await self._run(self._take())
            finally:
                self._pass_lead()

    def _pass_lead(self) -> None:
        """A batch is done: the oldest queued write's writer leads the next
        one, or nobody leads."""
        if self._queue:
            self._queue[0].wake.set()
        else:
            self._leading = False

    def _count(self, size: int) -> None:
        self.batches += 1
        self.writes += size
        self.largest = max(self.largest, size)

    async def _linger(self) -> None:
        if len(self._queue) < self.max_batch:
            self._full = trio.Event()
            with trio.move_on_at(self._queue[0].queued_at + self.linger):
                await self._full.wait()

    def _take(self) -> list[_Write]:
        """The next batch: queued writes in order, one per path (a later
        write of a path already in the batch waits for the next one)."""
        queue, paths = self._queue, set()
        batch: list[_Write] = []
        later: list[_Write] = []
        while queue and len(batch) < self.max_batch:
            write = queue.popleft()
            if write.path in paths:
                later.append(write)
                continue
            paths.add(write.path)
            write.taken = True
            batch.append(write)
        queue.extendleft(reversed(later))
        return batch

    async def _run(self, batch: list[_Write]) -> None:
        self._count(len(batch))
        try:
            stored = await self.commit([(w.path, w.data, w.version) for w in batch])
        except BaseException as error:
            for write in batch:
                write.outcome = _for_writer(error)
            if not isinstance(error, Exception):
                raise
        else:
            for write, found in zip(batch, stored, strict=True):
                write.outcome = (
                    write.version + 1
                    if found is None
                    else conflict(write.path, found, write.version)
                )
        finally:
            for write in batch:
                write.wake.set()


def _store_options(url: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``url`` without the store's own query parameters, and those parameters.

    Raises:
        ValueError: a parameter is given twice.
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    ours: dict[str, str] = {}
    rest = []
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key in allowed:
            if key in ours:
                raise ValueError(f"{_redacted(url)}: {key} is given twice")
            ours[key] = value
        else:
            rest.append((key, value))
    if not rest:
        return base, ours
    return f"{base}?{urllib.parse.urlencode(rest, quote_via=urllib.parse.quote)}", ours


def _group_options(options: dict[str, str], url: str) -> dict[str, Any]:
    """``max_batch`` and ``linger`` from a store URL's query, checked.

    Raises:
        ValueError: not a whole number of at least 1, not a duration.
    """
    found: dict[str, Any] = {}
    try:
        if "max_batch" in options:
            found["max_batch"] = int(options["max_batch"])
        if "linger" in options:
            found["linger"] = options["linger"]
        found["max_batch"], found["linger"] = _bounds(
            found.get("max_batch", DEFAULT_MAX_BATCH), found.get("linger", DEFAULT_LINGER)
        )
    except ValueError as exc:
        raise ValueError(f"{_redacted(url)}: {exc}") from None
    return found


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
    orders them), so the trio thread never blocks on the disk. Writes are
    group-committed (``GroupCommit``): each batch is one transaction,
    ``BEGIN IMMEDIATE``, a conditional ``INSERT`` or ``UPDATE`` per row
    (its rowcount tells a conflict), ``COMMIT``.

    ``synchronous`` is SQLite's level in WAL mode: ``normal`` (the default)
    commits without waiting for the disk, so a committed write survives the
    process being killed but the last transactions before a power loss or an
    operating system crash may be lost; ``full`` syncs the WAL at every
    commit (one sync per batch), so a committed write survives those too.

    Args:
        file: the database file (created with its directory on first use).
        synchronous: ``normal`` or ``full``.
        max_batch, linger: the group commit's bounds (see ``GroupCommit``).
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous: expected normal or full, got {synchronous!r}")
        self.file = Path(file)
        self.url = f"sqlite:///{self.file}"
        self.synchronous = synchronous
        self._file = SqliteFile(
            self.file, (_SCHEMA,), synchronous=synchronous, unavailable=StoreUnavailable
        )
        self._connect = self._file.connection
        self._run = self._file.run
        # The worker thread's call, once started, returns even when its caller
        # is cancelled: a lone write needs no shield.
        self.group = GroupCommit(self._commit, max_batch=max_batch, linger=linger, runs_to_end=True)

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
        return await self.group.save(path, data, version)

    def _write_rows(self, rows: list[tuple[str, str, int]]) -> list[int | None]:
        """In a worker thread: one transaction (a single row: one statement,
        its own transaction); per row None, or the stored version of a conflict."""
        connection = self._connect()
        alone = len(rows) == 1
        if not alone:
            connection.execute("BEGIN IMMEDIATE")
        try:
            stored: list[int | None] = []
            for path, data, version in rows:
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
                if cursor.rowcount == 1:
                    stored.append(None)
                else:
                    row = connection.execute(
                        "SELECT version FROM runtime_checkpoints WHERE path = ?", (path,)
                    ).fetchone()
                    stored.append(0 if row is None else int(row[0]))
            if not alone:
                connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        return stored

    def _commit(self, rows: list[tuple[str, str, int]]) -> Awaitable[list[int | None]]:
        # The file's call itself, no coroutine of its own around it: one
        # frame less for every resumption of a write.
        return self._run(self._write_rows, rows)

    async def delete(self, path: str) -> None:
        def delete() -> None:
            self._connect().execute("DELETE FROM runtime_checkpoints WHERE path = ?", (path,))

        await self._run(delete)

    async def paths(self) -> list[str]:
        def paths() -> list[str]:
            rows = self._connect().execute("SELECT path FROM runtime_checkpoints ORDER BY path")
            return _actor_paths([str(row[0]) for row in rows])

        result: list[str] = await self._run(paths)
        return result

    async def aclose(self) -> None:
        await self._file.aclose()


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


_PG_WRITE = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS b(path, data, version)
), inserted AS (
    INSERT INTO runtime_checkpoints (path, version, data)
    SELECT path, 1, data FROM batch WHERE version = 0
    ON CONFLICT (path) DO NOTHING
    RETURNING path
), updated AS (
    UPDATE runtime_checkpoints AS c SET version = c.version + 1, data = b.data
    FROM batch AS b
    WHERE b.version > 0 AND c.path = b.path AND c.version = b.version
    RETURNING c.path
)
SELECT b.path, c.version AS stored
FROM batch AS b LEFT JOIN runtime_checkpoints AS c ON c.path = b.path
WHERE b.path NOT IN (SELECT path FROM inserted UNION ALL SELECT path FROM updated)
"""
"""One group commit in one statement (one round trip, one transaction): the
first writes inserted, the others updated where their version still holds;
returns the rows that were not written, with the version stored (as the
statement found it) for their ``CheckpointConflict``."""
_PG_FENCES = (
    "CREATE TABLE IF NOT EXISTS runtime_fences (unit TEXT PRIMARY KEY, epoch BIGINT NOT NULL)"
)
"""One fencing epoch per placement unit of a cluster (its lease's)."""


class PostgresStore:
    """Checkpoints in PostgreSQL through an asyncpg pool, one row per actor path.

    asyncpg runs on asyncio; this store calls it through trio-asyncio, so it
    must be used inside ``trio_asyncio.open_loop()`` (``open_system`` opens
    one when its store is PostgreSQL). The pool and the schema (versioned in
    ``runtime_schema``) are made on first use. Writes are group-committed
    (``GroupCommit``): a batch is one statement over arrays (``_PG_WRITE``),
    a conditional ``INSERT ... ON CONFLICT DO NOTHING`` for first writes and
    an ``UPDATE ... WHERE version = ...`` for the others, returning the rows
    it did not write: one round trip, one transaction.

    Args:
        url: ``postgresql://user@host:port/database``.
        max_connections: the pool's size.
        max_batch, linger: the group commit's bounds (see ``GroupCommit``).
    """

    def __init__(
        self,
        url: str,
        max_connections: int = 4,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self.url = url
        self.max_connections = max_connections
        self._pool: Any = None
        self._opening = trio.Lock()
        # Its writes, once sent, are carried to their end (_call): a lone
        # write needs no shield.
        self.group = GroupCommit(self._commit, max_batch=max_batch, linger=linger, runs_to_end=True)

    async def _call(self, method: str, *args: Any, cancellable: bool = False) -> Any:
        """``pool.<method>(*args)``. By default (the group commit's writes)
        once sent it is carried to its end, its caller waiting for the
        server's answer even when cancelled meanwhile (``run_to_end``);
        cancelled before it was sent (opening the pool), it raises
        ``Cancelled``, nothing sent. ``cancellable``: abandoned when its
        caller is cancelled (reads, deletes, fences and fenced writes).

        Raises:
            StoreUnavailable: the server cannot be reached.
        """
        try:
            pool = self._pool if self._pool is not None else await self._connect()
            call = getattr(pool, method)
            if cancellable:
                return await trio_asyncio.aio_as_trio(call)(*args)
            return await run_to_end(call(*args))
        except PG_UNREACHABLE as exc:
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
            "fetchrow",
            "SELECT version, data FROM runtime_checkpoints WHERE path = $1",
            path,
            cancellable=True,
        )
        return None if row is None else (int(row["version"]), str(row["data"]))

    async def save(
        self, path: str, data: str, version: int, *, fence: tuple[str, int] | None = None
    ) -> int:
        """``CheckpointStore.save``; with ``fence=(unit, epoch)``, the write is
        made only while ``epoch`` is the unit's fencing epoch (see
        ``raise_fence``), checked in the same statement as the write. Fenced
        writes go one by one; the others share group commits."""
        if fence is not None:
            return await self._save_fenced(path, data, version, fence)
        return await self.group.save(path, data, version)

    def _commit(self, rows: list[tuple[str, str, int]]) -> Awaitable[list[int | None]]:
        # The statement's own coroutine, none around it: one frame less for
        # every resumption of a write.
        return self._write_one(*rows[0]) if len(rows) == 1 else self._write_many(rows)

    async def _write_many(self, rows: list[tuple[str, str, int]]) -> list[int | None]:
        """A batch of several: one statement over arrays (``_PG_WRITE``)."""
        paths, datas, versions = (list(column) for column in zip(*rows, strict=True))
        refused = await self._call("fetch", _PG_WRITE, paths, datas, versions)
        stored = {str(row["path"]): int(row["stored"] or 0) for row in refused}
        return [stored.get(path) for path, _, _ in rows]

    async def _write_one(self, path: str, data: str, version: int) -> list[int | None]:
        """A batch of one (a write that found nothing committing): a plain
        insert or version-checked update, one round trip when it is written;
        ``[None]``, or ``[the version stored]`` when its check failed."""
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
        if new is not None:
            return [None]
        stored = await self._call(
            "fetchval", "SELECT version FROM runtime_checkpoints WHERE path = $1", path
        )
        return [int(stored or 0)]

    async def delete(self, path: str) -> None:
        await self._call(
            "execute", "DELETE FROM runtime_checkpoints WHERE path = $1", path, cancellable=True
        )

    async def raise_fence(self, unit: str, epoch: int) -> None:
        """Make ``epoch`` the fencing epoch of ``unit``: from now on only
        writes fenced with it are made. Waits for a fenced write in progress
        (it holds the fence row), so a read after this sees that write.

        Raises:
            CheckpointConflict: the unit's epoch is newer than ``epoch``.
        """
        await self._call("execute", _PG_FENCES, cancellable=True)
        raised = await self._call(
            "fetchval",
            "INSERT INTO runtime_fences (unit, epoch) VALUES ($1, $2) ON CONFLICT (unit) "
            "DO UPDATE SET epoch = EXCLUDED.epoch WHERE runtime_fences.epoch <= EXCLUDED.epoch "
            "RETURNING epoch",
            unit,
            epoch,
            cancellable=True,
        )
        if raised is None:
            current = await self._fence_epoch(unit)
            raise CheckpointConflict(f"{unit}: fencing epoch is {current}, newer than {epoch}")

    async def _fence_epoch(self, unit: str) -> int:
        found = await self._call(
            "fetchval", "SELECT epoch FROM runtime_fences WHERE unit = $1", unit, cancellable=True
        )
        return int(found or 0)

    async def _save_fenced(self, path: str, data: str, version: int, fence: tuple[str, int]) -> int:
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
                cancellable=True,
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
                cancellable=True,
            )
        if new is None:
            current = await self._fence_epoch(unit)
            if current != epoch:
                raise CheckpointConflict(
                    f"{path}: written under epoch {epoch} of {unit}, whose epoch is now "
                    f"{current} (another node owns it)"
                )
            stored = await self._call(
                "fetchval",
                "SELECT version FROM runtime_checkpoints WHERE path = $1",
                path,
                cancellable=True,
            )
            raise CheckpointConflict(
                f"{path}: checkpoint version is {stored or 0}, the write was made against {version}"
            )
        return int(new)

    async def paths(self) -> list[str]:
        rows = await self._call(
            "fetch", "SELECT path FROM runtime_checkpoints ORDER BY path", cancellable=True
        )
        return _actor_paths([str(row["path"]) for row in rows])

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

    SQLite and PostgreSQL URLs take the group commit's bounds as query
    parameters, ``max_batch`` (writes per transaction, default 256) and
    ``linger`` (how long a write may wait for companions, default 0; seconds
    or a duration such as ``2ms``); SQLite also ``synchronous`` (``normal``,
    the default, or ``full``). For PostgreSQL the other parameters go to the
    server as before.

    Raises:
        ValueError: an unknown scheme, a malformed URL or parameter.
    """
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        base, options = _store_options(url, ("max_batch", "linger", "synchronous"))
        if "?" in base:
            raise ValueError(
                f"{url!r}: a SQLite store takes max_batch, linger and synchronous, nothing else"
            )
        file = base[len("sqlite:///") :]
        if not file:
            raise ValueError(f"{url!r}: name a file, e.g. sqlite:///.runtime/app.db")
        synchronous = options.get("synchronous", "normal").lower()
        if synchronous not in ("normal", "full"):
            raise ValueError(f"{url!r}: synchronous must be normal or full")
        return SqliteStore(file, synchronous=synchronous, **_group_options(options, url))
    if url.startswith(("postgresql://", "postgres://")):
        if url.rstrip("/") in ("postgresql:", "postgres:"):
            raise ValueError(f"{url!r}: name a server, e.g. postgresql://user@host:5432/db")
        base, options = _store_options(url, ("max_batch", "linger"))
        return PostgresStore(base, **_group_options(options, url))
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
        "sequence",
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
        sequenced: bool = False,
    ) -> None:
        self.outage_deadline = outage_deadline
        # With a durable mailbox: the last stream sequence applied to the state,
        # read and written with it (None: not kept).
        self.sequence: int | None = 0 if sequenced else None
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
                if self.sequence is not None:
                    self.sequence = 0
                return self.state_type()
            self.version, self.saved = row
            if self.sequence is not None:
                self.sequence = stored_sequence(row[1])
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
                data = encode_state(self.path, state, self.sequence)
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
