"""Servers for tests: the shared NATS server, and private PostgreSQL and NATS
servers of one test's own (for tests that stop and start their server;
never the shared ones).

Tests on the shared servers isolate their state by name: ``unique(prefix)``
gives a bucket, subject or table prefix of this test's own, so two runs at
once never collide. A server that is not reachable skips the test, except in
CI (``RUNTIME_REQUIRE_SERVICES=1``), where it fails it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

NATS_URL = os.environ.get("RUNTIME_TEST_NATS_URL", "nats://127.0.0.1:4222")


def unique(prefix: str = "rt") -> str:
    """A name of this test's own: ``prefix``, the pid and random hex
    (letters, digits and ``_``: valid as a bucket, subject token or key)."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


def _missing(reason: str) -> None:
    if os.environ.get("RUNTIME_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _listening(url: str, default_port: int) -> bool:
    address = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection(
            (address.hostname or "127.0.0.1", address.port or default_port), timeout=2
        ):
            return True
    except OSError:
        return False


def require_nats() -> str:
    """The shared NATS server's URL; skips the test when it is down (fails it in CI)."""
    if not _listening(NATS_URL, 4222):
        _missing(
            f"NATS is not reachable at {NATS_URL}: start it with `nats-server -js` "
            "or set RUNTIME_TEST_NATS_URL"
        )
    return NATS_URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class PrivateNats:
    """A NATS server with JetStream of one test's own, on a port of its own."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (its JetStream data kept in ``root`` across restarts)."""
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the server keeps it)
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.root)],
            stdout=log,
            stderr=log,
        )
        log.close()
        _wait_listening(self.port, self.process, 20)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL), and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def private_nats() -> Iterator[PrivateNats]:
    """A started NATS server of this test's own, stopped and removed afterwards."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if binary is None:
        _missing("nats-server is not installed (Debian's nats-server package)")
    assert binary is not None
    root = Path(tempfile.mkdtemp(prefix="runtime-nats-"))
    server = PrivateNats(binary, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _pg_bin() -> Path | None:
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


class PrivatePostgres:
    """A PostgreSQL server of one test's own (initdb and pg_ctl in a temporary
    directory)."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.data = root / "data"
        self.port = free_port()
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

    def crash(self) -> None:
        """Stop at once, as a crash does: no shutdown checkpoint; the next
        start recovers from the WAL (and empties unlogged tables)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PostgreSQL server of this test's own, removed afterwards."""
    bindir = _pg_bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        _missing("PostgreSQL's initdb/pg_ctl are not installed")
    assert bindir is not None
    # Not under pytest's temporary directory: that one is private to its owner.
    root = Path(tempfile.mkdtemp(prefix="runtime-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(bindir, root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"]
        subprocess.run(_as_postgres(stop), check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
