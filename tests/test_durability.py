"""Process death: SIGKILL a system mid-run; every acknowledged update survives."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import trio

from tests.conftest import POSTGRES_URL, open_test_store

REPO = Path(__file__).resolve().parent.parent
ACTORS = 8
DEADLINE = 60.0


def _start(mode: str, store: str, actors: int = ACTORS) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.durability_app", mode, store, str(actors)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def _lines_until(process: subprocess.Popen[bytes], acks: int) -> list[str]:
    """Read the child's lines until it has acknowledged ``acks`` updates."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + DEADLINE
    buffer, lines, seen = b"", [], 0
    while seen < acks:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the system acknowledged only {seen} updates in {DEADLINE}s"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, (
            f"the system exited: {process.stderr.read().decode() if process.stderr else ''}"
        )
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            line = raw.decode()
            lines.append(line)
            seen += line.startswith("acked ")
    return lines


def _drain(process: subprocess.Popen[bytes]) -> list[str]:
    """What the killed child had written to the pipe before it died."""
    assert process.stdout is not None
    rest = process.stdout.read()
    return [line for line in rest.decode().split("\n") if line]


def _killed_after(process: subprocess.Popen[bytes], acks: int) -> list[str]:
    """The child's lines once it has acknowledged ``acks`` updates and been
    killed with SIGKILL (what it wrote before dying included)."""
    try:
        lines = _lines_until(process, acks)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE)
        lines += _drain(process)
    finally:
        process.kill()
        process.wait()
    return lines


def _sent_and_acked(lines: list[str]) -> tuple[Counter[str], dict[str, int]]:
    """Per actor: the asks sent, and the highest total acknowledged."""
    sent = Counter(line.split()[1] for line in lines if line.startswith("sent "))
    acked: dict[str, int] = {}
    for line in lines:
        if line.startswith("acked "):
            _, path, total = line.split()
            acked[path] = max(acked.get(path, 0), int(total))
    return sent, acked


async def _clear(kind: str, tmp_path: Path) -> None:
    async with open_test_store(kind, tmp_path):
        pass  # opening a test store empties it


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_acknowledged_updates_survive_sigkill(kind: str, tmp_path: Path) -> None:
    """Several times: run, SIGKILL at a random point, restart; for every actor
    acknowledged <= restored <= sent, counted across all the runs."""
    store = f"sqlite:///{tmp_path / 'checkpoints.db'}" if kind == "sqlite" else POSTGRES_URL
    trio.run(_clear, kind, tmp_path)
    rng = random.Random(20261122)
    restored = dict.fromkeys((f"root/c{i}" for i in range(ACTORS)), 0)
    for _ in range(4):
        lines = _killed_after(_start("run", store), rng.randrange(20, 400))
        sent, acked = _sent_and_acked(lines)
        reader = subprocess.run(
            [sys.executable, "-m", "tests.durability_app", "read", store, str(ACTORS)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=True,
        )
        now = {line.split()[1]: int(line.split()[2]) for line in reader.stdout.splitlines()}
        for path, before in restored.items():
            assert acked.get(path, before) <= now[path] <= before + sent[path], (
                path,
                before,
                acked.get(path),
                now[path],
                sent[path],
            )
        assert sum(now.values()) > sum(restored.values())  # the run made progress
        restored = now


BURST_ACTORS = 50


def _read(store: str, actors: int) -> dict[str, tuple[int, int]]:
    """``(total, version)`` of every actor, read back by a new process."""
    reader = subprocess.run(
        [sys.executable, "-m", "tests.durability_app", "read", store, str(actors)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    found = {}
    for line in reader.stdout.splitlines():
        _, path, total, version = line.split()
        found[path] = (int(total), int(version))
    return found


@pytest.mark.multiprocess
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkill_during_group_commits(kind: str, tmp_path: Path) -> None:
    """50 actors asked at once, so that their writes are group-committed;
    SIGKILL at a random point, several times. No reply was released before
    its write committed (acknowledged <= restored <= sent), and no batch is
    partly visible: every batch sent is in the store whole or not at all."""
    store = f"sqlite:///{tmp_path / 'checkpoints.db'}" if kind == "sqlite" else POSTGRES_URL
    trio.run(_clear, kind, tmp_path)
    rng = random.Random(20261123)
    restored = dict.fromkeys((f"root/c{i}" for i in range(BURST_ACTORS)), 0)
    largest = 0
    for _ in range(3):
        lines = _killed_after(_start("burst", store, BURST_ACTORS), rng.randrange(200, 3000))
        now = _read(store, BURST_ACTORS)
        sent, acked = _sent_and_acked(lines)
        for path, before in restored.items():
            assert acked.get(path, before) <= now[path][0] <= before + sent[path], (
                path,
                before,
                acked.get(path),
                now[path],
                sent[path],
            )
        batches = [
            [(row.rsplit(":", 1)[0], int(row.rsplit(":", 1)[1])) for row in line.split()[1:]]
            for line in lines
            if line.startswith("batch ")
        ]
        for batch in batches:
            written = [now[path][1] > version for path, version in batch]
            assert all(written) or not any(written), ("a batch is partly visible", batch, now)
        largest = max([largest, *map(len, batches)])
        assert sum(total for total, _ in now.values()) > sum(restored.values())
        restored = {path: total for path, (total, _) in now.items()}
    assert largest > 1  # the writes were group-committed
