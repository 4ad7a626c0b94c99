"""Supervision semantics, modelled on OTP's supervisor_SUITE: strategies,
restart types, intensity, escalation, shutdown, backoff and circuit breakers."""

from __future__ import annotations

import itertools

import pytest
import structlog.testing
import trio
import trio.testing

import runtime
from runtime.errors import ActorStopped, CircuitOpen, SupervisorGaveUp
from tests.actorkit import (
    Add,
    Counter,
    Crash,
    Finish,
    Get,
    Hang,
    Record,
    Recorder,
    child,
    incarnations,
    topology,
)


async def crash(system: runtime.ActorSystem, path: str) -> None:
    """Crash the actor at ``path`` and let the supervisor react."""
    await system.ref(path).tell(Crash())
    await trio.testing.wait_all_tasks_blocked()


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    """one_for_one: only the crashed child gets a new incarnation."""
    journal: list[str] = []
    spec = topology(*(child(n, args={"journal": journal}) for n in "abc"))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            journal.clear()
            await crash(system, "root/b")
            assert incarnations(system, "a", "b", "c") == [1, 2, 1]
            assert journal == ["start:b"]


async def test_one_for_all_stops_others_in_reverse_and_restarts_all_in_order() -> None:
    """one_for_all: siblings stop in reverse start order, then all start in order."""
    journal: list[str] = []
    spec = topology(*(child(n, args={"journal": journal}) for n in "abcd"), strategy="one_for_all")
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            journal.clear()
            await crash(system, "root/b")
            assert journal == [
                "stop:d",
                "stop:c",
                "stop:a",
                "start:a",
                "start:b",
                "start:c",
                "start:d",
            ]
            assert incarnations(system, "a", "b", "c", "d") == [2, 2, 2, 2]


async def test_rest_for_one_restarts_the_crashed_child_and_those_after_it() -> None:
    """rest_for_one: children started after the crashed one are stopped and restarted."""
    journal: list[str] = []
    spec = topology(*(child(n, args={"journal": journal}) for n in "abcd"), strategy="rest_for_one")
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            journal.clear()
            await crash(system, "root/b")
            assert journal == ["stop:d", "stop:c", "start:b", "start:c", "start:d"]
            assert incarnations(system, "a", "b", "c", "d") == [1, 2, 2, 2]


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    """Start order is the spec's order; a graceful stop runs on_stop in reverse."""
    journal: list[str] = []
    spec = topology(*(child(n, args={"journal": journal}) for n in "abc"))
    with trio.fail_after(5):
        async with runtime.open_system(spec):
            assert journal == ["start:a", "start:b", "start:c"]
    assert journal[3:] == ["stop:c", "stop:b", "stop:a"]


@pytest.mark.parametrize(
    ("restart", "exit_kind", "restarted"),
    [
        ("permanent", "crash", True),
        ("permanent", "normal", True),
        ("transient", "crash", True),
        ("transient", "normal", False),
        ("temporary", "crash", False),
        ("temporary", "normal", False),
    ],
)
async def test_restart_type_by_exit_kind(restart: str, exit_kind: str, restarted: bool) -> None:
    """permanent always restarts, transient only after a crash, temporary never."""
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a", restart=restart))) as system:
            ref = system.ref("root/a")
            await ref.tell(Crash() if exit_kind == "crash" else Finish())
            await trio.testing.wait_all_tasks_blocked()
            if restarted:
                assert ref.statistics().status == "running"
                assert ref.statistics().incarnation == 2
                assert await ref.ask(Add(1)) == 1
            else:
                assert ref.statistics().status == "stopped"
                with pytest.raises(ActorStopped):
                    await ref.tell(Add(1))
                names = [node.path for node in system.tree().children]
                assert ("root/a" in names) == (restart != "temporary")


async def test_intensity_is_a_sliding_window(autojump_clock: trio.abc.Clock) -> None:
    """Crashes spaced wider than the window never exhaust it, however many."""
    spec = topology(child("a"), max_restarts=2, within=5)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            for _ in range(10):
                await crash(system, "root/a")
                await trio.sleep(2.6)  # at most two restarts in any 5 s window
            assert system.ref("root/a").statistics().restarts == 10


async def test_exceeding_intensity_stops_the_system_with_a_clear_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    """More than max_restarts within the window: the root gives up, children stop."""
    journal: list[str] = []
    spec = topology(child("a", args={"journal": journal}), child("b"), max_restarts=2, within=5)
    with pytest.raises(SupervisorGaveUp, match=r"root gave up.*more than 2 restart") as info:
        with trio.fail_after(10):
            async with runtime.open_system(spec) as system:
                for _ in range(3):
                    await crash(system, "root/b")
                await trio.sleep_forever()  # cancelled when the root gives up
    assert isinstance(info.value.__cause__, RuntimeError)
    assert journal[-1] == "stop:a"


async def test_escalation_through_two_levels(autojump_clock: trio.abc.Clock) -> None:
    """A sub-supervisor that gives up is restarted by its parent; the parent giving
    up in turn ends the system, with the whole chain in the error's causes."""
    inner = runtime.SupervisorSpec(
        name="inner", max_restarts=1, within=10, children=[child("leaf")]
    )
    middle = runtime.SupervisorSpec(name="middle", max_restarts=1, within=10, children=[inner])
    spec = runtime.Topology(
        supervisor=runtime.SupervisorSpec(
            name="root", max_restarts=0, within=10, children=[middle, child("other")]
        )
    )
    with pytest.raises(SupervisorGaveUp) as info:
        with trio.fail_after(10):
            async with runtime.open_system(spec) as system:
                leaf = system.ref("root/middle/inner/leaf")
                await crash(system, leaf.path)  # inner restarts leaf (1 of 1)
                assert leaf.statistics().incarnation == 2
                await crash(system, leaf.path)  # inner gives up; middle restarts inner
                tree = system.tree()
                assert tree.children[0].children[0].stats.incarnation == 2
                assert leaf.statistics().incarnation == 3
                assert leaf.statistics().restarts == 2  # a restart by its parent counts
                await crash(system, leaf.path)
                await crash(system, leaf.path)  # inner gives up again; middle gives up
                await trio.sleep_forever()
    chain = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert "supervisor root gave up" in chain[0]
    assert any("supervisor root/middle gave up" in text for text in chain)
    assert any("supervisor root/middle/inner gave up" in text for text in chain)
    assert chain[-1] == "boom"


async def test_temporary_sibling_is_not_restarted_under_one_for_all() -> None:
    """one_for_all stops a temporary sibling and does not start it again."""
    spec = topology(
        child("a"), child("tmp", restart="temporary"), child("c"), strategy="one_for_all"
    )
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            tmp = system.ref("root/tmp")
            await crash(system, "root/a")
            assert incarnations(system, "a", "c") == [2, 2]
            assert tmp.statistics().status == "stopped"
            assert [n.path for n in system.tree().children] == ["root/a", "root/c"]


async def test_child_that_ignores_the_stop_is_cancelled_after_shutdown_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A handler that never returns delays shutdown by exactly its shutdown_timeout."""
    spec = topology(child("slow", shutdown_timeout=3), child("fast"))
    with trio.fail_after(10):
        async with runtime.open_system(spec) as system:
            await system.ref("root/slow").tell(Hang())
            await trio.testing.wait_all_tasks_blocked()
            before = trio.current_time()
        assert trio.current_time() - before == pytest.approx(3)


async def test_no_restart_once_shutdown_has_begun() -> None:
    """A child that crashes while the system stops is not restarted."""

    class CrashOnStop(Counter):
        async def on_stop(self) -> None:
            raise RuntimeError("crash while stopping")

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a", CrashOnStop))) as system:
            ref = system.ref("root/a")
    assert ref.statistics().incarnation == 1
    assert ref.statistics().status == "stopped"


async def test_queued_messages_survive_a_restart_in_order_and_once() -> None:
    """Messages queued behind the crashing one are handled by the next
    incarnation in order; the crashing message is not redelivered."""
    seen: list[object] = []
    with trio.fail_after(5):
        async with runtime.open_system(
            topology(child("r", Recorder, args={"seen": seen}))
        ) as system:
            ref = system.ref("root/r")
            ref.tell_nowait(Record(1))
            ref.tell_nowait(Record(2))
            ref.tell_nowait(Crash())
            for n in range(3, 9):
                ref.tell_nowait(Record(n))
            assert await ref.ask(Get()) == [1, 2, 3, 4, 5, 6, 7, 8]
            assert ref.statistics().incarnation == 2


async def test_backoff_spaces_restarts(autojump_clock: trio.abc.Clock) -> None:
    """The n-th consecutive restart waits min(max, initial * multiplier**(n-1))."""
    starts: list[float] = []

    class Timed(Counter):
        async def on_start(self) -> None:
            starts.append(trio.current_time())

    backoff = runtime.BackoffSpec(initial=1, max=5, multiplier=2, jitter=0)
    spec = topology(child("a", Timed), max_restarts=10, within=100, backoff=backoff)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            for _ in range(5):
                await ref.tell(Crash())
                await trio.testing.wait_all_tasks_blocked()
                assert ref.statistics().status == "restarting"
                while ref.statistics().status != "running":  # noqa: ASYNC110 (virtual time)
                    await trio.sleep(0.01)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_backoff_jitter_stays_within_its_fraction(autojump_clock: trio.abc.Clock) -> None:
    """Jitter adds between 0 and jitter * delay to each restart's wait."""
    spec = runtime.BackoffSpec(initial=2, max=60, multiplier=3, jitter=0.5)
    assert spec.delay(1, 0.0) == 2
    assert spec.delay(1, 1.0) == 3
    assert spec.delay(3, 0.0) == 18
    assert spec.delay(9, 0.0) == 60


async def test_circuit_breaker_opens_half_opens_and_closes(autojump_clock: trio.abc.Clock) -> None:
    """After `failures` consecutive crashes the circuit opens (fail fast, no
    restart); after reset_timeout one trial message is let through; its
    success closes the circuit."""
    breaker = runtime.BreakerSpec(failures=2, reset_timeout=10)
    spec = topology(child("a", circuit_breaker=breaker), max_restarts=10, within=1)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await crash(system, "root/a")
            assert ref.statistics().breaker == "closed"
            await crash(system, "root/a")
            stats = ref.statistics()
            assert (stats.status, stats.breaker, stats.incarnation) == ("circuit_open", "open", 2)
            with pytest.raises(CircuitOpen):
                await ref.tell(Add(1))
            with pytest.raises(CircuitOpen, match="after crashing with RuntimeError") as info:
                await ref.ask(Get())
            assert isinstance(info.value.__cause__, RuntimeError)  # the last crash
            await trio.sleep(10.5)
            assert ref.statistics().breaker == "half_open"
            assert ref.statistics().incarnation == 3
            async with trio.open_nursery() as nursery:
                trial = nursery.start_soon
                results: list[int] = []

                async def ask_trial() -> None:
                    results.append(await ref.ask(Add(5)))

                trial(ask_trial)
                await trio.testing.wait_all_tasks_blocked()
            assert results == [5]
            assert ref.statistics().breaker == "closed"
            assert await ref.ask(Add(1)) == 6


async def test_half_open_lets_exactly_one_message_through(autojump_clock: trio.abc.Clock) -> None:
    """While the trial message is pending, other messages fail fast."""
    breaker = runtime.BreakerSpec(failures=1, reset_timeout=5)
    spec = topology(child("a", circuit_breaker=breaker), max_restarts=10, within=1)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await crash(system, "root/a")
            await trio.sleep(6)
            ref.tell_nowait(Add(1))  # the trial
            with pytest.raises(CircuitOpen):
                ref.tell_nowait(Add(1))
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().breaker == "closed"
            assert await ref.ask(Get(), timeout=1) == 1


async def test_failed_trial_reopens_the_circuit(autojump_clock: trio.abc.Clock) -> None:
    """A trial that crashes opens the circuit again for another reset_timeout."""
    breaker = runtime.BreakerSpec(failures=1, reset_timeout=5)
    spec = topology(child("a", circuit_breaker=breaker), max_restarts=10, within=1)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await crash(system, "root/a")
            await trio.sleep(6)
            assert ref.statistics().breaker == "half_open"
            await crash(system, "root/a")
            assert ref.statistics().breaker == "open"
            await trio.sleep(6)
            assert ref.statistics().breaker == "half_open"


async def test_open_circuit_restarts_do_not_count_toward_intensity(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A child flapping behind its breaker never makes the supervisor give up."""
    breaker = runtime.BreakerSpec(failures=1, reset_timeout=1)
    spec = topology(child("a", circuit_breaker=breaker), child("b"), max_restarts=1, within=60)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            for _ in range(5):
                await trio.sleep(1.5)
                await crash(system, "root/a")
            assert system.ref("root/b").statistics().status == "running"


async def test_cancellation_is_not_a_failure(autojump_clock: trio.abc.Clock) -> None:
    """Cancelling a handler at shutdown does not count as a crash."""
    breaker = runtime.BreakerSpec(failures=1, reset_timeout=5)
    spec = topology(child("a", circuit_breaker=breaker, shutdown_timeout=1))
    with trio.fail_after(10):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
    assert ref.statistics().breaker == "closed"


async def test_crash_gives_the_asker_actor_failed_and_queued_askers_their_replies() -> None:
    """The crashing message's asker gets ActorFailed; askers queued behind it are
    answered by the next incarnation."""
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a"))) as system:
            ref = system.ref("root/a")
            outcomes: dict[str, object] = {}

            async def ask(key: str, msg: object) -> None:
                try:
                    outcomes[key] = await ref.ask(msg)
                except runtime.errors.ActorFailed as exc:
                    outcomes[key] = exc

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "crash", Crash())
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(ask, "after", Add(2))
            assert isinstance(outcomes["crash"], runtime.errors.ActorFailed)
            assert isinstance(outcomes["crash"].__cause__, RuntimeError)
            assert outcomes["after"] == 2


async def test_spawn_and_stop_at_runtime() -> None:
    """spawn adds a child to the root; stop ends it for good (terminate_child)."""
    journal: list[str] = []
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            ref = await system.spawn(Counter, name="dyn", args={"journal": journal})
            assert await ref.ask(Add(2)) == 2
            with pytest.raises(ValueError, match="already has a child named 'dyn'"):
                await system.spawn(Counter, name="dyn")
            await system.stop("root/dyn")
            assert journal == ["start:dyn", "stop:dyn"]
            with pytest.raises(ActorStopped):
                await ref.tell(Add(1))
            with pytest.raises(runtime.errors.ActorNotFound):
                system.ref("root/dyn")
            again = await system.spawn(Counter, name="dyn")
            assert await again.ask(Get()) == 0


async def test_stop_turns_queued_messages_into_dead_letters(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Messages queued when an actor stops for good become dead letters and
    waiting askers get ActorStopped."""
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a", shutdown_timeout=1))) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
            ref.tell_nowait(Add(1))
            failures: list[BaseException] = []

            async def ask() -> None:
                try:
                    await ref.ask(Get())
                except ActorStopped as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                assert ref.statistics().pending_asks == 1
                await system.stop("root/a")
            assert len(failures) == 1
            assert ref.statistics().pending_asks == 0
            letters = [(d.path, d.message, d.reason) for d in system.dead_letters]
            assert letters == [("root/a", Add(1), "stopped"), ("root/a", Get(), "stopped")]


async def test_tree_reports_every_node() -> None:
    """tree() has each node's kind, status, incarnation and mailbox figures."""
    inner = runtime.SupervisorSpec(
        name="team", children=[child("x", mailbox=runtime.MailboxSpec(capacity=7))]
    )
    spec = runtime.Topology(
        supervisor=runtime.SupervisorSpec(name="root", children=[child("a"), inner])
    )
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            tree = system.tree()
            assert (tree.path, tree.kind, tree.stats.status) == ("root", "supervisor", "running")
            a, team = tree.children
            assert (a.path, a.kind, a.stats.mailbox_capacity) == ("root/a", "actor", 100)
            assert team.kind == "supervisor"
            (x,) = team.children
            assert x.path == "root/team/x"
            assert x.stats == runtime.ActorStatistics(
                path="root/team/x",
                status="running",
                incarnation=1,
                restarts=0,
                mailbox_depth=0,
                mailbox_capacity=7,
                breaker=None,
                pending_asks=0,
            )
            with pytest.raises(runtime.errors.ActorNotFound, match="supervisor"):
                system.ref("root/team")


async def test_timers_and_bad_priorities_do_not_take_the_half_open_trial(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Setting a timer in on_start, or a tell with a bad priority, does not use
    up the one message a half-open circuit lets through."""

    class Timed(Counter):
        async def on_start(self) -> None:
            self.ctx.schedule(1000, Add(0))

    breaker = runtime.BreakerSpec(failures=1, reset_timeout=5)
    spec = topology(child("a", Timed, circuit_breaker=breaker), max_restarts=10, within=1)
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await crash(system, "root/a")
            await trio.sleep(6)
            assert ref.statistics().breaker == "half_open"
            with pytest.raises(ValueError, match="priority"):
                await ref.tell(Add(1), priority="urgent")
            assert await ref.ask(Add(1)) == 1
            assert ref.statistics().breaker == "closed"


async def test_nested_supervisor_backoff_resets_after_a_stable_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A sub-supervisor's restart delay starts over once it has run for its
    parent's intensity window, as an actor's does after a handled message."""
    inner = runtime.SupervisorSpec(name="inner", max_restarts=0, children=[child("leaf")])
    backoff = runtime.BackoffSpec(initial=1, max=100, multiplier=10, jitter=0)
    spec = runtime.Topology(
        supervisor=runtime.SupervisorSpec(
            name="root", max_restarts=10, within=20, backoff=backoff, children=[inner]
        )
    )
    delays: list[float] = []
    with structlog.testing.capture_logs() as logs, trio.fail_after(1000):
        async with runtime.open_system(spec) as system:
            leaf = system.ref("root/inner/leaf")
            for pause in (0, 0, 30):  # the last run outlasts the 20 s window
                await trio.sleep(pause)
                await leaf.tell(Crash())
                await trio.testing.wait_all_tasks_blocked()
                while leaf.statistics().status != "running":  # noqa: ASYNC110 (virtual time)
                    await trio.sleep(0.1)
    delays = [e["delay"] for e in logs if e["event"] == "child_restarting" and e["path"] == "root"]
    assert delays == [1, 10, 1]


async def test_open_system_checks_a_topology_built_in_code() -> None:
    """Args that do not fit __init__ fail open_system before anything starts."""
    spec = topology(child("a", args={"jornal": []}))
    with pytest.raises(runtime.errors.TopologyError, match=r"root/a: args: do not fit"):
        async with runtime.open_system(spec):
            pass  # pragma: no cover


async def test_spawn_or_stop_from_on_start_is_refused_not_deadlocked() -> None:
    """spawn() or stop() from the on_start of a child its supervisor is starting
    would wait for itself; it raises a RuntimeError that says what to do."""
    seen: list[str] = []

    class Eager(Counter):
        async def on_start(self) -> None:
            for call in (
                self.ctx.system.spawn(Counter, name="late"),
                self.ctx.system.stop("root/a"),
            ):
                try:
                    await call
                except RuntimeError as exc:
                    seen.append(str(exc))

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a"), child("eager", Eager))) as system:
            assert system.ref("root/a").statistics().status == "running"
    assert len(seen) == 2
    assert all("from a handler instead" in text for text in seen)


async def test_an_actor_stopping_itself_takes_no_further_message() -> None:
    """After system.stop(own path) the actor finishes the current message and
    handles none of those queued behind it (they become dead letters)."""
    seen: list[object] = []

    class Quitter(Recorder):
        @runtime.handler
        async def record(self, msg: Record) -> None:
            self.seen.append(msg.item)
            if msg.item == "quit":
                await self.ctx.system.stop(self.ctx.path)

    spec = topology(child("q", Quitter, args={"seen": seen}))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/q")
            for item in ("a", "quit", "b", "c"):
                ref.tell_nowait(Record(item))
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["a", "quit"]
            assert [d.message for d in system.dead_letters] == [Record("b"), Record("c")]
