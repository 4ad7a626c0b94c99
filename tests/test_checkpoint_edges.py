"""Checkpointed state at its edges: stale contexts, state that would not read
back, strict decoding, cyclic and set-valued state, the stop deadline, and a
PostgreSQL store object's event loop."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_asyncio

import runtime
from runtime._checkpoint import MemoryStore, PostgresStore, decode_state, encode_state
from runtime.errors import ActorFailed, StateError
from tests.actorkit import Add, Counter, Crash, Get, Total, child, topology
from tests.conftest import POSTGRES_URL


@attrs.frozen
class Save:
    pass


@attrs.frozen
class Corrupt:
    pass


class Leaky(Counter):
    """Keeps every incarnation's context where code outside it can reach it."""

    def __init__(self, contexts: list[runtime.ActorContext]) -> None:
        self.contexts = contexts

    async def on_start(self) -> None:
        self.contexts.append(self.ctx)

    @runtime.handler
    async def save(self, msg: Save) -> None:
        await self.ctx.checkpoint()


async def test_a_stale_context_cannot_overwrite_the_next_incarnations_checkpoint() -> None:
    # An ended incarnation must not win a write over the next incarnation's checkpoint.
    store = MemoryStore()
    contexts: list[runtime.ActorContext] = []
    spec = topology(child("c", Leaky, checkpoint="manual", args={"contexts": contexts}))
    with trio.fail_after(5):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(5))
            await ref.ask(Save())
            await ref.ask(Add(1))  # in the first incarnation's memory only
            await ref.tell(Crash())
            assert await ref.ask(Get()) == 5  # the second incarnation started from 5
            old = contexts[0]
            with contextlib.suppress(Exception):
                await old.checkpoint()  # the crashed incarnation writes its memory (6)
            assert await store.load("root/c") == (1, '{"total": 5}')


class Corrupting(Counter):
    @runtime.handler
    async def corrupt(self, msg: Corrupt) -> None:
        self.state.total = "lots"  # type: ignore[assignment]


async def test_a_state_that_cannot_be_read_back_fails_its_write() -> None:
    # State no start can structure must fail its write, or every later start fails.
    store = MemoryStore()
    spec = topology(child("c", Corrupting, checkpoint="message"))
    with trio.fail_after(5):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(2))
            with pytest.raises(ActorFailed):
                await ref.ask(Corrupt())
    assert await store.load("root/c") == (1, '{"total": 2}')


def test_a_checkpoint_with_a_renamed_field_is_not_silently_a_fresh_state() -> None:
    # A renamed field must fail the start naming it, not give Total(0): a silent fresh state.
    with pytest.raises(StateError, match="count"):
        decode_state("root/c", '{"count": 7}', Total)


@pytest.mark.parametrize("data", ["[]", '"abc"', "[1, 2]"])
def test_a_checkpoint_that_is_not_an_object_is_not_silently_a_fresh_state(data: str) -> None:
    # JSON that is not an object cannot be a Total: fail the start, do not give Total(0).
    with pytest.raises(StateError, match="root/c"):
        decode_state("root/c", data, Total)


@attrs.define
class Tree:
    children: list[Any] = attrs.Factory(list)


def test_a_cyclic_state_is_a_clear_state_error() -> None:
    # Unserializable state must be a StateError naming the path, not a bare RecursionError.
    state = Tree()
    state.children.append(state)
    with pytest.raises(StateError, match="root/c"):
        encode_state("root/c", state)


@attrs.define
class Tags:
    tags: set[str] = attrs.Factory(set)


def test_a_set_field_round_trips() -> None:
    # A set field should checkpoint (as a list, as cattrs' preconf JSON converter does).
    data = encode_state("root/c", Tags({"a"}))
    assert decode_state("root/c", data, Tags) == Tags({"a"})


class StuckStore(MemoryStore):
    """A store whose writes never complete (a server that stopped answering)."""

    async def save(self, path: str, data: str, version: int) -> int:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class SlowStop(Counter):
    async def on_stop(self) -> None:
        await trio.sleep(4)


async def test_a_stop_takes_at_most_the_shutdown_timeout_with_a_pending_flush(
    autojump_clock: trio.abc.Clock,
) -> None:
    # stop() takes at most shutdown_timeout, the final write included.
    spec = topology(child("c", SlowStop, checkpoint="manual", shutdown_timeout=5))
    with trio.fail_after(100):
        async with runtime.open_system(spec, store=StuckStore()) as system:
            await system.ref("root/c").ask(Add(1))
            start = trio.current_time()
            await system.stop("root/c")
            assert trio.current_time() - start <= 5


@pytest.mark.postgres
async def test_a_postgres_store_object_needs_a_loop_that_outlives_it() -> None:
    # A PostgresStore object outlives any one system: open_system refuses it without a
    # trio-asyncio loop around (its own loop would die under the pool); inside one it works.
    store = PostgresStore(POSTGRES_URL)
    spec = topology(child("review_pg_loop", checkpoint="message"))
    with pytest.raises(ValueError, match="must outlive it"):
        async with runtime.open_system(spec, store=store):
            pass  # pragma: no cover
    with trio.fail_after(30):
        async with trio_asyncio.open_loop():
            await store.delete("root/review_pg_loop")
            async with runtime.open_system(spec, store=store) as system:
                total = await system.ref("root/review_pg_loop").ask(Add(1))
            async with runtime.open_system(spec, store=store) as system:
                assert await system.ref("root/review_pg_loop").ask(Get()) == total
            await store.aclose()


def test_dicts_with_number_keys_round_trip() -> None:
    """JSON writes a dict[int, ...] with string keys; reading gives the
    numbers back (and refuses a key that is not one)."""
    import attrs

    from runtime._checkpoint import decode_state, encode_state
    from runtime.errors import StateError

    @attrs.define
    class Sections:
        written: dict[int, str] = attrs.Factory(dict)
        weights: dict[float, int] = attrs.Factory(dict)

    state = Sections({2: "b", 10: "j"}, {0.5: 1})
    data = encode_state("root/p", state)
    assert decode_state("root/p", data, Sections) == state
    with pytest.raises(StateError, match=r"does not fit .*state\.written"):
        decode_state("root/p", '{"written": {"two": "b"}, "weights": {}}', Sections)
