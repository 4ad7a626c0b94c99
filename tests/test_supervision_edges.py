"""Supervision at its edges: hung starts during a stop, restarts racing a stop,
backoff ordering, sub-supervisor restarts, half-open circuits in a group,
concurrent crashes and exceptions out of the user's block."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import runtime
from tests.actorkit import (
    Counter,
    Crash,
    Get,
    Hang,
    Record,
    Recorder,
    child,
    topology,
)


class HangingRestart(Counter):
    """Starts normally the first time; every later on_start never returns."""

    starts = 0

    async def on_start(self) -> None:
        type(self).starts += 1
        if type(self).starts > 1:
            await trio.sleep_forever()


# DESIGN 4.6: each child gets shutdown_timeout, then it is cancelled, even when the
# stop finds it in the on_start of a restart.
async def test_shutdown_is_bounded_while_a_restarting_child_hangs_in_on_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    HangingRestart.starts = 0
    spec = topology(child("a", HangingRestart, shutdown_timeout=1))
    with trio.fail_after(60):
        async with runtime.open_system(spec) as system:
            await system.ref("root/a").tell(Crash())
            await trio.testing.wait_all_tasks_blocked()
            assert system.ref("root/a").statistics().status == "starting"


# DESIGN 3/4.6: stop() is terminate_child: the child gets shutdown_timeout, then is
# cancelled, even while its restart holds the supervisor's lock in on_start.
async def test_stop_is_bounded_while_the_child_hangs_in_a_restart_on_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    HangingRestart.starts = 0
    spec = topology(child("a", HangingRestart, shutdown_timeout=1), child("b"))
    stopped = False
    with trio.move_on_after(100):  # the root is stuck too: cancel the whole system at the end
        async with runtime.open_system(spec) as system:
            await system.ref("root/a").tell(Crash())
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(60):
                await system.stop("root/a")
                stopped = True
    assert stopped, "system.stop() waited past the child's shutdown_timeout"


# DESIGN 4.3: "none is lost ... by the restart itself": with concurrency > 1, a message
# queued when a handler crashes is kept for the next incarnation, not started in the
# cancelled incarnation.
async def test_concurrent_crash_does_not_lose_a_queued_message() -> None:
    seen: list[Any] = []

    class SlowRecorder(Recorder):
        @runtime.handler
        async def record(self, msg: Record) -> None:
            await trio.lowlevel.checkpoint()  # any real handler awaits something
            self.seen.append(msg.item)

        @runtime.handler
        async def crash(self, msg: Crash) -> None:
            await trio.lowlevel.checkpoint()
            raise RuntimeError(msg.reason)

        @runtime.handler
        async def hang(self, msg: Hang) -> None:
            await trio.sleep_forever()

    spec = topology(child("r", SlowRecorder, concurrency=2, args={"seen": seen}))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/r")
            ref.tell_nowait(Hang())  # occupies one slot
            ref.tell_nowait(Crash())  # occupies the other, then crashes
            ref.tell_nowait(Record(1))  # queued behind both
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().incarnation == 2
            dead = [d.message for d in system.dead_letters]
            assert seen == [1] or Record(1) in dead, (seen, dead)


# DESIGN 4.3: the mailbox outlives incarnations, also when the actor restarts because its
# supervisor is restarted by the parent: its queue is kept and tells meanwhile are accepted.
async def test_restarting_a_sub_supervisor_keeps_its_actors_queued_messages(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[Any] = []
    gate = trio.Event()

    class Gated(Recorder):
        @runtime.handler
        async def hang(self, msg: Hang) -> None:
            await gate.wait()

    inner = runtime.SupervisorSpec(name="inner", children=[child("r", Gated, args={"seen": seen})])
    spec = runtime.Topology(
        supervisor=runtime.SupervisorSpec(
            name="root", strategy="one_for_all", children=[inner, child("c")]
        )
    )
    with trio.fail_after(60):
        async with runtime.open_system(spec) as system:
            r = system.ref("root/inner/r")
            r.tell_nowait(Hang())  # busy until the gate opens
            r.tell_nowait(Record(1))
            r.tell_nowait(Record(2))
            await trio.testing.wait_all_tasks_blocked()
            system.ref("root/c").tell_nowait(Crash())  # one_for_all: restart inner too
            await trio.testing.wait_all_tasks_blocked()
            gate.set()  # r finishes its current message and stops gracefully
            await trio.testing.wait_all_tasks_blocked()
            assert r.statistics().incarnation == 2
            assert await r.ask(Get()) == [1, 2], list(system.dead_letters)


# DESIGN 4.3: rest_for_one restarts the failed child and those after it in start order,
# also when those were still waiting out the backoff of an earlier restart.
async def test_rest_for_one_with_backoff_restarts_in_start_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: list[str] = []
    backoff = runtime.BackoffSpec(initial=1, max=10, multiplier=2, jitter=0)
    spec = topology(
        child("a", args={"journal": journal}),
        child("b", args={"journal": journal}),
        child("c", args={"journal": journal}),
        strategy="rest_for_one",
        backoff=backoff,
        max_restarts=10,
    )
    with trio.fail_after(60):
        async with runtime.open_system(spec) as system:
            journal.clear()
            system.ref("root/b").tell_nowait(Crash())  # b and c restart at t+1
            await trio.sleep(0.5)
            system.ref("root/a").tell_nowait(Crash())  # a, b and c should restart after a
            await trio.sleep(5)
            starts = [e for e in journal if e.startswith("start:")]
            assert starts[-3:] == ["start:a", "start:b", "start:c"], journal


# DESIGN 4.3/4.6: no restart once shutdown has begun, including a stop that comes while
# a one_for_all restart waits for a slow sibling to stop.
async def test_no_group_restart_after_stop_requested_during_stop_group(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal: list[str] = []
    spec = topology(
        child("a", args={"journal": journal}),
        child("b", args={"journal": journal}, shutdown_timeout=2),
        strategy="one_for_all",
    )
    with trio.fail_after(60):
        async with runtime.open_system(spec) as system:
            await system.ref("root/b").tell(Hang())
            await system.ref("root/a").tell(Crash())
            await trio.testing.wait_all_tasks_blocked()  # root now waits 2 s for b
            journal.clear()
    assert "start:a" not in journal and "start:b" not in journal, journal


# DESIGN 4.3: "In half-open exactly one message is let through; others fail fast", also
# after the half-open child is restarted with its group (a sibling crashed, one_for_all).
async def test_half_open_child_restarted_by_its_group_still_lets_one_message_through(
    autojump_clock: trio.abc.Clock,
) -> None:
    breaker = runtime.BreakerSpec(failures=1, reset_timeout=5)
    spec = topology(
        child("a", circuit_breaker=breaker, shutdown_timeout=1),
        child("b"),
        strategy="one_for_all",
        max_restarts=10,
    )
    with trio.fail_after(60):
        async with runtime.open_system(spec) as system:
            a = system.ref("root/a")
            a.tell_nowait(Crash())  # the circuit opens
            await trio.sleep(6)  # ... and half-opens
            assert a.statistics().breaker == "half_open"
            a.tell_nowait(Hang())  # the trial message, still in progress
            await trio.testing.wait_all_tasks_blocked()
            system.ref("root/b").tell_nowait(Crash())  # one_for_all restarts a with b
            await trio.sleep(2)
            stats = a.statistics()
            assert (stats.breaker, stats.incarnation) == ("half_open", 3)
            accepted = 0
            for _ in range(3):
                try:
                    a.tell_nowait(Get())
                    accepted += 1
                except runtime.errors.CircuitOpen:
                    pass
            assert accepted <= 1, f"{accepted} messages let through while half_open"


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt / SystemExit raised in the user's block."""


# A KeyboardInterrupt or SystemExit raised in the user's block comes out of open_system
# as itself, not wrapped in the internal nursery's BaseExceptionGroup.
async def test_base_exception_from_the_block_is_not_wrapped_in_a_group() -> None:
    with trio.fail_after(5), pytest.raises(_Interrupt):
        async with runtime.open_system(topology(child("a"))):
            raise _Interrupt()


async def test_askers_get_actor_stopped_when_the_root_gives_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    """When the root gives up nothing will restart its children: a waiting
    asker gets ActorStopped at once instead of waiting out its timeout."""
    spec = topology(child("a", shutdown_timeout=1), child("b"), max_restarts=0)
    outcome: list[BaseException] = []

    async def ask(ref: runtime.ActorRef) -> None:
        try:
            await ref.ask(Get(), timeout=1000)
        except runtime.errors.ActorStopped as exc:
            outcome.append(exc)

    with trio.fail_after(100):
        async with trio.open_nursery() as outside:  # the asker outlives the system
            with pytest.raises(runtime.errors.SupervisorGaveUp):
                async with runtime.open_system(spec) as system:
                    a = system.ref("root/a")
                    await a.tell(Hang())
                    outside.start_soon(ask, a)
                    await trio.testing.wait_all_tasks_blocked()
                    await system.ref("root/b").tell(Crash())
                    await trio.sleep_forever()
    assert len(outcome) == 1
    assert trio.current_time() < 10


async def test_a_restarted_supervisor_closes_its_childrens_circuits(
    autojump_clock: trio.abc.Clock,
) -> None:
    """When a supervisor is restarted by its parent, a child whose circuit
    was open starts afresh: closed, crashes forgotten."""
    from tests.actorkit import Counter, Crash, Get

    spec = runtime.Topology(
        supervisor=runtime.SupervisorSpec(
            name="root",
            max_restarts=5,
            children=[
                runtime.SupervisorSpec(
                    name="group",
                    max_restarts=0,
                    children=[
                        runtime.ChildSpec(
                            name="a",
                            actor=Counter,
                            circuit_breaker=runtime.BreakerSpec(failures=1, reset_timeout=60),
                        ),
                        runtime.ChildSpec(name="b", actor=Counter),
                    ],
                )
            ],
        )
    )
    with trio.fail_after(100):
        async with runtime.open_system(spec, store="memory://") as system:
            a, b = system.ref("root/group/a"), system.ref("root/group/b")
            with pytest.raises(runtime.errors.ActorFailed):
                await a.ask(Crash())
            await trio.sleep(0.1)
            assert a.statistics().breaker == "open"
            with pytest.raises(runtime.errors.ActorFailed):
                await b.ask(Crash())  # the group gives up; root restarts it
            await trio.sleep(0.1)
            stats = a.statistics()
            assert (stats.status, stats.breaker) == ("running", "closed")
            assert await a.ask(Get()) == 0
