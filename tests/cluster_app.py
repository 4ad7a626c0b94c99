"""Actors for the cluster tests (tests/test_cluster.py): each records which
node handled what, in checkpointed state."""

from __future__ import annotations

import contextlib
import os
import secrets

import attrs
import trio

import runtime


@attrs.frozen
class Add:
    n: int
    key: str = ""


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Where:
    pass


@attrs.frozen
class Boom:
    text: str


@attrs.frozen
class Slow:
    seconds: float


@attrs.frozen
class Tick:
    pass


@attrs.frozen
class Snapshot:
    total: int
    applied: list[str]
    starts: int
    node: str
    ticks: int
    instance: str
    writers: list[str]


@attrs.frozen
class Chain:
    """Name the correlation id and trace id this message was handled under;
    with ``via`` set, ask the actor at that path the same first."""

    via: str = ""


@attrs.frozen
class Seen:
    node: str
    correlation: str | None
    trace_id: str
    hops: list[Seen] = attrs.field(factory=list)


@attrs.define
class CounterState:
    total: int = 0
    applied: list[str] = attrs.field(factory=list)
    starts: int = 0
    ticks: int = 0
    last_writer: str = ""
    writers: list[str] = attrs.field(factory=list)  # each instance that wrote, in order


def node_name() -> str:
    return os.environ.get("RUNTIME_TEST_NODE", str(os.getpid()))


class Counter(runtime.Actor[CounterState]):
    """Sums ``Add``; ``Where`` names its node; ``Boom`` raises; with
    ``tick`` set, writes its state every ``tick`` seconds."""

    def __init__(self, tick: float = 0.0) -> None:
        super().__init__()
        self.tick = tick
        self.instance = f"{node_name()}-{os.getpid()}-{secrets.token_hex(3)}"

    def wrote(self) -> None:
        self.state.last_writer = node_name()
        if not self.state.writers or self.state.writers[-1] != self.instance:
            self.state.writers.append(self.instance)

    async def on_start(self) -> None:
        self.state.starts += 1
        self.wrote()
        with contextlib.suppress(runtime.errors.StateError):  # checkpoint: off
            await self.ctx.checkpoint()
        if self.tick:
            self.ctx.schedule_every(self.tick, Tick())

    @runtime.handler
    async def add(self, msg: Add) -> None:
        self.state.total += msg.n
        if msg.key:
            self.state.applied.append(msg.key)
        self.wrote()

    @runtime.handler
    async def get(self, msg: Get) -> Snapshot:
        return Snapshot(
            self.state.total,
            list(self.state.applied),
            self.state.starts,
            node_name(),
            self.state.ticks,
            self.instance,
            list(self.state.writers),
        )

    @runtime.handler
    async def chain(self, msg: Chain) -> Seen:
        from opentelemetry import trace

        hops = [await self.ctx.ref(msg.via).ask(Chain(), timeout=10)] if msg.via else []
        trace_id = trace.get_current_span().get_span_context().trace_id
        return Seen(node_name(), runtime.correlation_id(), f"{trace_id:032x}", hops)

    @runtime.handler
    async def where(self, msg: Where) -> str:
        return node_name()

    @runtime.handler
    async def boom(self, msg: Boom) -> None:
        raise ValueError(msg.text)

    @runtime.handler
    async def slow(self, msg: Slow) -> str:
        await trio.sleep(msg.seconds)
        return "done"

    @runtime.handler
    async def on_tick(self, msg: Tick) -> None:
        self.state.ticks += 1
        self.wrote()


@attrs.frozen
class News:
    text: str


@attrs.frozen
class Announce:
    text: str


@attrs.frozen
class Heard:
    pass


@attrs.define
class ListenerState:
    heard: list[str] = attrs.field(factory=list)


class Listener(runtime.Actor[ListenerState]):
    """Subscribes to the topic ``news``; ``Announce`` publishes on it."""

    async def on_start(self) -> None:
        self.ctx.subscribe("news", News)

    @runtime.handler
    async def news(self, msg: News) -> None:
        self.state.heard.append(msg.text)

    @runtime.handler
    async def announce(self, msg: Announce) -> None:
        await self.ctx.publish("news", News(msg.text))

    @runtime.handler
    async def heard(self, msg: Heard) -> list[str]:
        return list(self.state.heard)

    @runtime.handler
    async def where(self, msg: Where) -> str:
        return node_name()
