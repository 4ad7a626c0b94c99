"""A real PostgreSQL outage: a private server (initdb and pg_ctl in a
temporary directory, never the shared one) is stopped under a checkpointed
actor and started again; the reply waits, the write lands, nothing restarts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trio

import runtime
from tests.actorkit import Add, Get, child, topology


def _bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateServer:
    """A PostgreSQL server of this test's own."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.data = root / "data"
        self.port = _free_port()
        self.root = root
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bindir / args[0]), *args[1:]]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    bindir = _bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        reason = "PostgreSQL's initdb/pg_ctl are not installed"
        if os.environ.get("RUNTIME_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    # Not under pytest's temporary directory: that one is private to its owner.
    root = Path(tempfile.mkdtemp(prefix="runtime-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivateServer(bindir, root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"]
        subprocess.run(_as_postgres(stop), check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
async def test_a_write_during_a_postgres_restart_waits_and_lands(
    private_postgres: PrivateServer,
) -> None:
    """Stop the server under an actor: its next ask is held while the write
    is retried, and answered once the server is back; no restart, no loss."""
    spec = topology(child("c", checkpoint="message"))
    with structlog.testing.capture_logs() as logs, trio.fail_after(60):
        async with runtime.open_system(spec, store=private_postgres.url) as system:
            ref = system.ref("root/c")
            assert await ref.ask(Add(1)) == 1
            await trio.to_thread.run_sync(private_postgres.stop)
            async with trio.open_nursery() as nursery:
                answers: list[int] = []

                async def ask() -> None:
                    answers.append(await ref.ask(Add(1), timeout=25))

                nursery.start_soon(ask)
                # The server is down: poll (real time, a real server) for the first retry.
                waiting = "checkpoint_write_waiting_for_store"
                while not any(event["event"] == waiting for event in logs):  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert answers == []  # held while the store is down
                await trio.to_thread.run_sync(private_postgres.start)
            assert answers == [2]
            assert await ref.ask(Get()) == 2
            assert ref.statistics().restarts == 0
