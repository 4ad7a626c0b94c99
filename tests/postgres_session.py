"""The PostgreSQL test server, and this test session's own schema on it.

Test and benchmark runs share one server and one database (``test``). Each
session works in a schema of its own, ``rt_test_<pid>_<random>``, so two runs
at once never see each other's checkpoint rows or tables. ``URL`` selects it
through libpq's ``options=-csearch_path=<schema>`` query parameter: asyncpg
sends any query parameter it does not know as a server setting, so both the
checkpoint store and the postgres resource take the URL as it is.

The schema is created by the first test that needs the server
(``require()``) and dropped by ``drop()``, which both conftests call when the
session finishes, passed or failed. A run killed outright leaves its schema
behind; the next session to create one drops those older than a day.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import sys
import time
import urllib.parse

import asyncpg
import pytest

BASE_URL = os.environ.get("RUNTIME_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "rt_test_"
SCHEMA = f"{PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
STALE_AFTER = 24 * 3600.0  # no test session runs this long: its schema is a leftover
_COMMENT = re.compile(r"created-at (\d+)")
_SWEEP_LOCK = 7240412  # an advisory lock key of the test sessions' own


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``schema`` as its search path (kept beside any other options)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = [value for key, value in query if key == "options"]
    rest = [(key, value) for key, value in query if key != "options"]
    option = " ".join([*options, f"-csearch_path={schema}"])
    encoded = urllib.parse.urlencode([*rest, ("options", option)], quote_via=urllib.parse.quote)
    return parts._replace(query=encoded).geturl()


URL = with_search_path(BASE_URL, SCHEMA)
"""The server as this session's tests use it: every table in ``SCHEMA``."""

_created: set[str] = set()  # SCHEMA once made, until dropped


def reachable() -> bool:
    """Whether the server of BASE_URL accepts connections."""
    address = urllib.parse.urlsplit(BASE_URL)
    try:
        with socket.create_connection((address.hostname, address.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def require() -> None:
    """Skip the test when PostgreSQL is down (in CI, RUNTIME_REQUIRE_SERVICES=1,
    fail it); otherwise make sure this session's schema exists."""
    if not reachable():
        reason = (
            f"PostgreSQL is not reachable at {BASE_URL}: start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or set RUNTIME_TEST_POSTGRES_URL"
        )
        if os.environ.get("RUNTIME_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    if SCHEMA not in _created:
        asyncio.run(_create())
        _created.add(SCHEMA)


def drop() -> None:
    """Drop this session's schema and everything in it, if it was created.

    A failure is reported on stderr, not raised: the session's outcome stands,
    and a later session sweeps the schema once it is stale.
    """
    if SCHEMA not in _created:
        return
    _created.discard(SCHEMA)
    try:
        asyncio.run(_drop())
    except Exception as exc:
        print(f"could not drop the test schema {SCHEMA}: {exc!r}", file=sys.stderr)


async def schemas() -> list[str]:
    """The names of the test schemas on the server now (this session's included)."""
    connection = await asyncpg.connect(BASE_URL, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1) ORDER BY 1", PREFIX
        )
    finally:
        await connection.close()
    return [str(row["nspname"]) for row in rows]


async def sweep(connection: asyncpg.Connection, now: float) -> list[str]:
    """Drop the test schemas created more than STALE_AFTER before ``now``; their names."""
    stale = []
    async with connection.transaction():
        # One sweep at a time: two sessions starting together would otherwise
        # both try to drop the same schema, and one of them fail.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _SWEEP_LOCK)
        rows = await connection.fetch(
            "SELECT nspname, obj_description(oid, 'pg_namespace') AS comment "
            "FROM pg_namespace WHERE starts_with(nspname, $1)",
            PREFIX,
        )
        for row in rows:
            found = _COMMENT.search(row["comment"] or "")
            if found and now - int(found.group(1)) > STALE_AFTER:
                await connection.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
                stale.append(str(row["nspname"]))
    return stale


async def _create() -> None:
    connection = await asyncpg.connect(BASE_URL, timeout=10)
    try:
        await sweep(connection, time.time())
        await connection.execute(f'CREATE SCHEMA "{SCHEMA}"')
        note = f"runtime test session, created-at {int(time.time())} on {socket.gethostname()}"
        literal = note.replace("'", "''")
        await connection.execute(f"COMMENT ON SCHEMA \"{SCHEMA}\" IS '{literal}'")
    finally:
        await connection.close()


async def _drop() -> None:
    connection = await asyncpg.connect(BASE_URL, timeout=10)
    try:
        # A connection a test leaked may still hold a lock in the schema:
        # give up after a while rather than hang the end of the session.
        await connection.execute("SET lock_timeout = '10s'")
        await connection.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    finally:
        await connection.close()
