"""Correlation ids: a new one at the edge, inherited along tell and ask
chains, in every log line a handler writes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import structlog
import trio
import trio.testing
from structlog.testing import LogCapture

import runtime
from runtime import ChildSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from tests.resource_kinds import Backend, Echo, Ping

log = structlog.get_logger("app")


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    """Log events with runtime.add_correlation_id, captured."""
    capture = LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[runtime.add_correlation_id, capture])
    try:
        yield capture
    finally:
        structlog.configure(**old)


@attrs.frozen
class Start:
    label: str


@attrs.frozen
class Relay:
    label: str


@attrs.frozen
class Question:
    label: str


class First(runtime.Actor[None]):
    @runtime.handler
    async def start(self, msg: Start) -> None:
        log.info("first", label=msg.label)
        await self.ctx.ref("root/second").tell(Relay(msg.label))


class Second(runtime.Actor[None]):
    @runtime.handler
    async def relay(self, msg: Relay) -> None:
        log.info("second", label=msg.label)
        answer = await self.ctx.ref("root/third").ask(Question(msg.label))
        log.info("answered", label=msg.label, answer=answer)


class Third(runtime.Actor[None]):
    @runtime.handler
    async def question(self, msg: Question) -> str | None:
        log.info("third", label=msg.label)
        return runtime.correlation_id()


class Parallel(runtime.Actor[None]):
    @runtime.handler
    async def question(self, msg: Question) -> str | None:
        await trio.sleep(0.01)
        log.info("parallel", label=msg.label)
        return runtime.correlation_id()


class UsesResource(runtime.Actor[None]):
    @runtime.handler
    async def question(self, msg: Question) -> Any:
        log.info("agent", label=msg.label)
        return await self.ctx.resource("echo").ask(Ping(msg.label))


def _events(capture: LogCapture, event: str) -> dict[str, str]:
    """label -> correlation_id of the events named ``event``."""
    return {
        entry["label"]: str(entry["correlation_id"])
        for entry in capture.entries
        if entry["event"] == event
    }


async def test_a_chain_of_tells_and_asks_shares_one_id(captured: LogCapture) -> None:
    """Each message from outside starts a chain; the tells and asks its
    handlers send carry it; every log line of the chain has it."""
    topology = Topology(
        supervisor=SupervisorSpec(
            name="root",
            children=[
                ChildSpec(name="first", actor=First),
                ChildSpec(name="second", actor=Second),
                ChildSpec(name="third", actor=Third),
            ],
        )
    )
    assert runtime.correlation_id() is None
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            await system.ref("root/first").tell(Start("a"))
            await system.ref("root/first").tell(Start("b"))
            await system.wait_until_idle()
            direct = await system.ref("root/third").ask(Question("c"))
    ids = {}
    for event in ("first", "second", "third", "answered"):
        for label, correlation in _events(captured, event).items():
            ids.setdefault(label, set()).add(correlation)
    assert len(ids["a"]) == len(ids["b"]) == 1
    assert ids["a"] != ids["b"]
    assert ids["c"] == {direct}  # an ask from outside starts its own chain
    assert direct is not None and direct not in ids["a"] | ids["b"]
    answered = {entry["answer"] for entry in captured.entries if entry["event"] == "answered"}
    assert answered == ids["a"] | ids["b"]  # the asker's id reached the handler asked


async def test_concurrent_messages_keep_their_own_ids(
    captured: LogCapture, autojump_clock: trio.abc.Clock
) -> None:
    """Under concurrency > 1 each message is handled in its own task with its
    own id, even when the handlers interleave."""
    topology = Topology(
        supervisor=SupervisorSpec(
            name="root", children=[ChildSpec(name="p", actor=Parallel, concurrency=4)]
        )
    )
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            ref = system.ref("root/p")
            answers: dict[str, str | None] = {}

            async def ask(label: str) -> None:
                answers[label] = await ref.ask(Question(label))

            async with trio.open_nursery() as nursery:
                for label in "wxyz":
                    nursery.start_soon(ask, label)
    logged = _events(captured, "parallel")
    assert logged == answers
    assert len(set(answers.values())) == 4


class WhichChain(runtime.Resource):
    """A resource that answers with the correlation id it serves under."""

    @runtime.handler
    async def question(self, msg: Question) -> str | None:
        log.info("resource", label=msg.label)
        return runtime.correlation_id()


class AsksResource(runtime.Actor[None]):
    @runtime.handler
    async def question(self, msg: Question) -> tuple[str | None, str | None]:
        mine = runtime.correlation_id()
        return mine, await self.ctx.resource("chain").ask(msg)


async def test_a_resource_request_keeps_the_askers_id(captured: LogCapture) -> None:
    """A resource serves an ask in the asker's task, under the asker's id."""
    topology = Topology(
        resources={"chain": ResourceSpec(kind=WhichChain)},
        supervisor=SupervisorSpec(name="root", children=[ChildSpec(name="a", actor=AsksResource)]),
    )
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            mine, served = await system.ref("root/a").ask(Question("r"))
    assert mine is not None and served == mine
    assert _events(captured, "resource") == {"r": mine}


async def test_uses_resource_example_still_works() -> None:
    """The agent of the tracing tests, with the Echo resource."""
    topology = Topology(
        resources={"echo": ResourceSpec(kind=Echo, options={"backend": Backend()})},
        supervisor=SupervisorSpec(name="root", children=[ChildSpec(name="u", actor=UsesResource)]),
    )
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            assert await system.ref("root/u").ask(Question("r")) == "r"
