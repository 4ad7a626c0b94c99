"""open_system enters its block only once every initial child runs (OTP's
start_link), or raises; spawn of an actor that cannot start raises and adds
nothing (OTP's start_child)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import runtime
from runtime.errors import ActorNotFound, StartFailed, SupervisorGaveUp
from tests.actorkit import Add, Counter, child, topology


class NeverStarts(Counter):
    async def on_start(self) -> None:
        raise RuntimeError("no database")


async def test_the_block_is_entered_only_once_a_failing_first_start_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Failed first starts go through the policy (backoff here); the block
    starts with the child running, not crash-looping."""
    attempts: list[float] = []

    class SlowToStart(Counter):
        async def on_start(self) -> None:
            attempts.append(trio.current_time())
            if len(attempts) < 3:
                raise RuntimeError("not yet")

    spec = topology(
        child("s", SlowToStart),
        max_restarts=5,
        backoff=runtime.BackoffSpec(initial=1.0, jitter=0.0),
    )
    with trio.fail_after(60):
        async with runtime.open_system(spec) as system:
            stats = system.ref("root/s").statistics()
            assert stats.status == "running" and stats.incarnation == 3
            assert len(attempts) == 3 and attempts[2] - attempts[0] >= 3.0  # 1 s + 2 s


async def test_open_system_raises_when_failed_starts_exceed_the_intensity() -> None:
    """A child that never starts makes open_system raise SupervisorGaveUp
    before the block is entered."""
    entered = False
    with trio.fail_after(5), pytest.raises(SupervisorGaveUp) as info:
        async with runtime.open_system(topology(child("n", NeverStarts), max_restarts=2)):
            entered = True
    assert not entered
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_a_temporary_child_that_fails_its_first_start_fails_the_start() -> None:
    """temporary is never restarted: its failed start is StartFailed."""
    with trio.fail_after(5), pytest.raises(StartFailed, match="root/n failed to start"):
        async with runtime.open_system(topology(child("n", NeverStarts, restart="temporary"))):
            raise AssertionError("the block was entered")


async def test_spawn_of_an_actor_that_cannot_start_raises_and_adds_nothing() -> None:
    """spawn raises StartFailed with the cause; the name stays free."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            with pytest.raises(StartFailed) as info:
                await system.spawn(NeverStarts, name="n")
            assert isinstance(info.value.__cause__, RuntimeError)
            with pytest.raises(ActorNotFound):
                system.ref("root/n")
            ref = await system.spawn(Counter, name="n")
            assert await ref.ask(Add(1)) == 1
            assert system.root.statistics().restarts == 0
