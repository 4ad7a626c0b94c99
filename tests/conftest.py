"""Shared fixtures: quiet structlog (tests read events with capture_logs) and
the PostgreSQL server the store tests use (skipped when down, failed in CI),
in a schema of this session's own (see tests/postgres_session.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
import trio.testing
import trio_asyncio

from runtime._checkpoint import CheckpointStore, open_store
from tests import postgres_session
from tests.browserkit import require_browser
from tests.servers import private_nats, private_postgres, require_nats  # noqa: F401 (fixtures for every test)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("postgres"):
        require_postgres()
    if item.get_closest_marker("nats"):
        require_nats()
    if item.get_closest_marker("browser"):
        require_browser()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL test server")
    config.addinivalue_line("markers", "nats: needs the NATS (JetStream) test server")
    config.addinivalue_line(
        "markers",
        "browser: drives a real headless Chromium (skip locally with -m 'not browser')",
    )
    config.addinivalue_line(
        "markers",
        "multiprocess: runs several OS processes (skip locally with -m 'not multiprocess')",
    )
    structlog.configure(
        processors=[structlog.processors.add_log_level],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    postgres_session.drop()


POSTGRES_URL = postgres_session.URL
"""RUNTIME_TEST_POSTGRES_URL (default: database ``test`` on 127.0.0.1:5432),
with this session's schema as its search path."""


@pytest.fixture
def loopback_clock() -> trio.testing.MockClock:
    """Virtual time for tests that also talk over real loopback sockets (the
    fake LLM server). It jumps only after 1 ms of real idleness: with
    autojump_clock's threshold of 0 it may jump while a reply is still on
    its way through the kernel, and time out a request that was answered."""
    return trio.testing.MockClock(autojump_threshold=0.001)


def require_postgres() -> None:
    """Skip the test when PostgreSQL is down; in CI (RUNTIME_REQUIRE_SERVICES=1) fail it.
    When it is up, this session's schema is created on first use."""
    postgres_session.require()


@contextlib.asynccontextmanager
async def open_test_store(kind: str, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    """An empty store of ``kind`` (memory, sqlite or postgresql), closed afterwards.

    For PostgreSQL, in this session's schema, the rows of earlier tests of
    the session are deleted first, and the trio-asyncio loop asyncpg needs
    stays open around the whole use.
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
