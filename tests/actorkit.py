"""Small actors and messages shared by the tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio

import runtime


@attrs.frozen
class Add:
    n: int


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Crash:
    reason: str = "boom"


@attrs.frozen
class Finish:
    """Makes the actor end normally (ctx.stop())."""


@attrs.frozen
class Hang:
    """A handler that never returns."""


@attrs.frozen
class Record:
    item: Any


@attrs.define
class Total:
    total: int = 0


class Counter(runtime.Actor[Total]):
    """Adds numbers; crashes or stops on request; optional start/stop journal."""

    def __init__(self, journal: list[str] | None = None) -> None:
        self.journal = journal

    async def on_start(self) -> None:
        if self.journal is not None:
            self.journal.append(f"start:{self.ctx.path.rsplit('/', 1)[-1]}")

    async def on_stop(self) -> None:
        if self.journal is not None:
            self.journal.append(f"stop:{self.ctx.path.rsplit('/', 1)[-1]}")

    @runtime.handler
    async def add(self, msg: Add) -> int:
        self.state.total += msg.n
        return self.state.total

    @runtime.handler
    async def get(self, msg: Get) -> int:
        return self.state.total

    @runtime.handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.reason)

    @runtime.handler
    async def finish(self, msg: Finish) -> None:
        self.ctx.stop()

    @runtime.handler
    async def hang(self, msg: Hang) -> None:
        await trio.sleep_forever()


class Recorder(runtime.Actor[None]):
    """Appends every Record it handles to ``seen``; Crash crashes it."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    @runtime.handler
    async def record(self, msg: Record) -> None:
        self.seen.append(msg.item)

    @runtime.handler
    async def crash(self, msg: Crash) -> None:
        raise RuntimeError(msg.reason)

    @runtime.handler
    async def get(self, msg: Get) -> list[Any]:
        return list(self.seen)


def child(name: str, actor: type = Counter, **fields: Any) -> runtime.ChildSpec:
    return runtime.ChildSpec(name=name, actor=actor, **fields)


def topology(*children: Any, **supervisor: Any) -> runtime.Topology:
    return runtime.Topology(
        supervisor=runtime.SupervisorSpec(name="root", children=list(children), **supervisor)
    )


def incarnations(system: runtime.ActorSystem, *names: str) -> list[int]:
    return [system.ref(f"root/{n}").statistics().incarnation for n in names]
