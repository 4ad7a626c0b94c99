"""Actors for the idleness and progress tests (tests/test_idle.py): each
leaves the system with a kind of work pending, or counts its items a way."""

from __future__ import annotations

import attrs
import trio

import runtime

# Paths whose on_stop ran, in order (the tests clear it).
STOPPED: list[str] = []


@attrs.frozen
class Work:
    """Start a task of ``seconds`` in ``ctx.nursery`` (``start``: with ``nursery.start``)."""

    seconds: float
    start: bool = False


@attrs.frozen
class Later:
    """Schedule a ``Ping`` in ``seconds``."""

    seconds: float


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Crash:
    pass


class Busy(runtime.Actor[None]):
    """Starts tasks in its nursery and timers on request; counts finished tasks."""

    def __init__(self, *, heartbeat: float = 0.0) -> None:
        self.heartbeat = float(heartbeat)
        self.finished = 0
        self.pings = 0

    async def on_start(self) -> None:
        if self.heartbeat:
            self.ctx.schedule_every(self.heartbeat, Ping())

    @runtime.handler
    async def work(self, msg: Work) -> None:
        if msg.start:
            await self.ctx.nursery.start(self._started_task, msg.seconds)
        else:
            self.ctx.nursery.start_soon(self._task, msg.seconds)

    async def _task(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.finished += 1

    async def _started_task(
        self, seconds: float, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started("running")
        await self._task(seconds)

    @runtime.handler
    async def later(self, msg: Later) -> None:
        self.ctx.schedule(msg.seconds, Ping())

    @runtime.handler
    async def ping(self, msg: Ping) -> None:
        self.pings += 1


class Counting(runtime.Actor[None]):
    """Declares ``total`` items in ``on_start``, ``done`` of them finished,
    with ``set_progress`` (or ``progress`` when ``additive``); Crash crashes it."""

    def __init__(self, *, total: int, done: int = 0, additive: bool = False) -> None:
        self.total = int(total)
        self.done = int(done)
        self.additive = bool(additive)

    async def on_start(self) -> None:
        if self.additive:
            self.ctx.progress(total=self.total, done=self.done)
        else:
            self.ctx.set_progress(total=self.total, done=self.done)

    @runtime.handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("crashed on request")

    async def on_stop(self) -> None:
        STOPPED.append(self.ctx.path)


class Forever(runtime.Actor[None]):
    """Runs a task that never returns in its nursery: never idle."""

    async def on_start(self) -> None:
        self.ctx.set_progress(total=10, done=4)
        self.ctx.nursery.start_soon(trio.sleep_forever)

    async def on_stop(self) -> None:
        STOPPED.append(self.ctx.path)


class Flaky(runtime.Actor[None]):
    """Crashes right after every start (it tells itself Crash)."""

    async def on_start(self) -> None:
        self.ctx.self_ref.tell_nowait(Crash())

    @runtime.handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError("crashed on start")


@attrs.frozen
class NoOptions:
    pass


class Connected(runtime.Resource):
    """A resource that keeps a connection task in its nursery for its whole life."""

    Options = NoOptions

    async def on_start(self) -> None:
        self.ctx.nursery.start_soon(trio.sleep_forever)

    @runtime.handler
    async def ping(self, msg: Ping) -> str:
        return "pong"
