"""The postgres resource kind against the real PostgreSQL server: messages
and results, the pool sized by max_concurrency, SQL errors against
connection failures, killed connections, and a server that goes away and
comes back (through a TCP proxy the test stops and starts)."""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

import runtime
from runtime import ResourceSpec, SupervisorSpec, Topology, open_system
from runtime.errors import CircuitOpen, ResourceError, TopologyError
from runtime.resources.postgres import (
    Execute,
    Fetch,
    FetchRow,
    FetchVal,
    OutcomeUnknown,
    Postgres,
    Transaction,
)
from tests.conftest import POSTGRES_URL

_SERVER = urllib.parse.urlsplit(POSTGRES_URL)


def _app() -> str:
    """A unique application_name: the test finds its own backends by it."""
    return f"rt-test-{uuid.uuid4().hex[:10]}"


LOOP = {"mode": "shared"}  # the pool's loop in this test: see the fixture below


@pytest.fixture(autouse=True, params=["shared", "thread"])
def pool_loop(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs with the pool on the system's trio-asyncio loop and
    on a loop of its own in a worker thread (the ``loop`` option)."""
    LOOP["mode"] = request.param
    yield request.param
    LOOP["mode"] = "shared"


def _topology(app: str, dsn: str = POSTGRES_URL, options: Any = None, **fields: Any) -> Topology:
    fields.setdefault("retry", {"attempts": 3, "initial": "10ms"})
    options = {"loop": LOOP["mode"], **(options or {})}
    return Topology(
        system="pg",
        resources={
            "db": ResourceSpec(
                kind="postgres",
                options={
                    "dsn": dsn,
                    "server_settings": {"application_name": app},
                    **(options or {}),
                },
                **fields,
            )
        },
        supervisor=SupervisorSpec(name="root"),
    )


class Admin:
    """A direct asyncpg connection, beside the resource, to watch and steer the server."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def val(self, sql: str, *args: Any) -> Any:
        return await trio_asyncio.aio_as_trio(self.connection.fetchval)(sql, *args)

    async def backends(self, app: str, where: str = "true") -> int:
        return int(
            await self.val(
                f"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND {where}",
                app,
            )
        )

    async def wait_for_backends(self, app: str, count: int, where: str) -> None:
        """Poll pg_stat_activity until ``count`` of ``app``'s backends match ``where``."""
        # The server has no event to wait on: poll it (each round is one query).
        while await self.backends(app, where) != count:  # noqa: ASYNC110
            await trio.sleep(0.01)


@contextlib.asynccontextmanager
async def admin() -> AsyncIterator[Admin]:
    connection = await trio_asyncio.aio_as_trio(asyncpg.connect)(POSTGRES_URL)
    try:
        yield Admin(connection)
    finally:
        await trio_asyncio.aio_as_trio(connection.close)()


@contextlib.asynccontextmanager
async def table(db: runtime.ActorRef[Any]) -> AsyncIterator[str]:
    """A fresh table ``(id int primary key, name text)``, dropped afterwards."""
    name = f"rt_test_{uuid.uuid4().hex[:10]}"
    await db.ask(Execute(f"CREATE TABLE {name} (id int PRIMARY KEY, name text NOT NULL)"))
    try:
        yield name
    finally:
        await db.ask(Execute(f"DROP TABLE {name}"))


class Proxy:
    """A TCP proxy on loopback in front of the PostgreSQL server. ``stop``
    closes its port and every connection through it; ``start`` opens the
    same port again."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.port = 0
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    @property
    def dsn(self) -> str:
        return POSTGRES_URL.replace(_SERVER.netloc.rpartition("@")[2], f"127.0.0.1:{self.port}")

    async def start(self) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self.scope, self.stopped = trio.CancelScope(), trio.Event()
        self.nursery.start_soon(self._serve, listeners, self.scope, self.stopped)

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()

    async def _serve(
        self, listeners: list[trio.SocketListener], scope: trio.CancelScope, stopped: trio.Event
    ) -> None:
        try:
            with scope:
                await trio.serve_listeners(self._relay, listeners)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            stopped.set()

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream(_SERVER.hostname, _SERVER.port or 5432) as up:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    async for data in source:
                        await sink.send_all(data)
                nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, up)
                nursery.start_soon(pump, up, client)


@pytest.mark.postgres
async def test_each_message_and_its_result() -> None:
    """Fetch gives dicts, FetchRow a dict or None, FetchVal a value, Execute
    the status, Transaction each step's result; on_stop closes the pool."""
    app = _app()
    with trio.fail_after(10):
        async with trio_asyncio.open_loop(), admin() as watch:
            async with open_system(_topology(app), store="memory://") as system:
                db = system.resource("db")
                async with table(db) as t:
                    insert = f"INSERT INTO {t} VALUES ($1, $2)"
                    assert await db.ask(Execute(insert, [1, "one"])) == "INSERT 0 1"
                    assert await db.ask(Execute(insert, (2, "two"))) == "INSERT 0 1"
                    assert await db.ask(Fetch(f"SELECT id, name FROM {t} ORDER BY id")) == [
                        {"id": 1, "name": "one"},
                        {"id": 2, "name": "two"},
                    ]
                    row = await db.ask(FetchRow(f"SELECT * FROM {t} WHERE id = $1", [2]))
                    assert row == {"id": 2, "name": "two"}
                    assert await db.ask(FetchRow(f"SELECT * FROM {t} WHERE id = 9")) is None
                    assert await db.ask(FetchVal(f"SELECT count(*) FROM {t}")) == 2
                    assert await db.ask(FetchVal(f"SELECT name FROM {t} WHERE id = 9")) is None
                    steps = [
                        Execute(f"UPDATE {t} SET name = upper(name)"),
                        Execute(insert, [3, "three"]),
                        FetchVal(f"SELECT count(*) FROM {t}"),
                        Fetch(f"SELECT name FROM {t} WHERE id < $1 ORDER BY id", [3]),
                        FetchRow(f"SELECT name FROM {t} WHERE id = 3"),
                    ]
                    assert await db.ask(Transaction(steps)) == [
                        "UPDATE 2",
                        "INSERT 0 1",
                        3,
                        [{"name": "ONE"}, {"name": "TWO"}],
                        {"name": "three"},
                    ]
                    count = FetchVal(f"SELECT count(*) FROM {t}")
                    readonly = Transaction([count], readonly=True, isolation="serializable")
                    assert await db.ask(readonly) == [3]
                    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                        await db.ask(Transaction([Execute(f"DELETE FROM {t}")], readonly=True))
                stats = system.resource_statistics()["db"]
                assert stats.backend["max_size"] == 10  # the kind's default max_concurrency
                assert stats.backend["in_use"] == 0
                assert stats.backend["idle"] == stats.backend["connections"] >= 1
                assert await watch.backends(app) == stats.backend["connections"]
            assert await watch.backends(app) == 0  # on_stop closed every connection


@pytest.mark.postgres
async def test_a_failing_transaction_rolls_back_and_raises_asyncpg_error() -> None:
    """A constraint violation in the third step: the first two are undone,
    the asker gets asyncpg's own exception, and nothing is retried."""
    with trio.fail_after(10):
        async with open_system(_topology(_app()), store="memory://") as system:
            db = system.resource("db")
            async with table(db) as t:
                await db.ask(Execute(f"INSERT INTO {t} VALUES (1, 'one')"))
                before = system.resource_statistics()["db"].limiter.admitted
                with pytest.raises(asyncpg.UniqueViolationError):
                    await db.ask(
                        Transaction(
                            [
                                Execute(f"UPDATE {t} SET name = 'changed'"),
                                Execute(f"INSERT INTO {t} VALUES (2, 'two')"),
                                Execute(f"INSERT INTO {t} VALUES (1, 'again')"),
                            ]
                        )
                    )
                assert system.resource_statistics()["db"].limiter.admitted == before + 1
                assert await db.ask(Fetch(f"SELECT * FROM {t}")) == [{"id": 1, "name": "one"}]


@pytest.mark.postgres
async def test_sql_errors_go_to_the_caller_and_leave_the_breaker_closed() -> None:
    """More SQL errors than the breaker's threshold: each asker gets
    asyncpg's exception, the breaker stays closed, the resource serves on."""
    with trio.fail_after(10):
        async with open_system(
            _topology(_app(), circuit_breaker={"failures": 2, "reset_timeout": "1m"}),
            store="memory://",
        ) as system:
            db = system.resource("db")
            for _ in range(3):
                with pytest.raises(asyncpg.PostgresSyntaxError):
                    await db.ask(Fetch("SELEC 1"))
                with pytest.raises(asyncpg.UndefinedTableError):
                    await db.ask(FetchVal("SELECT * FROM no_such_table"))
                with pytest.raises(asyncpg.DataError):  # a bad argument, caught client-side
                    await db.ask(FetchVal("SELECT $1::int", ["seven"]))
            assert await db.ask(FetchVal("SELECT 40 + $1::int", [2])) == 42
            stats = system.resource_statistics()["db"]
            assert stats.limiter.breaker == "closed"
            assert (stats.requests, stats.failures) == (10, 9)
            assert db.statistics().incarnation == 1


@pytest.mark.postgres
async def test_server_never_sees_more_than_max_concurrency() -> None:
    """20 agents each run a sleeping query through max_concurrency 4: the
    server shows at most 4 of the resource's backends active, and all 4 are used."""
    app = _app()
    seen: list[dict[str, Any]] = []
    query = FetchRow(
        "SELECT pg_backend_pid() AS pid, (SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = $1 AND state = 'active') AS active, pg_sleep(0.1) AS slept",
        [app],
    )
    with trio.fail_after(20):
        async with open_system(_topology(app, max_concurrency=4), store="memory://") as system:
            db = system.resource("db")

            async def agent() -> None:
                seen.append(await db.ask(query))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(agent)
            backend = system.resource_statistics()["db"].backend
    assert len(seen) == 20
    assert max(row["active"] for row in seen) == 4
    assert len({row["pid"] for row in seen}) == 4
    assert backend == {"connections": 4, "in_use": 0, "idle": 4, "max_size": 4}


@pytest.mark.postgres
async def test_killed_connections_fail_or_retry_and_the_pool_recovers() -> None:
    """pg_terminate_backend on every connection of the resource while four
    requests wait on a lock: a statement already sent fails with
    OutcomeUnknown (it is not repeated), an idempotent one and a transaction
    whose COMMIT was not sent are retried and succeed, and later requests
    succeed without a restart."""
    app = _app()
    # Advisory locks are server-wide, not per schema: a key of this run's own
    # keeps a concurrent run from queueing behind this test's lock.
    lock = secrets.randbelow(2**31)
    wait = f"SELECT pg_advisory_xact_lock_shared({lock})::text"
    outcomes: dict[str, object] = {}
    topology = _topology(app, max_concurrency=4)
    with trio.fail_after(20):
        async with (
            trio_asyncio.open_loop(),
            admin() as watch,
            open_system(topology, store="memory://") as system,
        ):
            db = system.resource("db")
            async with table(db) as t:

                async def ask(label: str, msg: Any) -> None:
                    try:
                        outcomes[label] = await db.ask(msg)
                    except Exception as exc:
                        outcomes[label] = exc

                await watch.val("SELECT pg_advisory_lock($1)", lock)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask, "plain", FetchVal(wait))
                    nursery.start_soon(ask, "write", Execute(f"INSERT INTO {t} SELECT 1, ({wait})"))
                    nursery.start_soon(ask, "idempotent", FetchVal(wait, idempotent=True))
                    tx = Transaction([Execute(f"INSERT INTO {t} VALUES (2, 'tx')"), FetchVal(wait)])
                    nursery.start_soon(ask, "transaction", tx)
                    await watch.wait_for_backends(app, 4, "wait_event_type = 'Lock'")
                    killed = await watch.val(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = $1",
                        app,
                    )
                    assert killed == 4
                    await watch.val("SELECT pg_advisory_unlock($1)", lock)
                assert isinstance(outcomes["plain"], OutcomeUnknown)
                assert isinstance(outcomes["write"], OutcomeUnknown)
                assert "may or may not have taken effect" in str(outcomes["write"])
                assert isinstance(
                    outcomes["write"].__cause__,
                    (asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError),
                )
                assert outcomes["idempotent"] == ""
                assert outcomes["transaction"] == ["INSERT 0 1", ""]
                # The killed write was rolled back by the server; the retried
                # transaction committed exactly once.
                assert await db.ask(Fetch(f"SELECT id FROM {t}")) == [{"id": 2}]
                for _ in range(8):
                    assert await db.ask(FetchVal("SELECT 1")) == 1
            assert system.resource_statistics()["db"].limiter.breaker == "closed"
            assert db.statistics().incarnation == 1


@pytest.mark.postgres
async def test_a_statement_past_the_timeout_is_cancelled_on_the_server() -> None:
    """The per-request timeout: the asker gets TimeoutError naming the
    resource and the limit, the statement is not repeated (it was sent), and
    the server stops running it."""
    app = _app()
    topology = _topology(app, timeout="300ms", max_concurrency=1)
    with trio.fail_after(10):
        async with (
            trio_asyncio.open_loop(),
            admin() as watch,
            open_system(topology, store="memory://") as system,
        ):
            db = system.resource("db")
            start = trio.current_time()
            with pytest.raises(TimeoutError, match=r"resources/db.*longer than 0.3s") as info:
                await db.ask(FetchVal("SELECT pg_sleep(5)"))
            assert trio.current_time() - start < 2
            assert any("not repeated" in note for note in info.value.__notes__)
            assert system.resource_statistics()["db"].limiter.admitted == 1
            assert await db.ask(FetchVal("SELECT 1")) == 1
            # The server-side cancel ends the sleep long before its 5 s.
            await watch.wait_for_backends(app, 0, "query LIKE '%pg_sleep(5)%'")


async def _blackhole(nursery: trio.Nursery) -> int:
    """A port that accepts connections and never answers."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    nursery.start_soon(trio.serve_listeners, hold, listeners)
    return int(listeners[0].socket.getsockname()[1])


async def test_a_wait_for_a_connection_past_acquire_timeout_is_a_clear_error() -> None:
    """A server that accepts and never answers: the wait for a pool
    connection ends at acquire_timeout (or connect_timeout) with a transient
    ResourceError naming the resource and the limit."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _blackhole(nursery)
            dsn = f"postgresql://postgres@127.0.0.1:{port}/test"
            for options, expected in [
                ({"acquire_timeout": "200ms"}, r"resources/db: no pool connection within "),
                ({"connect_timeout": 0.2}, r"resources/db: could not connect within connect_ti"),
            ]:
                async with open_system(
                    _topology(_app(), dsn, options, retry=None), store="memory://"
                ) as system:
                    with pytest.raises(ResourceError, match=expected) as info:
                        await system.resource("db").ask(FetchVal("SELECT 1"))
                    assert "0.2s" in str(info.value) and info.value.transient
            nursery.cancel_scope.cancel()


@pytest.mark.postgres
async def test_server_down_opens_the_breaker_and_recovery_is_automatic() -> None:
    """The server goes away (the proxy drops every connection and refuses
    new ones): callers get ResourceError, then CircuitOpen at once; once the
    server is back, the first request after reset_timeout succeeds and the
    same incarnation serves on with fresh connections."""
    reset = 0.3
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            proxy = Proxy(nursery)
            await proxy.start()
            topology = _topology(
                _app(),
                proxy.dsn,
                max_concurrency=3,
                retry={"attempts": 2, "initial": "10ms"},
                circuit_breaker={"failures": 3, "reset_timeout": reset},
            )
            async with open_system(topology, store="memory://") as system:
                db = system.resource("db")
                async with trio.open_nursery() as warm:  # three pooled connections
                    for _ in range(3):
                        warm.start_soon(db.ask, FetchVal("SELECT pg_sleep(0.05)"))
                assert system.resource_statistics()["db"].backend["connections"] == 3

                await proxy.stop()
                failures = 0
                while True:
                    start = trio.current_time()
                    try:
                        await db.ask(FetchVal("SELECT 1", idempotent=True))
                    except CircuitOpen:
                        assert trio.current_time() - start < 0.05  # fast: nothing tried
                        break
                    except ResourceError as exc:
                        assert exc.transient and "127.0.0.1" in str(exc)
                        failures += 1
                assert 1 <= failures <= 3
                assert system.resource_statistics()["db"].limiter.breaker == "open"

                await proxy.start()
                with pytest.raises(CircuitOpen):  # still open until reset_timeout
                    await db.ask(FetchVal("SELECT 1"))
                await trio.sleep(reset)
                assert await db.ask(FetchVal("SELECT 1")) == 1
                assert system.resource_statistics()["db"].limiter.breaker == "closed"
                assert await db.ask(FetchVal("SELECT 2")) == 2
                assert db.statistics().incarnation == 1
            await proxy.stop()


@pytest.mark.postgres
async def test_statements_in_flight_when_the_server_goes_away() -> None:
    """Requests running when every connection drops end promptly: a
    non-idempotent one with OutcomeUnknown, an idempotent one with a
    transient ResourceError after its retries; nothing hangs."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            proxy = Proxy(nursery)
            await proxy.start()
            topology = _topology(_app(), proxy.dsn, retry={"attempts": 2, "initial": "10ms"})
            async with open_system(topology, store="memory://") as system:
                db = system.resource("db")
                outcomes: list[BaseException] = []

                async def ask(msg: Any) -> None:
                    with pytest.raises(Exception) as info:
                        await db.ask(msg)
                    outcomes.append(info.value)

                async with trio.open_nursery() as asks:
                    asks.start_soon(ask, FetchVal("SELECT pg_sleep(10)"))
                    asks.start_soon(ask, FetchVal("SELECT pg_sleep(10)", idempotent=True))
                    # Both statements hold their connections (sent, or being sent).
                    while system.resource_statistics()["db"].backend.get("in_use") != 2:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    await proxy.stop()
                assert sorted(type(error).__name__ for error in outcomes) == [
                    "OutcomeUnknown",
                    "ResourceError",
                ]
                await proxy.start()
                assert await db.ask(FetchVal("SELECT 3")) == 3
            await proxy.stop()


YAML = """\
system: pg
resources:
  db:
    kind: postgres
    dsn: ${RT_TEST_DATABASE_URL}
    max_concurrency: 3
    timeout: 5s
    retry: {attempts: 2, initial: 10ms}
    circuit_breaker: {failures: 2, reset_timeout: 1s}
    min_size: 1
    connect_timeout: 2s
    acquire_timeout: 1500ms
    idle_timeout: 1m
    server_settings: {application_name: APP, statement_timeout: 100}
supervisor: {name: root}
"""


@pytest.mark.postgres
async def test_a_yaml_topology_with_kind_postgres_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kind: postgres`` with ``dsn: ${VAR}`` and the kind's options: parsed,
    the password never shown, min_size connections opened at start, and
    server_settings applied (statement_timeout's cancel is an SQL error)."""
    app = _app()
    address = _SERVER._replace(netloc=f"{_SERVER.username or 'postgres'}:s3cret@{_SERVER.hostname}")
    dsn = address._replace(netloc=f"{address.netloc}:{_SERVER.port or 5432}").geturl()
    monkeypatch.setenv("RT_TEST_DATABASE_URL", dsn)
    topology = runtime.parse_topology(YAML.replace("APP", app), "pg.yaml")
    spec = topology.resources["db"]
    assert spec.kind is Postgres and spec.concurrency == 3
    options = spec.options
    assert options.dsn == dsn and options.min_size == 1
    assert (options.connect_timeout, options.acquire_timeout, options.idle_timeout) == (2, 1.5, 60)
    assert options.server_settings == {"application_name": app, "statement_timeout": "100"}
    assert "s3cret" not in repr(topology)
    with trio.fail_after(10):
        async with (
            trio_asyncio.open_loop(),
            admin() as watch,
            open_system(topology, store="memory://") as system,
        ):
            assert await watch.backends(app) == 1  # min_size, opened by on_start
            db = system.resource("db")
            assert await db.ask(FetchVal("SHOW statement_timeout")) == "100ms"
            for _ in range(3):
                with pytest.raises(asyncpg.QueryCanceledError):
                    await db.ask(FetchVal("SELECT pg_sleep(1)"))
            assert system.resource_statistics()["db"].limiter.breaker == "closed"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{kind: postgres}", "pg.yaml:3: resources.db.dsn: required field is missing"),
        ("{kind: postgres, dsn: x, min_size: -1}", "resources.db.min_size: expected a whole"),
        ("{kind: postgres, dsn: x, acquire_timeout: soon}", "resources.db.acquire_timeout:"),
        ("{kind: postgres, dsn: x, pool: 3}", "resources.db.pool: unknown key 'pool'"),
    ],
    ids=["no-dsn", "negative-min-size", "bad-duration", "unknown-key"],
)
def test_bad_postgres_entries_name_line_and_field(entry: str, expected: str) -> None:
    text = f"system: pg\nresources:\n  db: {entry}\nsupervisor: {{name: root}}\n"
    with pytest.raises(TopologyError) as info:
        runtime.parse_topology(text, "pg.yaml")
    assert any(expected in error for error in info.value.errors), info.value.errors


def test_the_password_is_never_shown() -> None:
    """The options' repr, and so the topology's, drops the password and query."""
    spec = ResourceSpec(
        kind="postgres",
        options={"dsn": "postgresql://app:hunter2@db.internal:6432/orders?sslmode=require"},
    )
    assert "hunter2" not in repr(spec)
    assert "postgresql://app@db.internal:6432/orders" in repr(spec)
    keyword = ResourceSpec(kind="postgres", options={"dsn": "host=db password=hunter2"})
    assert "hunter2" not in repr(keyword)
