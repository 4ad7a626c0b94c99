"""Edge cases of resources and the limiter: breakers, restarts, reloads,
inline asks, statistics: what a review against the design found, kept as
regression tests."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

import runtime
from runtime import (
    ChildSpec,
    Limiter,
    RateSpec,
    ResourceSpec,
    SupervisorSpec,
    Topology,
    open_system,
)
from runtime.errors import ActorStopped, AskTimeout, CircuitOpen, ResourceError
from tests import resource_kinds
from tests.resource_kinds import Backend, Break, Greeting, Ping
from tests.test_resources import _topology


async def _crash(ref: runtime.ActorRef[Any], reason: str = "gone") -> None:
    with pytest.raises(ResourceError):
        await ref.ask(Break(reason))


# -- the resource's actor breaker ----------------------------------------------


async def test_a_failed_trial_request_does_not_leave_the_circuit_stuck(
    autojump_clock: trio.abc.Clock,
) -> None:
    """After the actor circuit opens, the half-open incarnation's first
    request fails at the backend (answered with its error, no crash). The
    resource must not refuse every request for ever afterwards."""
    backend = Backend()
    with trio.fail_after(10_000):
        async with open_system(
            _topology(backend, circuit_breaker={"failures": 1, "reset_timeout": "10s"}),
            store="memory://",
        ) as system:
            ref = system.resource("echo")
            await _crash(ref)
            with pytest.raises(CircuitOpen):
                await ref.ask(Ping(0))
            await trio.sleep(11)  # half-open: a new incarnation runs
            assert ref.statistics().status == "running"
            backend.failing = "permanent"
            with pytest.raises(ValueError, match="backend refused"):
                await ref.ask(Ping("trial"))  # the trial: answered with its error
            backend.failing = None
            await trio.sleep(1000)  # many reset_timeouts later
            assert await ref.ask(Ping("later"), timeout=5) == "later"


async def test_requests_served_between_crashes_reset_the_crash_count(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The actor breaker opens after ``failures`` crashes *in a row*; many
    requests served successfully between two crashes make them not
    consecutive."""
    backend = Backend()
    with trio.fail_after(10_000):
        async with open_system(
            _topology(backend, circuit_breaker={"failures": 2, "reset_timeout": "1h"}),
            store="memory://",
        ) as system:
            ref = system.resource("echo")
            await _crash(ref)
            await trio.sleep(5)  # the restart backoff
            assert ref.statistics().incarnation == 2
            for n in range(100):
                assert await ref.ask(Ping(n)) == n
            await trio.sleep(120)  # past the supervisor's intensity window too
            await _crash(ref)
            await trio.sleep(5)
            assert ref.statistics().status == "running"
            assert ref.statistics().incarnation == 3


async def test_statistics_show_the_open_circuit_of_a_crashed_resource(
    autojump_clock: trio.abc.Clock,
) -> None:
    """ResourceSpec says crashes 'trip the same breaker'; once they have,
    resource_statistics (and the CLI summary built on it) must not report
    the breaker closed while callers get CircuitOpen."""
    backend = Backend()
    with trio.fail_after(10_000):
        async with open_system(
            _topology(backend, circuit_breaker={"failures": 1, "reset_timeout": "1h"}),
            store="memory://",
        ) as system:
            ref = system.resource("echo")
            await _crash(ref)
            with pytest.raises(CircuitOpen):
                await ref.ask(Ping(0))
            stats = system.resource_statistics()["echo"]
            # The actor's own breaker (crashes), apart from the limiter's (backend failures).
            assert (stats.status, stats.circuit) == ("circuit_open", "open")
            assert stats.limiter.breaker == "closed"


# -- crashes and stops while requests run in the askers' tasks ---------------------


@attrs.frozen
class Slow:
    pass


@attrs.frozen
class Trigger:
    pass


class Watched(runtime.Resource):
    """A resource whose background task (a watcher of its backend) raises."""

    async def on_start(self) -> None:
        self.gone = trio.Event()
        self.ctx.nursery.start_soon(self._watch)

    async def _watch(self) -> None:
        await self.gone.wait()
        raise ConnectionError("the server process exited")

    @runtime.handler
    async def slow(self, msg: Slow) -> None:
        await trio.sleep_forever()

    @runtime.handler
    async def trigger(self, msg: Trigger) -> None:
        self.gone.set()


async def test_a_background_crash_answers_requests_in_flight_with_its_reason(
    autojump_clock: trio.abc.Clock,
) -> None:
    """docs/resources.md: 'if the resource crashes, the request is cancelled
    and its asker gets a ResourceError naming why'."""
    topology = Topology(
        system="res",
        resources={"watched": ResourceSpec(kind=Watched, retry=None)},
        supervisor=SupervisorSpec(name="root"),
    )
    errors: list[BaseException] = []
    with trio.fail_after(100):
        async with open_system(topology, store="memory://") as system:
            ref = system.resource("watched")

            async def in_flight() -> None:
                try:
                    await ref.ask(Slow(), timeout=50)
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                await trio.testing.wait_all_tasks_blocked()
                await ref.ask(Trigger())
    assert len(errors) == 1
    assert isinstance(errors[0], ResourceError), repr(errors[0])
    assert "the server process exited" in str(errors[0])


async def test_a_reload_restart_is_bounded_by_shutdown_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """New options restart the resource; requests in flight get
    ``shutdown_timeout`` to finish, as for any stop, not for ever."""
    backend = Backend(delay=10_000)
    topology = _topology(backend, timeout=None, shutdown_timeout=1)
    errors: list[BaseException] = []
    with trio.fail_after(100_000):
        async with open_system(topology, store="memory://") as system:
            ref = system.resource("echo")

            async def hung() -> None:
                try:
                    await ref.ask(Ping("hung"), timeout=50_000)
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hung)
                await trio.testing.wait_all_tasks_blocked()
                spec = topology.resources["echo"]
                system.reload(
                    attrs.evolve(
                        topology,
                        resources={
                            "echo": attrs.evolve(
                                spec, options={"backend": backend, "greeting": "salut"}
                            )
                        },
                    )
                )
                # shutdown_timeout (1 s) plus the restart backoff are long past.
                assert await ref.ask(Greeting(), timeout=30) == "salut"
                nursery.cancel_scope.cancel()


async def test_a_resource_stopped_for_good_fails_inline_and_later_requests(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``system.stop('resources/echo')``: a request in flight is cancelled
    after shutdown_timeout with ActorStopped, later asks get
    ActorStopped at once, and the counters come back to zero."""
    backend = Backend(delay=10_000)
    errors: list[BaseException] = []
    with trio.fail_after(1000):
        async with open_system(_topology(backend, shutdown_timeout=2), store="memory://") as system:
            ref = system.resource("echo")

            async def in_flight() -> None:
                try:
                    await ref.ask(Ping("x"), timeout=500)
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                await trio.testing.wait_all_tasks_blocked()
                assert ref.statistics().pending_asks == 1
                assert not system.is_idle()
                started = trio.current_time()
                await system.stop("resources/echo")
                assert trio.current_time() == pytest.approx(started + 2)
            assert [type(e) for e in errors] == [ActorStopped]
            assert backend.running == 0  # killed after shutdown_timeout: no on_stop
            stats = ref.statistics()
            assert (stats.status, stats.pending_asks) == ("stopped", 0)
            with pytest.raises(ActorStopped):
                await ref.ask(Ping("after"))


async def test_a_stopped_resource_is_reported_as_stopped(autojump_clock: trio.abc.Clock) -> None:
    """After ``system.stop('resources/echo')`` the errors and the reload
    report say the resource was stopped, not that it is new or missing."""
    backend = Backend()
    topology = _topology(backend)
    with trio.fail_after(100):
        async with open_system(topology, store="memory://") as system:
            await system.stop("resources/echo")
            changes = system.reload(topology)
            assert not any("added" in change for change in changes), changes
            with pytest.raises(runtime.errors.ActorNotFound) as info:
                system.resource("echo")
            assert "declares: echo" not in str(info.value), info.value


# -- the limiter ------------------------------------------------------------------


async def test_configure_one_limit_keeps_the_others(autojump_clock: trio.abc.Clock) -> None:
    """The documented ``limiter.configure(max_concurrency=4)`` must not
    silently drop the rate limit, the timeout, the retries and the breaker."""
    limiter = Limiter(
        max_concurrency=2,
        rate=RateSpec(requests=60, period=60),
        timeout=10,
        retry=runtime.RetrySpec(attempts=3),
        failures=5,
        reset_timeout=30,
    )
    limiter.configure(max_concurrency=4)
    stats = limiter.statistics()
    assert stats.max_concurrency == 4
    assert stats.rate == RateSpec(requests=60, period=60)
    assert stats.breaker == "closed"
    assert limiter.timeout == 10


async def _open_breaker(limiter: Limiter) -> None:
    async def down() -> None:
        raise ConnectionRefusedError("down")

    with pytest.raises(ConnectionRefusedError):
        await limiter.call(down)
    assert limiter.breaker == "open"


async def test_a_cancelled_trial_that_ran_a_nursery_frees_the_trial(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Cancelling the half-open trial lets the next call be the trial, also
    when the backend call had tasks of its own (httpx, anyio, mcp do)."""
    limiter = Limiter(failures=1, reset_timeout=10)
    with trio.fail_after(100):
        await _open_breaker(limiter)
        await trio.sleep(10)
        assert limiter.breaker == "half_open"

        async def with_tasks() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep_forever()

        with trio.move_on_after(1):
            await limiter.call(with_tasks)  # the trial, cancelled by its caller

        async def up() -> str:
            return "up"

        assert await limiter.call(up) == "up"
        assert limiter.breaker == "closed"


async def test_a_plainly_cancelled_trial_frees_the_trial(autojump_clock: trio.abc.Clock) -> None:
    """The same without a nursery in the call: the next call is the trial."""
    limiter = Limiter(failures=1, reset_timeout=10)
    with trio.fail_after(100):
        await _open_breaker(limiter)
        await trio.sleep(10)
        with trio.move_on_after(1):
            await limiter.call(trio.sleep_forever)

        async def up() -> str:
            return "up"

        assert await limiter.call(up) == "up"
        assert limiter.breaker == "closed"


async def test_removing_the_breaker_during_a_trial_leaves_no_stale_trial(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Reload removes the breaker while the half-open trial runs, then a
    later reload adds it back: it must work as a fresh breaker."""
    limiter = Limiter(failures=1, reset_timeout=10)
    release = trio.Event()

    async def slow_trial() -> str:
        await release.wait()
        return "done"

    with trio.fail_after(1000):
        await _open_breaker(limiter)
        await trio.sleep(10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.call, slow_trial)
            await trio.testing.wait_all_tasks_blocked()
            limiter.configure(failures=None)
            release.set()
        limiter.configure(failures=1, reset_timeout=10)
        await _open_breaker(limiter)
        await trio.sleep(10)
        assert limiter.breaker == "half_open"

        async def up() -> str:
            return "up"

        assert await limiter.call(up) == "up"


async def test_rate_waits_counts_every_admission_that_waited_for_the_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Two calls fill a 2-per-10s window; two more wait for it and are both
    admitted at t=10: both waited for the rate window."""
    limiter = Limiter(rate=RateSpec(requests=2, period=10))

    async def work() -> None:
        pass

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(limiter.call, work)
    stats = limiter.statistics()
    assert (stats.admitted, stats.waited) == (4, 2)
    assert stats.rate_waits == 2


# -- postgres: inline asks run in the asker's task --------------------------------


@pytest.mark.postgres
async def test_postgres_serves_an_asker_spawned_before_the_system_opened() -> None:
    """An asker whose task was started before ``open_system`` (a server's
    request task, handed the system later) gets its answer, as it did when
    requests ran in the resource's own task."""
    from runtime.resources.postgres import FetchVal
    from tests.conftest import POSTGRES_URL

    topology = Topology(
        system="pg",
        resources={"db": ResourceSpec(kind="postgres", options={"dsn": POSTGRES_URL})},
        supervisor=SupervisorSpec(name="root"),
    )
    send, receive = trio.open_memory_channel[runtime.ActorRef[Any]](1)
    results: list[object] = []
    answered = trio.Event()

    async def worker(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        ref = await receive.receive()
        try:
            results.append(await ref.ask(FetchVal("select 1"), timeout=10))
        except Exception as exc:
            results.append(exc)
        answered.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as outside:
            await outside.start(worker)
            async with open_system(topology, store="memory://") as system:
                await send.send(system.resource("db"))
                await answered.wait()
    assert results == [1], results


# -- lifetime ------------------------------------------------------------------------


class Refuses(runtime.Actor[None]):
    """An agent whose every start fails."""

    async def on_start(self) -> None:
        raise RuntimeError("agent cannot start")

    @runtime.handler
    async def ping(self, msg: Ping) -> None:
        pass


class NoStart(runtime.Resource):
    """A resource whose backend is never there."""

    async def on_start(self) -> None:
        raise ConnectionRefusedError("backend down")

    @runtime.handler
    async def ping(self, msg: Ping) -> None:
        pass


async def test_a_root_that_fails_to_start_stops_the_resources(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The root gives up (an agent that never starts): open_system raises,
    and the resources are stopped after it (on_stop runs)."""
    backend = Backend()
    agent = ChildSpec(name="agent", actor=Refuses)
    with trio.fail_after(1000):
        with pytest.raises(runtime.errors.SupervisorGaveUp):
            async with open_system(_topology(backend, agent), store="memory://"):
                await trio.sleep_forever()
    assert backend.journal == ["start:echo", "stop:echo"]


async def test_a_resource_that_never_starts_fails_the_system(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Without a breaker, a resource whose start always fails makes the
    resources supervisor give up: open_system raises naming it, and the
    agents are stopped first."""
    journal: list[str] = []
    topology = Topology(
        system="res",
        resources={"db": ResourceSpec(kind=NoStart, circuit_breaker=None)},
        supervisor=SupervisorSpec(
            name="root",
            children=[ChildSpec(name="agent", actor=Agent, args={"journal": journal})],
        ),
    )
    with trio.fail_after(1000):
        with pytest.raises(runtime.errors.SupervisorGaveUp, match="resources/db"):
            async with open_system(topology, store="memory://"):
                await trio.sleep_forever()
    assert journal == ["agent start", "agent stop"]


class Agent(runtime.Actor[None]):
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def on_start(self) -> None:
        self.journal.append("agent start")

    async def on_stop(self) -> None:
        self.journal.append("agent stop")

    @runtime.handler
    async def ping(self, msg: Ping) -> None:
        pass


async def test_resources_giving_up_while_running_ends_the_system(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A crash loop past the resources supervisor's intensity stops the
    agents and raises SupervisorGaveUp out of open_system."""
    backend = Backend()
    journal: list[str] = []
    agent = ChildSpec(name="agent", actor=Agent, args={"journal": journal})
    with trio.fail_after(1000):
        with pytest.raises(runtime.errors.SupervisorGaveUp, match="resources"):
            async with open_system(
                _topology(backend, agent, circuit_breaker=None), store="memory://"
            ) as system:
                ref = system.resource("echo")
                for _ in range(20):
                    with pytest.raises((ResourceError, ActorStopped)):
                        await ref.ask(Break("gone"), timeout=5)
                    await trio.sleep(8)  # past the restart backoff
                pytest.fail("the system must have stopped")
    assert journal == ["agent start", "agent stop"]


class SlowExit(runtime.Resource):
    """A resource whose backend takes 2 s to close when an incarnation ends
    (a server process terminated, a pool closed)."""

    async def on_start(self) -> None:
        self.closed = False
        self.ctx.nursery.start_soon(self._hold)

    async def _hold(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(2)

    @runtime.handler
    async def ping(self, msg: Ping) -> Any:
        return await self.call(self._backend, msg.value)

    async def _backend(self, value: Any) -> Any:
        await trio.lowlevel.checkpoint()  # any real backend call yields
        if self.closed:
            raise ResourceError("the session is closed", resource=self.name)
        return value

    @runtime.handler
    async def break_(self, msg: Break) -> None:
        self.closed = True  # the backend is gone: this incarnation cannot serve
        self.fail(ResourceError(msg.reason, resource=self.name, transient=True))


async def test_a_request_made_while_a_crash_unwinds_waits_for_the_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    """docs/resources.md: while the resource restarts, asks wait in its
    mailbox for the new incarnation. A request made after the crash, while
    the old incarnation is still closing its backend, is one of those."""
    topology = Topology(
        system="res",
        resources={"slow": ResourceSpec(kind=SlowExit, retry=None)},
        supervisor=SupervisorSpec(name="root"),
    )
    with trio.fail_after(100):
        async with open_system(topology, store="memory://") as system:
            ref = system.resource("slow")
            await ref.ask(Break("the server exited"))
            await trio.testing.wait_all_tasks_blocked()  # the crash is unwinding
            assert ref.statistics().incarnation == 1
            assert await ref.ask(Ping("after"), timeout=30) == "after"
            assert ref.statistics().incarnation == 2


async def test_requests_cut_short_by_a_crash_count_as_failures(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A request in flight when the resource crashes is answered with an
    error: the statistics count it as a request that failed."""
    backend = Backend(delay=5.0)
    with trio.fail_after(100):
        async with open_system(_topology(backend), store="memory://") as system:
            ref = system.resource("echo")
            async with trio.open_nursery() as nursery:

                async def lost() -> None:
                    with pytest.raises(ResourceError):
                        await ref.ask(Ping("lost"))

                nursery.start_soon(lost)
                await trio.testing.wait_all_tasks_blocked()
                await _crash(ref)
            stats = system.resource_statistics()["echo"]
    assert (stats.requests, stats.failures) == (2, 2)  # the lost ping and the Break


# -- the timeouts of a request served in its asker's task ------------------------


@attrs.frozen
class Shielded:
    value: Any


class ShieldingEcho(runtime.Resource):
    """Runs its backend call shielded from the ask (as a handler may, to
    finish what it started); the limiter's timeout still bounds it."""

    Options = resource_kinds.EchoOptions

    @runtime.handler
    async def shielded(self, msg: Shielded) -> Any:
        with trio.CancelScope(shield=True):
            return await self.call(self.options.backend.serve, msg.value)


@pytest.mark.parametrize("limiter_timeout", [None, 50.0])
async def test_an_inline_ask_times_out_at_its_own_timeout(
    autojump_clock: trio.abc.Clock, limiter_timeout: float | None
) -> None:
    """With or without a limiter timeout (later than the ask's), an ask
    whose backend call hangs gets ``AskTimeout`` exactly at its own
    timeout; its call is cancelled, not counted as the limiter's timeout,
    and the resource goes on serving."""
    backend = Backend(delay=1000)
    with trio.fail_after(10_000):
        async with open_system(
            _topology(backend, timeout=limiter_timeout), store="memory://"
        ) as system:
            ref = system.resource("echo")
            start = trio.current_time()
            with pytest.raises(AskTimeout, match=r"within 3\.5s"):
                await ref.ask(Ping("slow"), timeout=3.5)
            assert trio.current_time() - start == 3.5
            stats = system.resource_statistics()["echo"]
            assert (backend.running, stats.limiter.timeouts, stats.limiter.tokens_in_use) == (
                0,
                0,
                0,
            )
            backend.delay = 0
            assert await ref.ask(Ping("next"), timeout=1) == "next"
            assert ref.statistics().pending_asks == 0


async def test_the_limiter_timeout_ends_an_attempt_before_a_later_ask_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A limiter timeout shorter than the ask's ends the attempt with
    ``TimeoutError`` at its own time (counted), not the ask's."""
    backend = Backend(delay=1000)
    with trio.fail_after(10_000):
        async with open_system(_topology(backend, timeout=2), store="memory://") as system:
            ref = system.resource("echo")
            start = trio.current_time()
            with pytest.raises(TimeoutError) as caught:
                await ref.ask(Ping("slow"), timeout=30)
            assert not isinstance(caught.value, AskTimeout)
            assert trio.current_time() - start == 2
            assert system.resource_statistics()["echo"].limiter.timeouts == 1


async def test_a_call_shielded_from_its_ask_keeps_the_limiter_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The ask's scope cannot end a call its handler shields; the limiter's
    own timeout (later than the ask's) then still ends the attempt."""
    backend = Backend(delay=1000)
    topology = Topology(
        system="res",
        resources={
            "echo": ResourceSpec(
                kind=ShieldingEcho, options={"backend": backend}, timeout=5, retry=None
            )
        },
    )
    with trio.fail_after(10_000):
        async with open_system(topology, store="memory://") as system:
            ref = system.resource("echo")
            start = trio.current_time()
            with pytest.raises(TimeoutError):
                await ref.ask(Shielded("slow"), timeout=3)
            assert trio.current_time() - start == 5
            assert system.resource_statistics()["echo"].limiter.timeouts == 1
