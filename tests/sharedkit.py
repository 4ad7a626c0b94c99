"""Running the processes of a shared-limit test: each a ``tests.shared_worker``
with a system of the same name, started together, told to go together,
their reports and log events read back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import Any

import attrs
import trio

from runtime._fake_llm import most_in_window
from tests.clikit import REPO, SOURCE

__all__ = ["Worker", "Workers", "most_in_window"]


@attrs.define
class Worker:
    """One worker process, and what it reported."""

    tag: str
    process: trio.Process
    report: dict[str, Any] | None = None
    events: list[dict[str, Any]] = attrs.Factory(list)
    _stdout: bytes = b""
    _stderr: bytes = b""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in self.events if entry.get("event") == event]


async def _read_all(stream: Any) -> bytes:
    chunks = []
    while chunk := await stream.receive_some():
        chunks.append(chunk)
    return b"".join(chunks)


class Workers:
    """Start workers with ``start(config, ...)``; ``go()`` once all are ready,
    ``finish()`` to wait for their reports."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.workers: list[Worker] = []
        self._done: list[trio.Event] = []

    async def start(self, config: dict[str, Any]) -> Worker:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([SOURCE, str(REPO)])}
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.shared_worker", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        worker = Worker(config["tag"], process)
        self.workers.append(worker)
        ready = trio.Event()
        done = trio.Event()
        self._done.append(done)
        self.nursery.start_soon(self._watch, worker, ready, done)
        with trio.fail_after(60):
            await ready.wait()
        return worker

    async def _watch(self, worker: Worker, ready: trio.Event, done: trio.Event) -> None:
        process = worker.process
        assert process.stdout is not None and process.stderr is not None

        async def errors() -> None:
            assert process.stderr is not None
            worker._stderr = await _read_all(process.stderr)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(errors)
            buffer = b""
            while chunk := await process.stdout.receive_some():
                buffer += chunk
                if b"ready\n" in buffer:
                    ready.set()
            worker._stdout = buffer
        await process.wait()
        ready.set()
        lines = buffer.decode().splitlines()
        if lines and lines[-1].startswith("{"):
            worker.report = json.loads(lines[-1])
        for line in worker._stderr.decode().splitlines():
            with contextlib.suppress(ValueError):  # not an event: a traceback line
                worker.events.append(json.loads(line))
        done.set()

    async def go(self, *workers: Worker) -> None:
        for worker in workers or self.workers:
            assert worker.process.stdin is not None
            await worker.process.stdin.send_all(b"go\n")

    async def finish(self) -> None:
        """Wait for every worker to end (within a minute)."""
        with trio.fail_after(60):
            for done in self._done:
                await done.wait()
        for worker in self.workers:
            if worker.process.returncode not in (0, -signal.SIGKILL):
                raise AssertionError(
                    f"worker {worker.tag} exited with {worker.process.returncode}:\n"
                    f"{worker._stderr.decode()[-3000:]}"
                )

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.process.returncode is None:
                worker.kill()
