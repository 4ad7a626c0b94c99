"""Actors: dispatch, ask/tell, the context (timers, nursery, stop, topics), concurrency."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import structlog.testing
import trio
import trio.lowlevel
import trio.testing

import runtime
from runtime.errors import (
    ActorFailed,
    ActorNotFound,
    ActorStopped,
    AskTimeout,
    UnknownMessage,
)
from tests.actorkit import Add, Counter, Crash, Get, Hang, Record, Recorder, child, topology


@attrs.frozen
class Animal:
    name: str


@attrs.frozen
class Dog(Animal):
    pass


@attrs.frozen
class Puppy(Dog):
    pass


@attrs.frozen
class Cat(Animal):
    pass


class Zoo(runtime.Actor[None]):
    @runtime.handler
    async def animal(self, msg: Animal) -> str:
        return "animal"

    @runtime.handler
    async def dog(self, msg: Dog) -> str:
        return "dog"

    @runtime.handler
    async def number(self, msg: int | str) -> str:
        return f"scalar {msg}"


async def test_dispatch_is_by_exact_type_then_mro() -> None:
    """A message goes to its exact type's handler, else its nearest base's."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            zoo = await system.spawn(Zoo, name="zoo")
            assert await zoo.ask(Dog("rex")) == "dog"
            assert await zoo.ask(Puppy("bit")) == "dog"
            assert await zoo.ask(Cat("tom")) == "animal"
            assert await zoo.ask(3) == "scalar 3"
            assert await zoo.ask("x") == "scalar x"


async def test_unknown_message_is_refused_at_tell_and_ask() -> None:
    """A message type with no handler never reaches the mailbox."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            zoo = await system.spawn(Zoo, name="zoo")
            with pytest.raises(UnknownMessage, match="no handler for float"):
                await zoo.tell(1.5)
            with pytest.raises(TypeError):
                zoo.tell_nowait(1.5)
            with pytest.raises(UnknownMessage):
                await zoo.ask(b"bytes")
            assert zoo.statistics().mailbox_depth == 0


async def test_subclass_handlers_override_their_base() -> None:
    """A subclass's handler for a type replaces the inherited one."""

    class Loud(Zoo):
        @runtime.handler
        async def dog(self, msg: Dog) -> str:
            return "DOG"

    with trio.fail_after(5):
        async with runtime.open_system() as system:
            loud = await system.spawn(Loud, name="loud")
            assert await loud.ask(Dog("rex")) == "DOG"
            assert await loud.ask(Cat("tom")) == "animal"


def test_handler_must_be_async_and_annotated() -> None:
    """@handler refuses a plain function; an unannotated message parameter is
    reported when the class is first used."""
    with pytest.raises(TypeError, match="async def"):
        runtime.handler(lambda self, msg: None)  # type: ignore[arg-type]

    class Bad(runtime.Actor[None]):
        @runtime.handler
        async def h(self, msg) -> None:  # type: ignore[no-untyped-def]
            pass

    with pytest.raises(TypeError, match="annotate the message parameter"):
        Bad._handler_table()


async def test_state_is_built_from_the_state_class_and_args_reach_init() -> None:
    """self.state is S(); the spec's args are the constructor's keyword arguments."""

    @attrs.define
    class Notes:
        lines: list[str] = attrs.Factory(list)

    class Writer(runtime.Actor[Notes]):
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        @runtime.handler
        async def write(self, msg: str) -> list[str]:
            self.state.lines.append(self.prefix + msg)
            return self.state.lines

    with trio.fail_after(5):
        async with runtime.open_system() as system:
            ref = await system.spawn(Writer, name="w", args={"prefix": "> "})
            assert await ref.ask("a") == ["> a"]
            assert await ref.ask("b") == ["> a", "> b"]


async def test_ask_times_out_at_its_timeout_and_leaves_no_waiter(
    autojump_clock: trio.abc.Clock,
) -> None:
    """ask raises AskTimeout exactly at its timeout; pending_asks returns to 0."""
    with trio.fail_after(100):
        async with runtime.open_system(topology(child("a", shutdown_timeout=1))) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
            start = trio.current_time()
            with pytest.raises(AskTimeout, match=r"did not reply to Get within 2\.5s"):
                await ref.ask(Get(), timeout=2.5)
            assert trio.current_time() - start == pytest.approx(2.5)
            assert ref.statistics().pending_asks == 0
            assert isinstance(AskTimeout("x"), TimeoutError)


@attrs.frozen
class Later:
    delay: float


class Sleeper(runtime.Actor[None]):
    """Answers each request after its delay, several at once."""

    @runtime.handler
    async def later(self, msg: Later) -> float:
        await trio.sleep(msg.delay)
        return msg.delay


async def test_asks_with_different_timeouts_each_time_out_at_their_own(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Asks waiting at once with different timeouts (kept by one keeper per
    run, not a cancel scope each) time out each exactly at its own, in any
    order of asking; one answered in time gets its answer, and a reply that
    comes after its asker timed out goes nowhere."""
    spec = topology(child("s", Sleeper, concurrency=10, shutdown_timeout=1))
    outcomes: dict[str, object] = {}

    async def ask(ref: runtime.ActorRef[Any], name: str, delay: float, patience: float) -> None:
        start = trio.current_time()
        try:
            outcomes[name] = await ref.ask(Later(delay), timeout=patience)
        except AskTimeout:
            outcomes[name] = ("timed out", trio.current_time() - start)

    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/s")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, ref, "a", 50.0, 5.0)
                nursery.start_soon(ask, ref, "b", 50.0, 2.0)
                nursery.start_soon(ask, ref, "c", 7.0, 10.0)
                nursery.start_soon(ask, ref, "d", 50.0, 5.0)
                nursery.start_soon(ask, ref, "e", 50.0, 8.0)
            assert outcomes == {
                "a": ("timed out", 5.0),
                "b": ("timed out", 2.0),
                "c": 7.0,
                "d": ("timed out", 5.0),
                "e": ("timed out", 8.0),
            }
            assert ref.statistics().pending_asks == 0
            await trio.sleep(60)  # the handlers still running reply to nobody
            assert await ref.ask(Later(0.0), timeout=1) == 0.0


async def test_ask_timeouts_of_zero_and_infinity(autojump_clock: trio.abc.Clock) -> None:
    """A timeout of 0 times out before the actor runs, even when it would
    answer at once; ``inf`` waits as long as it takes; a negative one is
    refused."""
    with trio.fail_after(10_000):
        async with runtime.open_system(topology(child("s", Sleeper))) as system:
            ref = system.ref("root/s")
            with pytest.raises(AskTimeout):
                await ref.ask(Later(0.0), timeout=0)
            assert await ref.ask(Later(1000.0), timeout=math.inf) == 1000.0
            with pytest.raises(ValueError):
                await ref.ask(Later(0.0), timeout=-1)
            assert ref.statistics().pending_asks == 0


async def test_ask_timeout_covers_waiting_for_mailbox_space(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An ask blocked on a full mailbox still returns at its timeout."""
    spec = topology(child("a", mailbox=runtime.MailboxSpec(capacity=1), shutdown_timeout=1))
    with trio.fail_after(100):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
            await ref.tell(Add(1))
            with pytest.raises(AskTimeout):
                await ref.ask(Get(), timeout=3)
            assert trio.current_time() == pytest.approx(3, abs=0.01)
            assert ref.statistics().pending_asks == 0


async def test_cancelled_ask_leaves_no_waiter_and_the_reply_is_dropped() -> None:
    """Cancelling the asker removes its waiter; the actor still handles the
    message and its reply goes nowhere (no error, no hang)."""
    seen: list[object] = []

    class Slow(Recorder):
        @runtime.handler
        async def record(self, msg: Record) -> None:
            await trio.lowlevel.checkpoint()
            self.seen.append(msg.item)

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("s", Slow, args={"seen": seen}))) as system:
            ref = system.ref("root/s")
            with trio.CancelScope() as scope:
                scope.cancel()
                await ref.ask(Record(1))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.ask, Record(2))
                await trio.testing.wait_all_tasks_blocked(cushion=0)
                nursery.cancel_scope.cancel()
            assert ref.statistics().pending_asks == 0
            assert await ref.ask(Get()) == [2]  # queued before the cancel: still handled


async def test_ask_to_an_actor_that_stops_gets_actor_stopped() -> None:
    """Askers waiting when an actor stops for good get ActorStopped, never a hang."""
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a", shutdown_timeout=0))) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
            async with trio.open_nursery() as nursery:
                errors: list[BaseException] = []

                async def ask() -> None:
                    with pytest.raises(ActorStopped) as info:
                        await ref.ask(Get())
                    errors.append(info.value)

                nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                await system.stop("root/a")
            assert len(errors) == 1


async def test_handler_error_reaches_the_asker_as_actor_failed() -> None:
    """ActorFailed carries the handler's exception as __cause__."""
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("a"))) as system:
            with pytest.raises(ActorFailed, match="root/a failed handling Crash") as info:
                await system.ref("root/a").ask(Crash("bad input"))
            assert isinstance(info.value.__cause__, RuntimeError)
            assert str(info.value.__cause__) == "bad input"


async def test_ref_of_a_missing_path_raises_actor_not_found() -> None:
    """system.ref on an unknown path raises ActorNotFound (a LookupError)."""
    async with runtime.open_system() as system:
        with pytest.raises(LookupError):
            system.ref("root/nobody")
        with pytest.raises(ActorNotFound):
            await system.stop("root/nobody")


async def test_ctx_stop_ends_the_actor_after_the_current_message() -> None:
    """ctx.stop() lets the current handler finish, then on_stop runs."""
    journal: list[str] = []

    class Quitter(Counter):
        @runtime.handler
        async def add(self, msg: Add) -> int:
            self.ctx.stop()
            self.journal.append("handled")
            return msg.n

    spec = topology(child("q", Quitter, restart="transient", args={"journal": journal}))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/q")
            assert await ref.ask(Add(3)) == 3
            await trio.testing.wait_all_tasks_blocked()
            assert journal == ["start:q", "handled", "stop:q"]
            assert ref.statistics().status == "stopped"


async def test_on_start_failure_is_a_crash_and_the_policy_applies() -> None:
    """An on_start that raises counts as a crash: the child is restarted."""
    attempts: list[int] = []

    class Flaky(Counter):
        async def on_start(self) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise RuntimeError("not yet")

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("f", Flaky), max_restarts=5)) as system:
            await trio.testing.wait_all_tasks_blocked()
            ref = system.ref("root/f")
            assert await ref.ask(Add(1)) == 1
            assert ref.statistics().incarnation == 3


async def test_schedule_delivers_once_and_can_be_cancelled(autojump_clock: trio.abc.Clock) -> None:
    """schedule() sends the message after the delay; a cancelled timer never fires."""
    seen: list[tuple[object, float]] = []

    class Alarm(Recorder):
        async def on_start(self) -> None:
            self.ctx.schedule(5, Record("five"))
            self.ctx.schedule(7, Record("seven")).cancel()

        @runtime.handler
        async def record(self, msg: Record) -> None:
            self.seen.append((msg.item, trio.current_time()))

    with trio.fail_after(100):
        async with runtime.open_system(topology(child("a", Alarm, args={"seen": seen}))):
            await trio.sleep(20)
    assert seen == [("five", pytest.approx(5))]


async def test_schedule_every_keeps_a_fixed_rate_and_dies_with_the_incarnation(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Periodic timers fire every period and stop when the incarnation ends."""
    seen: list[tuple[object, float]] = []

    class Ticker(Recorder):
        async def on_start(self) -> None:
            self.ctx.schedule_every(2, Record("tick"))

        @runtime.handler
        async def record(self, msg: Record) -> None:
            self.seen.append((msg.item, trio.current_time()))

    with trio.fail_after(100):
        async with runtime.open_system(topology(child("t", Ticker, args={"seen": seen}))) as system:
            await trio.sleep(7)
            await system.stop("root/t")
            await trio.sleep(10)
    assert [t for _, t in seen] == [pytest.approx(2), pytest.approx(4), pytest.approx(6)]


async def test_ctx_nursery_lives_exactly_as_long_as_the_incarnation() -> None:
    """Background tasks are cancelled when the incarnation ends; a background
    task that raises crashes the actor."""
    lifetimes: list[str] = []

    class Background(Counter):
        async def on_start(self) -> None:
            self.ctx.nursery.start_soon(self.worker)

        async def worker(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                lifetimes.append(f"worker {self.ctx.path} ended")

        @runtime.handler
        async def crash(self, msg: Crash) -> None:
            async def fail() -> None:
                raise RuntimeError("background failure")

            self.ctx.nursery.start_soon(fail)

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("b", Background))) as system:
            ref = system.ref("root/b")
            await ref.tell(Crash())
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().incarnation == 2
            assert lifetimes == ["worker root/b ended"]
    assert lifetimes == ["worker root/b ended", "worker root/b ended"]


@attrs.frozen
class Deployed:
    env: str


async def test_publish_reaches_subscribers_of_the_matching_type() -> None:
    """Events go to subscribers whose type matches, through their mailboxes."""

    class Listener(Recorder):
        async def on_start(self) -> None:
            self.ctx.subscribe("deploys", Deployed)

        @runtime.handler
        async def deployed(self, msg: Deployed) -> None:
            self.seen.append(msg.env)

    class Announcer(Counter):
        @runtime.handler
        async def add(self, msg: Add) -> int:
            await self.ctx.publish("deploys", Deployed(f"env{msg.n}"))
            await self.ctx.publish("deploys", "not a Deployed: filtered out")
            await self.ctx.publish("other-topic", Deployed("nobody"))
            return msg.n

    one: list[object] = []
    two: list[object] = []
    spec = topology(
        child("l1", Listener, args={"seen": one}),
        child("l2", Listener, args={"seen": two}),
        child("a", Announcer),
    )
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            await system.ref("root/a").ask(Add(1))
            await system.ref("root/a").ask(Add(2))
            await trio.testing.wait_all_tasks_blocked()
            assert one == two == ["env1", "env2"]
            await system.stop("root/l2")
            await system.ref("root/a").ask(Add(3))
            await trio.testing.wait_all_tasks_blocked()
            assert one == ["env1", "env2", "env3"]
            assert two == ["env1", "env2"]


async def test_subscribe_needs_a_handler_for_the_type() -> None:
    """Subscribing to a type the actor cannot handle raises UnknownMessage."""

    class Deaf(Counter):
        async def on_start(self) -> None:
            self.ctx.subscribe("t", bytes)

    with pytest.raises(runtime.errors.SupervisorGaveUp) as info:
        async with runtime.open_system(topology(child("d", Deaf), max_restarts=0)):
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, UnknownMessage)


async def test_concurrency_handles_up_to_n_messages_at_once() -> None:
    """concurrency: 3 runs three handlers at once, never more."""
    running = 0
    peak = 0

    class Parallel(Counter):
        @runtime.handler
        async def add(self, msg: Add) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await trio.sleep(0.01)
            running -= 1
            return msg.n

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("p", Parallel, concurrency=3))) as system:
            ref = system.ref("root/p")
            async with trio.open_nursery() as nursery:
                for n in range(10):
                    nursery.start_soon(ref.ask, Add(n))
            assert peak == 3


async def test_concurrent_crash_fails_in_flight_askers_with_actor_stopped() -> None:
    """With concurrency > 1, a crash cancels the other in-flight handlers and
    their askers get ActorStopped; the actor restarts."""
    results: list[str] = []

    async def ask(ref: runtime.ActorRef, msg: object) -> None:
        try:
            await ref.ask(msg)
            results.append("ok")
        except ActorFailed:
            results.append("failed")
        except ActorStopped:
            results.append("stopped")

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("p", concurrency=2))) as system:
            ref = system.ref("root/p")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, ref, Hang())
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(ask, ref, Crash())
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(results) == ["failed", "stopped"]
            assert ref.statistics().incarnation == 2


async def test_lifecycle_events_are_logged() -> None:
    """Start, crash, restart and dead letters each log one event with the path."""
    with structlog.testing.capture_logs() as logs:
        spec = topology(child("a", mailbox=runtime.MailboxSpec(capacity=1, overflow="drop_newest")))
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await ref.tell(Crash())
            await trio.testing.wait_all_tasks_blocked()
            await ref.tell(Hang())
            ref.tell_nowait(Add(1))
            ref.tell_nowait(Add(2))  # dropped
            system.ref("root/a")._cell.request_stop()
            system.ref("root/a")._cell.scope.cancel()
    events = [(e["event"], e.get("path")) for e in logs]
    assert ("actor_started", "root/a") in events
    assert ("actor_crashed", "root/a") in events
    assert ("child_restarting", "root") in events
    assert ("dead_letter", "root/a") in events
    crash = next(e for e in logs if e["event"] == "actor_crashed")
    assert isinstance(crash["exc_info"], RuntimeError)


async def test_ctx_stop_from_a_background_task_stops_an_idle_actor() -> None:
    """ctx.stop() from a ctx.nursery task ends an idle actor at once; no
    message is needed to wake it."""

    class Quits(Counter):
        async def on_start(self) -> None:
            self.ctx.nursery.start_soon(self.quit_soon)

        async def quit_soon(self) -> None:
            await trio.lowlevel.checkpoint()
            self.ctx.stop()

    journal: list[str] = []
    spec = topology(child("q", Quits, restart="transient", args={"journal": journal}))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            await trio.testing.wait_all_tasks_blocked()
            assert system.ref("root/q").statistics().status == "stopped"
            assert journal == ["stop:q"]  # on_stop ran: a graceful stop


def test_redefining_a_handler_without_the_decorator_removes_it() -> None:
    """A subclass method that replaces a handler without @handler is no handler."""

    class Quiet(Zoo):
        async def dog(self, msg: Dog) -> str:  # not a handler any more
            return "quiet"

    assert Quiet._resolve(Dog) is Zoo.__dict__["animal"]


def test_two_handlers_for_one_type_in_one_class_is_an_error() -> None:
    """Two handlers for the same type in one class are refused, not shadowed."""

    class Twice(runtime.Actor[None]):
        @runtime.handler
        async def first(self, msg: Dog) -> None:
            pass

        @runtime.handler
        async def second(self, msg: Dog) -> None:
            pass

    with pytest.raises(TypeError, match="two handlers for Dog: first and second"):
        Twice._handler_table()


async def test_spawn_checks_the_spec_like_the_topology_loader() -> None:
    """spawn refuses args that do not fit __init__ before starting anything,
    and takes nested specs as dicts."""
    with trio.fail_after(5):
        async with runtime.open_system() as system:
            with pytest.raises(runtime.errors.TopologyError, match="args: do not fit"):
                await system.spawn(Counter, name="c", args={"jornal": []})
            assert system.tree().children == ()
            ref = await system.spawn(Counter, name="c", mailbox={"capacity": 3})
            assert ref.statistics().mailbox_capacity == 3


async def test_cancelled_spawn_leaves_no_child_behind() -> None:
    """A spawn cancelled while on_start runs removes the half-started child."""

    class SlowStart(Counter):
        async def on_start(self) -> None:
            await trio.sleep_forever()

    with trio.fail_after(5):
        async with runtime.open_system() as system:
            with trio.move_on_after(0.01):
                await system.spawn(SlowStart, name="slow")
            assert system.tree().children == ()
            with pytest.raises(ActorNotFound):
                system.ref("root/slow")
            ref = await system.spawn(Counter, name="slow")
            assert await ref.ask(Get()) == 0


async def test_an_actor_can_stop_itself_with_system_stop() -> None:
    """system.stop() on the caller's own path returns at once; the actor stops
    after its current message and is removed."""

    class SelfStopping(Counter):
        @runtime.handler
        async def add(self, msg: Add) -> int:
            await self.ctx.system.stop(self.ctx.path)
            return msg.n

    with trio.fail_after(5):
        async with runtime.open_system(topology(child("s", SelfStopping))) as system:
            ref = system.ref("root/s")
            assert await ref.ask(Add(2)) == 2
            await trio.testing.wait_all_tasks_blocked()
            assert ref.statistics().status == "stopped"
            with pytest.raises(ActorNotFound):
                system.ref("root/s")


async def test_stop_completes_even_if_its_caller_is_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Cancelling system.stop() does not leave a half-stopped actor in the tree."""
    with trio.fail_after(100):
        async with runtime.open_system(topology(child("a", shutdown_timeout=3))) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
            with trio.move_on_after(1):
                await system.stop("root/a")
            assert ref.statistics().status == "stopped"
            with pytest.raises(ActorNotFound):
                system.ref("root/a")


async def test_a_sender_that_never_waits_still_yields_to_other_tasks() -> None:
    """tell yields to the scheduler every so often even when it never has to
    wait (here: a drop_newest mailbox that is always full), so a tell loop
    cannot starve the other tasks."""
    spec = topology(
        child(
            "a",
            mailbox=runtime.MailboxSpec(capacity=1, overflow="drop_newest"),
            shutdown_timeout=0,
        )
    )
    turns = 0

    async def bystander() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = system.ref("root/a")
            await ref.tell(Hang())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bystander)
                await trio.lowlevel.checkpoint()
                turns = 0
                for n in range(1000):
                    await ref.tell(Add(n))
                nursery.cancel_scope.cancel()
            assert turns >= 10  # about one turn per 64 tells; none without the yield


async def test_unsubscribe_stops_delivery() -> None:
    """After ctx.unsubscribe(topic) the actor gets no more events of it."""
    seen: list[object] = []

    class Fickle(Recorder):
        async def on_start(self) -> None:
            self.ctx.subscribe("deploys", Deployed)

        @runtime.handler
        async def deployed(self, msg: Deployed) -> None:
            self.seen.append(msg.env)
            self.ctx.unsubscribe("deploys")

    class Announcer(Counter):
        @runtime.handler
        async def add(self, msg: Add) -> int:
            await self.ctx.publish("deploys", Deployed(f"env{msg.n}"))
            return msg.n

    spec = topology(child("f", Fickle, args={"seen": seen}), child("a", Announcer))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            for n in range(3):
                await system.ref("root/a").ask(Add(n))
                await trio.testing.wait_all_tasks_blocked()
    assert seen == ["env0"]


@attrs.frozen
class Batch:
    size: int


class Batcher(runtime.Actor[None]):
    """Works through a batch an item a second, wrapping up when asked to stop."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    @runtime.handler
    async def batch(self, msg: Batch) -> None:
        for n in range(msg.size):
            if self.ctx.stopping:
                return
            self.seen.append(n)
            await trio.sleep(1)


async def test_a_long_handler_sees_the_stop_coming(autojump_clock: trio.abc.Clock) -> None:
    """ctx.stopping turns true when a graceful stop is asked, so a handler
    working through a batch can finish early instead of being cancelled."""
    seen: list[int] = []
    async with runtime.open_system(store="memory://") as system:
        ref = await system.spawn(Batcher, name="b", shutdown_timeout=60, args={"seen": seen})
        await ref.tell(Batch(1000))
        await trio.sleep(9.5)
    assert seen == list(range(10))  # stopped at the next item, long before 60 s
    assert trio.current_time() < 15
