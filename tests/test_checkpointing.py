"""Checkpointed actor state: restore on every start, the four policies,
failed writes, corrupt checkpoints and competing incarnations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import structlog.testing
import trio
import trio.testing

import runtime
from runtime._checkpoint import CheckpointStore, MemoryStore
from runtime.errors import ActorFailed, CheckpointConflict, CircuitOpen
from tests.actorkit import Add, Counter, Crash, Get, child, topology
from tests.conftest import open_test_store


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    async with open_test_store(request.param, tmp_path) as opened:
        yield opened


@attrs.frozen
class Save:
    pass


@attrs.frozen
class Poison:
    pass


class Saver(Counter):
    """A counter that checkpoints on request and can poison its state."""

    @runtime.handler
    async def save(self, msg: Save) -> None:
        await self.ctx.checkpoint()

    @runtime.handler
    async def poison(self, msg: Poison) -> None:
        self.state.total = object()  # type: ignore[assignment]
        await self.ctx.checkpoint()


async def test_an_actor_restarts_from_its_checkpoint(store: CheckpointStore) -> None:
    """100 checkpointed increments, then a crash: the next incarnation is at 100."""
    spec = topology(child("c", checkpoint="message"))
    with trio.fail_after(30):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            for _ in range(100):
                await ref.ask(Add(1))
            await ref.tell(Crash())
            assert await ref.ask(Get()) == 100
            assert ref.statistics().incarnation == 2


async def test_state_survives_the_system(store: CheckpointStore) -> None:
    """A new system on the same store starts the actor at its last checkpoint."""
    spec = topology(child("c", checkpoint="message"))
    with trio.fail_after(30):
        async with runtime.open_system(spec, store=store) as system:
            await system.ref("root/c").ask(Add(7))
        async with runtime.open_system(spec, store=store) as system:
            assert await system.ref("root/c").ask(Get()) == 7
    assert await store.load("root/c") == (1, '{"total": 7}')


async def test_unchanged_state_is_not_written(store: CheckpointStore) -> None:
    """'message' skips the write when the handler left the state as it was."""
    spec = topology(child("c", checkpoint="message"))
    with trio.fail_after(30):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(1))
            for _ in range(5):
                await ref.ask(Get())
            await ref.ask(Add(0))
    assert await store.load("root/c") == (1, '{"total": 1}')


async def test_off_keeps_nothing() -> None:
    """With checkpoint off a restart starts from S(), nothing is stored, and
    ctx.checkpoint() is an error."""
    store = MemoryStore()
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("c", Saver)), store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(5))
            await ref.tell(Crash())
            assert await ref.ask(Get()) == 0
            with pytest.raises(ActorFailed, match="checkpointing is off"):
                await ref.ask(Save())
    assert await store.paths() == []


async def test_a_period_writes_when_changed(autojump_clock: trio.abc.Clock) -> None:
    """A period writes the state every period, only when it changed."""
    store = MemoryStore()
    spec = topology(child("c", checkpoint=10))
    with trio.fail_after(100):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(1))
            assert await store.load("root/c") is None
            await trio.sleep(10.5)
            assert await store.load("root/c") == (1, '{"total": 1}')
            await trio.sleep(30)  # unchanged: no new version
            assert await store.load("root/c") == (1, '{"total": 1}')
            await ref.ask(Add(1))
            await trio.sleep(10)
            assert await store.load("root/c") == (2, '{"total": 2}')


async def test_manual_writes_only_when_asked() -> None:
    """'manual' writes on ctx.checkpoint() only (and on a graceful stop)."""
    store = MemoryStore()
    spec = topology(child("c", Saver, checkpoint="manual"))
    with trio.fail_after(5):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(3))
            assert await store.load("root/c") is None
            await ref.ask(Save())
            assert await store.load("root/c") == (1, '{"total": 3}')
            await ref.ask(Add(1))
            await ref.tell(Crash())
            assert await ref.ask(Get()) == 3  # the unsaved +1 died with the crash


async def test_a_graceful_stop_flushes_the_state() -> None:
    """Leaving the system writes what a period or manual policy had pending."""
    store = MemoryStore()
    spec = topology(child("c", checkpoint="manual"))
    with trio.fail_after(5):
        async with runtime.open_system(spec, store=store) as system:
            await system.ref("root/c").ask(Add(4))
    assert await store.load("root/c") == (1, '{"total": 4}')


async def test_a_failed_write_crashes_the_actor_and_keeps_the_checkpoint() -> None:
    """State that cannot be written crashes the actor; the previous checkpoint
    is intact and the next incarnation starts from it."""
    store = MemoryStore()
    spec = topology(child("c", Saver, checkpoint="manual"))
    with trio.fail_after(5):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            await ref.ask(Add(2))
            await ref.ask(Save())
            with pytest.raises(ActorFailed, match="cannot be checkpointed as JSON"):
                await ref.ask(Poison())
            assert await ref.ask(Get()) == 2
            assert ref.statistics().incarnation == 2
    assert await store.load("root/c") == (1, '{"total": 2}')


async def test_an_ask_is_answered_only_after_its_write(store: CheckpointStore) -> None:
    """Under 'message', when the write fails the asker gets ActorFailed, not
    the handler's value: an acknowledged update is always durable."""

    class Racing(Counter):
        @runtime.handler
        async def add(self, msg: Add) -> int:
            self.state.total += msg.n
            # Another incarnation wins the path in between.
            version = self.ctx._cell.checkpointer.version  # type: ignore[attr-defined]
            await store.save(self.ctx.path, '{"total": 100}', version)
            return self.state.total

    spec = topology(child("c", Racing, checkpoint="message"))
    with trio.fail_after(10):
        async with runtime.open_system(spec, store=store) as system:
            with pytest.raises(ActorFailed) as info:
                await system.ref("root/c").ask(Add(1))
            assert isinstance(info.value.__cause__, CheckpointConflict)
    assert (await store.load("root/c"))[1] == '{"total": 100}'  # type: ignore[index]


async def test_two_runtimes_writing_one_path_only_one_wins(tmp_path: Path) -> None:
    """Two systems on one SQLite file, each with the same actor at the same
    version: exactly one write wins, the other crashes with a conflict."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = topology(child("c", checkpoint="message"))
    outcomes: list[object] = []
    with trio.fail_after(30):
        async with (
            runtime.open_system(spec, store=url) as first,
            runtime.open_system(spec, store=url) as second,
        ):
            for system in (first, second):
                try:
                    outcomes.append(await system.ref("root/c").ask(Add(1)))
                except ActorFailed as exc:
                    outcomes.append(exc.__cause__)
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], CheckpointConflict)


async def test_a_corrupt_checkpoint_fails_that_start_and_not_the_others(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An unreadable checkpoint fails its actor's start (never a fresh state);
    with a circuit breaker the circuit opens and its siblings run on."""
    store = MemoryStore()
    await store.save("root/broken", '{"total": "lots"}', 0)
    breaker = runtime.BreakerSpec(failures=2, reset_timeout=60)
    spec = topology(
        child("broken", checkpoint="message", circuit_breaker=breaker),
        child("fine", checkpoint="message"),
    )
    with trio.fail_after(100):
        async with runtime.open_system(spec, store=store) as system:
            await trio.testing.wait_all_tasks_blocked()
            broken = system.ref("root/broken")
            assert broken.statistics().status == "circuit_open"
            with pytest.raises(CircuitOpen):
                await broken.ask(Get())
            assert await system.ref("root/fine").ask(Add(1)) == 1
    assert await store.load("root/broken") == (1, '{"total": "lots"}')


async def test_checkpoint_traffic_is_counted_and_logged() -> None:
    """The system counts reads, writes, bytes, conflicts and failures; a
    restore and a failed write are logged with the actor's path."""
    store = MemoryStore()
    await store.save("root/c", '{"total": 1}', 0)
    spec = topology(child("c", Saver, checkpoint="message"))
    with structlog.testing.capture_logs() as logs, trio.fail_after(5):
        async with runtime.open_system(spec, store=store) as system:
            ref = system.ref("root/c")
            assert await ref.ask(Add(1)) == 2
            await ref.ask(Add(1))
            await store.save("root/c", '{"total": 50}', 3)  # someone else writes
            with pytest.raises(ActorFailed):
                await ref.ask(Add(1))
            with pytest.raises(ActorFailed):
                await ref.ask(Poison())
            await trio.testing.wait_all_tasks_blocked()  # the restart reads again
            stats = system.checkpoint_statistics()
    assert (stats.writes, stats.conflicts, stats.failures) == (2, 1, 1)
    assert stats.bytes_written == len('{"total": 2}') + len('{"total": 3}')
    assert stats.reads == 3  # the first start and two restarts
    events = [(e["event"], e.get("path")) for e in logs]
    assert ("checkpoint_restored", "root/c") in events
    assert events.count(("checkpoint_failed", "root/c")) == 2


async def test_an_actor_without_state_cannot_checkpoint() -> None:
    """A checkpoint policy on an actor without a state class is refused
    before anything starts, in code and in a topology file."""

    class Stateless(runtime.Actor[None]):
        @runtime.handler
        async def get(self, msg: Get) -> None:
            pass

    with pytest.raises(runtime.errors.TopologyError, match="no state class to checkpoint"):
        async with runtime.open_system(topology(child("s", Stateless, checkpoint="message"))):
            pass  # pragma: no cover
    with pytest.raises(runtime.errors.TopologyError, match=r"children\[0\]\.checkpoint: "):
        runtime.parse_topology(
            "supervisor:\n  name: root\n  children:\n"
            "    - {name: e, actor: 'tests.sample_actors:Echo', checkpoint: message}\n"
        )
