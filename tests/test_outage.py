"""An outage is not a bug: an unreachable store holds replies and is retried;
crashes caused by an outage restart with backoff but do not use up the
restart intensity, so a database blip cannot take an agent tree down."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import runtime
from runtime import MemoryStore
from runtime._checkpoint import STORE_OUTAGE_DEADLINE
from runtime._outage import is_outage
from runtime.errors import (
    ActorFailed,
    AskTimeout,
    CircuitOpen,
    ResourceError,
    StartFailed,
    StoreUnavailable,
)
from tests.actorkit import Add, Counter, Get, child, topology


class FlakyStore(MemoryStore):
    """A memory store that can be taken down: every call raises StoreUnavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise StoreUnavailable("memory://: connection refused")

    async def load(self, path: str) -> tuple[int, str] | None:
        self._check()
        return await super().load(path)

    async def save(self, path: str, data: str, version: int) -> int:
        self._check()
        return await super().save(path, data, version)


def test_outages_are_told_from_bugs() -> None:
    """The store, a transient resource failure and an open circuit are
    outages, also as causes; anything else is not."""
    assert is_outage(StoreUnavailable("down"))
    assert is_outage(ResourceError("429", transient=True))
    assert not is_outage(ResourceError("bad request", transient=False))
    assert is_outage(CircuitOpen("open"))
    wrapped = ActorFailed("failed")
    wrapped.__cause__ = StoreUnavailable("down")
    assert is_outage(wrapped)
    assert not is_outage(ValueError("bug"))
    assert not is_outage(None)


async def test_a_write_waits_out_a_short_outage_and_the_reply_waits_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While the store is down the reply is held (nothing else is handled);
    once it is back the write lands and the asker gets its answer."""
    store = FlakyStore()
    with trio.fail_after(120):
        async with runtime.open_system(
            topology(child("c", checkpoint="message")), store=store
        ) as system:
            ref = system.ref("root/c")
            assert await ref.ask(Add(1)) == 1
            store.down = True
            with pytest.raises(AskTimeout):
                await ref.ask(Add(1), timeout=5)  # held, not failed
            ref.tell_nowait(Add(10))  # queued behind the held write
            await trio.sleep(5)
            store.down = False
            assert await ref.ask(Get(), timeout=60) == 12
            assert ref.statistics().restarts == 0
    assert store.refused > 1
    assert (await store.load("root/c")) == (3, '{"total": 12}')


async def test_twenty_actors_survive_an_outage_longer_than_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The incident: 20 checkpointed actors with the recommended breaker, a
    store down for longer than the write deadline. The root supervisor
    (3 restarts in 5 s) does not give up; every acknowledged update survives."""
    store = FlakyStore()
    breaker = runtime.BreakerSpec(failures=5, reset_timeout=30)
    names = [f"a{i}" for i in range(20)]
    spec = topology(*(child(n, checkpoint="message", circuit_breaker=breaker) for n in names))
    outage = STORE_OUTAGE_DEADLINE * 2
    with trio.fail_after(1000):
        async with runtime.open_system(spec, store=store) as system:
            for n in names:
                assert await system.ref(f"root/{n}").ask(Add(1)) == 1
            store.down = True
            back_at = trio.current_time() + outage

            async def ask_during_outage(name: str) -> None:
                with pytest.raises((ActorFailed, CircuitOpen, AskTimeout)):
                    await system.ref(f"root/{name}").ask(Add(100), timeout=outage - 1)

            async with trio.open_nursery() as nursery:
                for n in names:
                    nursery.start_soon(ask_during_outage, n)
            await trio.sleep_until(back_at)
            store.down = False
            await trio.sleep(60)  # backoff and half-open trials bring them back
            assert system.state() == "running"
            for n in names:
                ref = system.ref(f"root/{n}")
                total = await ref.ask(Get(), timeout=120)
                assert total == 1  # the unacknowledged +100 never ran ahead of the store
                assert ref.statistics().status == "running"
            assert system.root.statistics().status == "running"


async def test_a_start_failed_by_a_store_outage_fails_open_system_in_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A store that never comes back: the first start is retried (without
    using up the intensity) for a bounded time, then open_system raises."""
    store = FlakyStore()
    store.down = True
    with trio.fail_after(1000), pytest.raises(StartFailed, match="outage") as info:
        async with runtime.open_system(topology(child("c", checkpoint="message")), store=store):
            raise AssertionError("the block was entered")
    assert isinstance(info.value.__cause__, StoreUnavailable)


async def test_an_outage_crash_does_not_count_toward_intensity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten crashes from a resource outage in quick succession: restarted with
    backoff, counted as 'outage', and the supervisor (max 3 in 5 s) runs on."""

    class Caller(Counter):
        @runtime.handler
        async def get(self, msg: Get) -> int:
            raise ResourceError("llm: 503", resource="llm", transient=True)

    with trio.fail_after(1000):
        async with runtime.open_system(topology(child("c", Caller))) as system:
            ref = system.ref("root/c")
            for _ in range(10):
                with pytest.raises(ActorFailed):
                    await ref.ask(Get(), timeout=60)
            await trio.sleep(60)  # the last restart waits out its backoff
            stats = ref.statistics()
            assert stats.restarts == 10 and stats.status == "running"
            assert system.state() == "running"


def _store_down() -> None:
    raise StoreUnavailable("down")


def test_a_bug_raised_while_handling_an_outage_is_a_bug() -> None:
    """Implicit chaining (``__context__``) does not make a bug an outage."""
    try:
        try:
            _store_down()
        except StoreUnavailable:
            raise KeyError("typo")  # noqa: B904
    except KeyError as bug:
        assert bug.__context__ is not None
        assert not is_outage(bug)
