"""Shared fixtures: quiet structlog (tests read events with capture_logs) and
the PostgreSQL server the store tests use (skipped when down, failed in CI)."""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
import trio.testing
import trio_asyncio

from runtime._checkpoint import CheckpointStore, open_store


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres"):
        require_postgres()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL test server")
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


POSTGRES_URL = os.environ.get(
    "RUNTIME_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def loopback_clock() -> trio.testing.MockClock:
    """Virtual time for tests that also talk over real loopback sockets (the
    fake LLM server). It jumps only after 1 ms of real idleness: with
    autojump_clock's threshold of 0 it may jump while a reply is still on
    its way through the kernel, and time out a request that was answered."""
    return trio.testing.MockClock(autojump_threshold=0.001)


def postgres_reachable() -> bool:
    """Whether the PostgreSQL server of POSTGRES_URL accepts connections."""
    address = urllib.parse.urlsplit(POSTGRES_URL)
    try:
        with socket.create_connection((address.hostname, address.port or 5432), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip the test when PostgreSQL is down; in CI (RUNTIME_REQUIRE_SERVICES=1) fail it."""
    if postgres_reachable():
        return
    reason = (
        f"PostgreSQL is not reachable at {POSTGRES_URL}: start it with "
        "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
        "or set RUNTIME_TEST_POSTGRES_URL"
    )
    if os.environ.get("RUNTIME_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def open_test_store(kind: str, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    """An empty store of ``kind`` (memory, sqlite or postgresql), closed afterwards.

    For PostgreSQL the rows of earlier tests are deleted first, and the
    trio-asyncio loop asyncpg needs stays open around the whole use.
    """
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'checkpoints.db'}"
    else:
        url = POSTGRES_URL
    async with contextlib.AsyncExitStack() as stack:
        if kind == "postgresql":
            await stack.enter_async_context(trio_asyncio.open_loop())
        store = open_store(url)
        try:
            for path in await store.paths():
                await store.delete(path)
            yield store
        finally:
            await store.aclose()
