"""Test sessions on the shared PostgreSQL server do not collide: each works
in a schema of its own, dropped when the session ends (passed or failed).

Each test runs whole pytest sessions of tests/postgres_isolation_probe.py as
subprocesses, so it is a few seconds of real time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio

from tests import postgres_session

REPO = Path(__file__).resolve().parent.parent
PROBE = "tests/postgres_isolation_probe.py"


class Probe:
    """One pytest session of the probe, its stdin and stdout piped."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = b""

    @classmethod
    async def start(cls, name: str, *, fail: bool = False) -> Probe:
        env = {**os.environ, "RT_PROBE_NAME": name, "RT_PROBE_FAIL": "1" if fail else "0"}
        command = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", PROBE]
        return cls(
            await trio.lowlevel.open_process(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )

    async def schema(self) -> str:
        """The schema the session printed once its row was saved."""
        assert self.process.stdout is not None
        while b"saved " not in self.output:
            chunk = await self.process.stdout.receive_some()
            assert chunk, f"the probe exited early:\n{self.output.decode()}"
            self.output += chunk
        return self.output.split(b"saved ", 1)[1].split()[0].decode()

    async def finish(self) -> tuple[int, str]:
        """Let the session go on; its exit status and whole output."""
        assert self.process.stdin is not None and self.process.stdout is not None
        await self.process.stdin.send_all(b"go\n")
        async for chunk in self.process.stdout:
            self.output += chunk
        return await self.process.wait(), self.output.decode()


async def _run(*probes: tuple[str, bool]) -> list[tuple[str, int, str]]:
    """Start the probes at once; once every one has saved its row, let all go on."""
    started = [await Probe.start(name, fail=fail) for name, fail in probes]
    try:
        schemas = [await probe.schema() for probe in started]
        finished = [await probe.finish() for probe in started]
    finally:
        for probe in started:
            probe.process.kill()
            await probe.process.wait()
    return [(schema, *result) for schema, result in zip(schemas, finished, strict=True)]


async def _existing() -> list[str]:
    return await trio_asyncio.aio_as_trio(postgres_session.schemas)()


@pytest.mark.postgres
async def test_two_sessions_at_once_each_see_only_their_own_rows() -> None:
    """Two pytest sessions each write a checkpoint row, then, once both rows
    are written, each finds only its own: two distinct schemas, both gone
    when the sessions end."""
    with trio.fail_after(60):
        (first, status_a, out_a), (second, status_b, out_b) = await _run(("a", False), ("b", False))
        assert (status_a, status_b) == (0, 0), out_a + out_b
        assert "1 passed" in out_a and "1 passed" in out_b
        assert first != second
        assert first.startswith(postgres_session.PREFIX)
        async with trio_asyncio.open_loop():
            left = await _existing()
        assert first not in left and second not in left


@pytest.mark.postgres
async def test_a_failed_session_drops_its_schema_too() -> None:
    """A session whose test fails still drops its schema at the end."""
    with trio.fail_after(60):
        [(schema, status, output)] = await _run(("f", True))
        assert status == 1, output
        assert "a deliberate failure" in output
        async with trio_asyncio.open_loop():
            assert schema not in await _existing()


@pytest.mark.postgres
async def test_schemas_left_by_killed_sessions_are_swept_once_stale() -> None:
    """A schema whose session never dropped it (killed outright) is dropped
    by a later session once older than STALE_AFTER; a recent one is kept."""
    stale = f"{postgres_session.PREFIX}0_stale{os.getpid()}"
    recent = f"{postgres_session.PREFIX}0_recent{os.getpid()}"
    now = time.time()
    with trio.fail_after(30):
        async with trio_asyncio.open_loop():
            connect = trio_asyncio.aio_as_trio(asyncpg.connect)
            connection = await connect(postgres_session.BASE_URL)
            run = trio_asyncio.aio_as_trio(connection.execute)
            try:
                for name, age in ((stale, postgres_session.STALE_AFTER + 60), (recent, 60)):
                    await run(f'CREATE SCHEMA "{name}"')
                    await run(f'CREATE TABLE "{name}".t (id int)')
                    await run(f"COMMENT ON SCHEMA \"{name}\" IS 'created-at {int(now - age)}'")
                swept = await trio_asyncio.aio_as_trio(postgres_session.sweep)(connection, now)
                assert recent not in swept  # (a concurrent session may sweep stale first)
                left = await _existing()
                assert stale not in left and recent in left
            finally:
                await run(f'DROP SCHEMA IF EXISTS "{recent}" CASCADE')
                await run(f'DROP SCHEMA IF EXISTS "{stale}" CASCADE')
                await trio_asyncio.aio_as_trio(connection.close)()
