"""The ``postgres`` resource kind: a PostgreSQL database behind an asyncpg pool.

Agents ask it with the messages below; every request runs on one pooled
connection through the resource's limiter, so at most ``max_concurrency``
statements reach the server at once (the pool holds that many connections
and no more)::

    rows = await ctx.resource("db").ask(Fetch("SELECT id, title FROM docs WHERE owner = $1", [7]))
    await ctx.resource("db").ask(
        Transaction([Execute("UPDATE ...", [...]), FetchVal("SELECT count(*) FROM ...")])
    )

asyncpg runs on asyncio. With ``loop: thread`` (the default) the pool runs on
an asyncio loop of the resource's own in a worker thread: each request is
one asyncio task (acquire, run, release) handed to that loop
(``asyncio.run_coroutine_threadsafe``), its answer handed back to trio, so
asyncpg's work runs beside trio's rather than between its tasks. With
``loop: shared`` the pool runs on the system's trio-asyncio loop, in trio's
own thread, each request awaited from trio with ``trio_asyncio.aio_as_trio``
(docs/benchmarks.md compares the two). Rows come back as plain dicts: they
cross actors, survive checkpoints and compare equal.

Errors. SQL errors (syntax, constraints, permissions, ``statement_timeout``)
are the request's fault: the asker gets asyncpg's own exception, nothing is
retried, and the breaker does not count it. Failures of the connection (the
server refuses, resets or terminates it, is starting up or shutting down, or
has no connection slot left) and pool waits past ``acquire_timeout`` are
transient: retried as ``retry`` allows and counted by the breaker; once the
retries are spent the asker gets a ``ResourceError`` naming the resource and
the server (never the password). A request is repeated only while doing so
cannot apply it twice: before any statement was sent, inside a transaction
whose ``COMMIT`` was not sent (the server rolls back a transaction whose
connection is gone), or when the message is ``idempotent`` (a read-only
``Transaction`` always is). A statement whose connection died, or whose
attempt timed out, after it was sent may have taken effect: it is not
repeated, and the asker gets ``OutcomeUnknown`` (or the limiter's
``TimeoutError``, with a note saying so).

A connection broken by a server restart is dropped by the pool and replaced
on the next request; after a connection failure every other pooled
connection is also replaced when next used, so none outlives the server
incarnation it was opened against. The resource itself is not restarted: the
pool recovers once the server is back, and while it is down the breaker
makes callers fail fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, Literal

import asyncpg
import attrs
import outcome
import trio
import trio_asyncio

from .._actor import handler
from .._resource import Resource
from .._specs import Seconds, to_seconds
from ..errors import ResourceError

__all__ = [
    "Execute",
    "Fetch",
    "FetchRow",
    "FetchVal",
    "OutcomeUnknown",
    "Postgres",
    "PostgresOptions",
    "Transaction",
]

Row = dict[str, Any]


class OutcomeUnknown(ResourceError):
    """The connection was lost after the statement (or a transaction's
    ``COMMIT``) was sent: it may or may not have taken effect, so it was not
    repeated. Check before sending it again, or mark the message
    ``idempotent`` if repeating it is harmless. asyncpg's error is ``__cause__``."""


# -- messages ----------------------------------------------------------------


def _to_args(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


@attrs.frozen
class Fetch:
    """Every row of a query, as a list of dicts (column name to value).

    Attributes:
        sql: one statement; ``$1``, ``$2``, ... are bound to ``args``.
        args: the parameters (a list is accepted).
        idempotent: repeating the statement is harmless, so it may be retried
            even after its connection died mid-flight.
    """

    sql: str
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)
    idempotent: bool = False


@attrs.frozen
class FetchRow:
    """The first row of a query as a dict, or None when there is none."""

    sql: str
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)
    idempotent: bool = False


@attrs.frozen
class FetchVal:
    """The first column of the first row (None when there is no row)."""

    sql: str
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)
    idempotent: bool = False


@attrs.frozen
class Execute:
    """Run a statement and return its status, such as ``"INSERT 0 1"``.

    Without ``args`` ``sql`` may hold several statements separated by ``;``
    (the status is then the last one's).
    """

    sql: str
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)
    idempotent: bool = False


Statement = Fetch | FetchRow | FetchVal | Execute
_STATEMENTS = (Fetch, FetchRow, FetchVal, Execute)


def _to_steps(value: Iterable[Statement]) -> tuple[Statement, ...]:
    steps = tuple(value)
    for index, step in enumerate(steps):
        if not isinstance(step, _STATEMENTS):
            raise TypeError(
                f"steps[{index}]: expected Fetch, FetchRow, FetchVal or Execute, got {step!r}"
            )
    return steps


@attrs.frozen
class Transaction:
    """Several statements in one transaction; the list of their results.

    Any error rolls the whole transaction back and is raised to the asker.
    The steps' own ``idempotent`` flags are not read: the transaction's count.

    Attributes:
        steps: ``Fetch``, ``FetchRow``, ``FetchVal`` or ``Execute`` messages,
            run in order on one connection.
        isolation: ``read_committed``, ``repeatable_read`` or
            ``serializable``; None: the server's default.
        readonly: a ``READ ONLY`` transaction (always safe to repeat).
        idempotent: repeating the whole transaction is harmless, so it may
            be retried even after its ``COMMIT`` was lost.
    """

    steps: tuple[Statement, ...] = attrs.field(converter=_to_steps)
    isolation: Literal["read_committed", "repeatable_read", "serializable"] | None = None
    readonly: bool = False
    idempotent: bool = False


# -- options -----------------------------------------------------------------


def _redact(dsn: str) -> str:
    """``dsn`` without its password or query string: ``postgresql://user@host:5432/db``."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return "<dsn>"  # a libpq keyword string: nothing in it is safe to show blindly
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    database = path.partition("?")[0]
    return f"{scheme}://{user}{at}{hosts}/{database}"


def _to_settings(value: dict[str, Any] | None) -> dict[str, str]:
    return {str(key): str(item) for key, item in (value or {}).items()}


def _optional_seconds(value: object) -> Seconds | None:
    return None if value is None else to_seconds(value)


@attrs.frozen
class PostgresOptions:
    """The ``postgres`` kind's own settings (beside the common resource fields).

    Attributes:
        dsn: ``postgresql://user:password@host:port/database?sslmode=...``;
            in YAML usually ``${DATABASE_URL}``. Never logged with its password.
        min_size: connections kept open even when idle. 0 (the default)
            connects on demand, so a server that is down when the system
            starts does not stop it; above 0 the pool opens them in
            ``on_start`` (which then fails if the server is down). Capped at
            the pool's size, ``max_concurrency``.
        connect_timeout: how long opening one connection may take; it also
            bounds the reset of a connection returned to the pool after a
            failed or cancelled request.
        acquire_timeout: how long a request may wait for a pool connection,
            connecting included; past it the attempt fails with a transient
            ``ResourceError``. None: only the request's ``timeout`` bounds it.
        idle_timeout: a connection idle this long is closed (0: never).
        statement_cache_size: prepared statements kept per connection; 0 for
            PgBouncer in transaction mode.
        server_settings: session settings sent at connect, such as
            ``statement_timeout``, ``search_path`` or ``application_name``
            (default ``runtime/<resource name>``).
        loop: where the pool's asyncio code runs: ``thread`` (the default),
            an asyncio loop of this resource's own in a worker thread
            (asyncpg's work runs in parallel with trio's, at the cost of two
            thread hand-offs per request); or ``shared``, the system's
            trio-asyncio loop in trio's own thread.
    """

    dsn: str = attrs.field(repr=_redact)
    min_size: int = attrs.field(default=0)
    connect_timeout: Seconds = attrs.field(default=Seconds(10.0), converter=to_seconds)
    acquire_timeout: Seconds | None = attrs.field(default=None, converter=_optional_seconds)
    idle_timeout: Seconds = attrs.field(default=Seconds(300.0), converter=to_seconds)
    statement_cache_size: int = attrs.field(default=100)
    server_settings: dict[str, str] = attrs.field(factory=dict, converter=_to_settings)
    loop: Literal["shared", "thread"] = attrs.field(
        default="thread", validator=attrs.validators.in_(("shared", "thread"))
    )

    @min_size.validator
    @statement_cache_size.validator
    def _check_count(self, attr: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a whole number of at least 0; got {value!r}")


# -- one request -------------------------------------------------------------


@attrs.define
class _Progress:
    """How far one attempt got: what decides whether repeating it is safe.

    ``phase`` is ``connecting`` (nothing sent), ``in_transaction`` (statements
    sent inside a transaction whose COMMIT was not) or ``sent`` (a statement
    or a COMMIT went to the server).
    """

    idempotent: bool
    phase: Literal["connecting", "in_transaction", "sent"] = "connecting"

    @property
    def repeatable(self) -> bool:
        return self.idempotent or self.phase != "sent"


_PROGRESS: contextvars.ContextVar[_Progress | None] = contextvars.ContextVar(
    "runtime_postgres_progress", default=None
)
"""The current request's last attempt, set for the duration of the request."""

_CONNECTION_ERRORS = (
    OSError,  # refused, reset, unreachable, DNS, TLS; the connect timeout too
    asyncpg.PostgresConnectionError,  # class 08, and asyncpg's "closed mid-operation"
    asyncpg.AdminShutdownError,  # pg_terminate_backend, fast shutdown
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.IdleSessionTimeoutError,
    asyncpg.TooManyConnectionsError,
)


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` is the connection's failure, not the statement's."""
    return isinstance(error, _CONNECTION_ERRORS)


@attrs.frozen
class _Limits:
    """What the asyncio side of a request needs to know about its resource."""

    path: str
    acquire_timeout: float | None
    connect_timeout: float


async def _fetch(con: Any, step: Fetch) -> list[Row]:
    return [dict(row) for row in await con.fetch(step.sql, *step.args)]


async def _fetch_row(con: Any, step: FetchRow) -> Row | None:
    row = await con.fetchrow(step.sql, *step.args)
    return None if row is None else dict(row)


async def _fetch_val(con: Any, step: FetchVal) -> Any:
    return await con.fetchval(step.sql, *step.args)


async def _execute(con: Any, step: Execute) -> str:
    return str(await con.execute(step.sql, *step.args))


_RUN: dict[type, Callable[[Any, Any], Awaitable[Any]]] = {
    Fetch: _fetch,
    FetchRow: _fetch_row,
    FetchVal: _fetch_val,
    Execute: _execute,
}


async def _transaction(con: Any, msg: Transaction, progress: _Progress) -> list[Any]:
    transaction = con.transaction(isolation=msg.isolation, readonly=msg.readonly)
    progress.phase = "in_transaction"
    await transaction.start()
    try:
        results = [await _RUN[type(step)](con, step) for step in msg.steps]
    except Exception:
        # A dead connection has no transaction left to roll back; the
        # release's reset rolls back whatever this could not.
        with contextlib.suppress(Exception):
            await transaction.rollback()
        raise
    progress.phase = "sent"
    await transaction.commit()
    return results


async def _acquire(pool: Any, limits: _Limits) -> Any:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        return await pool.acquire(timeout=limits.acquire_timeout)
    except TimeoutError as exc:
        waited = loop.time() - started
        if limits.acquire_timeout is not None and waited >= limits.acquire_timeout:
            in_use = pool.get_size() - pool.get_idle_size()
            message = (
                f"{limits.path}: no pool connection within acquire_timeout "
                f"{limits.acquire_timeout:g}s ({in_use} of {pool.get_max_size()} in use)"
            )
        else:
            message = (
                f"{limits.path}: could not connect within connect_timeout "
                f"{limits.connect_timeout:g}s"
            )
        raise ResourceError(message, resource=limits.path, transient=True) from exc


async def _serve(pool: Any, msg: Any, progress: _Progress, limits: _Limits) -> Any:
    """One attempt, on asyncio: acquire a connection, run ``msg``, release it.

    Cancellation (the attempt's timeout, the asker gone) interrupts the
    statement, which asyncpg then cancels on the server; the release is
    shielded, after a failure bounded by ``connect_timeout``, and a
    connection it cannot reset in time is closed.
    """
    con = await _acquire(pool, limits)
    answered = False
    try:
        if type(msg) is Transaction:
            result = await _transaction(con, msg, progress)
        else:
            progress.phase = "sent"
            result = await _RUN[type(msg)](con, msg)
    except _CONNECTION_ERRORS:
        # The server may have restarted: open fresh connections from now on.
        await pool.expire_connections()
        raise
    else:
        answered = True
        return result
    finally:
        # A failed reset has closed the connection; the pool opens another.
        # After an answer the connection is idle and its reset quick: no
        # timeout (one costs an asyncio task per request); after a failure
        # or a cancellation the reset may hang, and connect_timeout bounds it.
        with contextlib.suppress(Exception):
            await pool.release(con, timeout=None if answered else limits.connect_timeout)


_serve_from_trio = trio_asyncio.aio_as_trio(_serve)


_CANCELLED = object()
"""What a thread loop's call is woken with when its coroutine was cancelled."""


class LoopThread:
    """An asyncio loop of its own in a worker thread, called from trio.

    ``await run(fn, *args)`` schedules ``fn(*args)`` on the loop and parks
    the trio task until the loop's done callback wakes it (through trio's
    ``run_sync_soon``): no task, channel or cancel scope on trio's side.
    Cancelling the trio task cancels the coroutine and waits for it to end:
    if it ends cancelled, the trio task gets ``trio.Cancelled``; if it ends
    otherwise (it finished first), its outcome.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.SelectorEventLoop()  # not the policy's: trio-asyncio's refuses
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await fn(*args)`` on the thread's loop, from trio."""
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        future = asyncio.run_coroutine_threadsafe(_call(fn, args), self.loop)

        def done(finished: Any) -> None:
            if finished.cancelled():
                result: Any = outcome.Value(_CANCELLED)
            else:
                result = outcome.capture(finished.result)
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        def abort(_: Any) -> trio.lowlevel.Abort:
            future.cancel()
            return trio.lowlevel.Abort.FAILED  # the done callback wakes the task

        future.add_done_callback(done)
        result = await trio.lowlevel.wait_task_rescheduled(abort)
        if result is _CANCELLED:
            await trio.lowlevel.checkpoint()  # raises trio's Cancelled: we cancelled it
            raise RuntimeError("the asyncio loop thread is stopping: the call was cancelled")
        return result

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop's thread, without waiting."""
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Stop the loop: its thread cancels what runs there and closes it."""
        self.run_soon(self.loop.stop)


async def _call(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    # asyncpg's methods return awaitables that are not coroutines.
    return await fn(*args)


# -- the resource ------------------------------------------------------------


class Postgres(Resource):
    """A PostgreSQL database: an asyncpg pool of ``max_concurrency`` connections.

    Handles ``Fetch``, ``FetchRow``, ``FetchVal``, ``Execute`` and
    ``Transaction``. Each request is served concurrently with the others, up
    to ``max_concurrency``; the rest wait in the limiter in priority order.
    """

    Options: ClassVar[type] = PostgresOptions
    default_max_concurrency: ClassVar[int | None] = 10
    uses_asyncio: ClassVar[bool] = True

    options: PostgresOptions

    async def on_start(self) -> None:
        options = self.options
        size = self.spec.concurrency or 1
        self.server = _redact(options.dsn)
        self._limits = _Limits(
            path=self.ctx.path,
            acquire_timeout=options.acquire_timeout,
            connect_timeout=options.connect_timeout,
        )
        settings = dict(options.server_settings)
        if "application_name" not in settings and "application_name=" not in options.dsn:
            settings["application_name"] = f"runtime/{self.name}"
        create = functools.partial(
            asyncpg.create_pool,
            options.dsn,
            min_size=min(options.min_size, size),
            max_size=size,
            max_inactive_connection_lifetime=options.idle_timeout,
            timeout=options.connect_timeout,
            statement_cache_size=options.statement_cache_size,
            server_settings=settings,
        )
        self._thread: LoopThread | None = None
        if options.loop == "thread":
            self._thread = LoopThread(f"runtime {self.ctx.path}")
        try:
            if self._thread is None:
                self._pool: Any = await trio_asyncio.aio_as_trio(create)()
            else:
                self._pool = await self._thread.run(create)
        except BaseException as exc:
            if self._thread is not None:
                self._thread.stop()
            if isinstance(exc, _CONNECTION_ERRORS):
                raise ResourceError(
                    f"{self.ctx.path}: cannot open the pool to {self.server}: {exc}",
                    resource=self.name,
                    transient=True,
                ) from exc
            raise
        self.ctx.nursery.start_soon(self._terminate_at_exit, self._pool, self._thread)

    async def on_stop(self) -> None:
        """Close the pool gracefully within ``shutdown_timeout``, else abort
        its connections."""
        pool = self._pool
        with trio.move_on_after(self.spec.shutdown_timeout):
            if self._thread is None:
                await trio_asyncio.aio_as_trio(pool.close)()
            else:
                await self._thread.run(pool.close)
        _terminate(pool, self._thread)  # a no-op once closed

    @staticmethod
    async def _terminate_at_exit(pool: Any, thread: LoopThread | None) -> None:
        # Lives as long as the incarnation: a crash (which skips on_stop)
        # still closes every connection.
        try:
            await trio.sleep_forever()
        finally:
            _terminate(pool, thread)
            if thread is not None:
                thread.stop()

    # -- handlers ------------------------------------------------------------

    @handler
    async def fetch(self, msg: Fetch) -> list[Row]:
        result: list[Row] = await self._request(msg, msg.idempotent)
        return result

    @handler
    async def fetch_row(self, msg: FetchRow) -> Row | None:
        result: Row | None = await self._request(msg, msg.idempotent)
        return result

    @handler
    async def fetch_val(self, msg: FetchVal) -> Any:
        return await self._request(msg, msg.idempotent)

    @handler
    async def execute(self, msg: Execute) -> str:
        result: str = await self._request(msg, msg.idempotent)
        return result

    @handler
    async def transaction(self, msg: Transaction) -> list[Any]:
        result: list[Any] = await self._request(msg, msg.idempotent or msg.readonly)
        return result

    async def _request(self, msg: Any, idempotent: bool) -> Any:
        """Run ``msg`` under the limiter; connection failures explained."""
        # The request may run in its asker's task: its progress is undone after.
        token = _PROGRESS.set(None)
        try:
            return await self.call(self._attempt, msg, idempotent)
        except Exception as error:
            explained = self._explain(error, msg, _PROGRESS.get())
            if explained is None:
                raise
            raise explained from error
        finally:
            _PROGRESS.reset(token)

    async def _attempt(self, msg: Any, idempotent: bool) -> Any:
        progress = _Progress(idempotent)
        _PROGRESS.set(progress)  # read by is_transient and _explain, in this task
        if self._thread is not None:
            return await self._thread.run(_serve, self._pool, msg, progress, self._limits)
        return await _serve_from_trio(self._pool, msg, progress, self._limits)

    def is_transient(self, error: BaseException) -> bool:
        """Connection failures and timeouts (the server's failures, counted
        by the breaker); never SQL errors."""
        if isinstance(error, ResourceError):
            return error.transient
        return isinstance(error, TimeoutError) or is_connection_error(error)

    def should_retry(self, error: BaseException) -> bool:
        """Only an attempt that cannot apply a statement twice: nothing sent
        yet, a transaction whose COMMIT was not sent, or an idempotent one."""
        progress = _PROGRESS.get()
        return progress is None or progress.repeatable

    def _explain(self, error: Exception, msg: Any, progress: _Progress | None) -> Exception | None:
        """The error to give the asker instead of ``error``, or None to raise
        it as it is (annotated with where the attempt stopped)."""
        if progress is None:
            return None
        if isinstance(error, TimeoutError):
            error.add_note(
                f"{self.ctx.path}: {_TIMEOUT_NOTES[progress.phase, progress.repeatable]}"
            )
            return None
        if not is_connection_error(error):
            return None
        if progress.repeatable:
            return ResourceError(
                f"{self.ctx.path}: PostgreSQL at {self.server}: {error or type(error).__name__}",
                resource=self.name,
                transient=True,
            )
        sent = "COMMIT" if type(msg) is Transaction else "statement"
        return OutcomeUnknown(
            f"{self.ctx.path}: the connection to {self.server} was lost after the {sent} "
            f"was sent ({error or type(error).__name__}); it may or may not have "
            "taken effect, so it was not repeated",
            resource=self.name,
            transient=True,
        )

    def backend_statistics(self) -> dict[str, float]:
        """The pool: ``connections`` open, ``in_use``, ``idle`` and ``max_size``."""
        pool = getattr(self, "_pool", None)
        if pool is None:
            return {}
        size, idle = pool.get_size(), pool.get_idle_size()
        return {
            "connections": size,
            "in_use": size - idle,
            "idle": idle,
            "max_size": pool.get_max_size(),
        }


def _terminate(pool: Any, thread: LoopThread | None) -> None:
    """Abort the pool's connections, on the thread its loop runs in."""
    if thread is None:
        pool.terminate()
    else:
        thread.run_soon(pool.terminate)


_TIMEOUT_NOTES = {
    ("connecting", True): "it timed out waiting for a pool connection; nothing was sent",
    ("in_transaction", True): "it timed out inside the transaction, which was rolled back",
    ("sent", True): "it timed out after the statement was sent (idempotent, so retried)",
    ("sent", False): (
        "it timed out after the statement was sent: it may or may not have taken "
        "effect, so it was not repeated"
    ),
}
