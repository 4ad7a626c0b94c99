"""open_system enters its block only once every initial child runs (OTP's
start_link), or raises; spawn of an actor that cannot start raises and adds
nothing (OTP's start_child)."""

from __future__ import annotations

import pytest
import structlog
import trio
import trio.testing

import runtime
from runtime.errors import ActorNotFound, StartFailed, SupervisorGaveUp
from tests.actorkit import Add, Counter, Crash, child, topology


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


class Plain(runtime.Actor[None]):
    """No on_start, on_stop or __init__ of its own: spawn starts it at once."""

    @runtime.handler
    async def add(self, msg: Add) -> int:
        return msg.n


async def test_an_actor_with_nothing_to_start_runs_when_spawn_returns() -> None:
    """Running, incarnation 1, its start logged, before its task has run;
    a message sent at once is handled once it does."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            with structlog.testing.capture_logs() as logs:
                ref = await system.spawn(Plain, name="p")
            stats = ref.statistics()
            assert (stats.status, stats.incarnation) == ("running", 1)
            assert [e["event"] for e in logs] == ["actor_started"]
            assert await ref.ask(Add(3)) == 3
            assert ref.statistics().incarnation == 1


async def test_an_actor_stopped_before_its_task_ran_never_runs() -> None:
    """spawn then stop in the same scheduling round: the pending task does
    nothing; the actor is stopped for good and the name is free again."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            ref = await system.spawn(Plain, name="p")
            ref.tell_nowait(Add(1))
            await system.stop("root/p")
            assert ref.statistics().status == "stopped"
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().status == "stopped"
            assert [d.reason for d in system.dead_letters] == ["stopped"]
            again = await system.spawn(Plain, name="p")
            assert await again.ask(Add(2)) == 2


async def test_an_actor_restarted_before_its_task_ran_runs_once() -> None:
    """Under one_for_all, a sibling's crash before the new actor's task ran
    restarts it: exactly one incarnation (the second) serves it."""
    spec = topology(child("c", Counter), strategy="one_for_all", max_restarts=5)
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await system.spawn(Plain, name="p")
            system.ref("root/c").tell_nowait(Crash())
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().incarnation == 2
            assert await ref.ask(Add(5)) == 5
            assert ref.statistics().incarnation == 2  # the first never served


async def test_spawning_one_class_again_checks_the_name_only_and_keeps_the_rest() -> None:
    """The second spawn of a class reuses its checked spec under the new
    name: a bad name is still refused; the spec is otherwise the first's."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            await system.spawn(Plain, name="a")
            b = await system.spawn(Plain, name="b")
            assert b.path == "root/b" and await b.ask(Add(1)) == 1
            with pytest.raises(ValueError, match="a name is letters"):
                await system.spawn(Plain, name="no/slash")
            c = await system.spawn(Plain, name="c", mailbox={"capacity": 3})
            assert c.statistics().mailbox_capacity == 3
            d = await system.spawn(Plain, name="d")
            assert d.statistics().mailbox_capacity == 100
