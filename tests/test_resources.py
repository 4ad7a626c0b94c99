"""Resource actors: declared in the topology, reached by name, limited,
supervised; failed requests answered with their error, crashes restarted."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

import runtime
from runtime import ChildSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from runtime.errors import (
    ActorNotFound,
    CircuitOpen,
    ResourceError,
    TopologyError,
)
from tests.resource_kinds import Backend, Break, Echo, Greeting, Ping


def _topology(backend: Backend, *children: ChildSpec, **fields: Any) -> Topology:
    fields.setdefault("retry", None)
    return Topology(
        system="res",
        resources={"echo": ResourceSpec(kind=Echo, options={"backend": backend}, **fields)},
        supervisor=SupervisorSpec(name="root", children=list(children)),
    )


@attrs.frozen
class Use:
    value: Any


class Agent(runtime.Actor[None]):
    """Uses the echo resource in on_start, a handler and on_stop."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def on_start(self) -> None:
        self.journal.append(f"agent start: {await self.ctx.resource('echo').ask(Ping('a'))}")

    async def on_stop(self) -> None:
        self.journal.append(f"agent stop: {await self.ctx.resource('echo').ask(Ping('z'))}")

    @runtime.handler
    async def use(self, msg: Use) -> Any:
        return await self.ctx.resource("echo").ask(Ping(msg.value))


async def test_agents_reach_resources_which_outlive_them() -> None:
    """Resources start before the agents and stop after them, so agents can
    use them in on_start and on_stop; ``ctx.resource`` and
    ``system.resource`` name them, ``resources/<name>`` is their path."""
    backend = Backend()
    agent = ChildSpec(name="agent", actor=Agent, args={"journal": backend.journal})
    with trio.fail_after(10):
        async with open_system(_topology(backend, agent), store="memory://") as system:
            assert await system.ref("root/agent").ask(Use(5)) == 5
            ref = system.resource("echo")
            assert ref.path == "resources/echo" and ref == system.ref("resources/echo")
            assert await ref.ask(Greeting()) == "hello"
            with pytest.raises(ActorNotFound, match=r"no resource named 'llm'.*declares: echo"):
                system.resource("llm")
            tree = system.resource_tree()
            assert tree is not None and tree.path == "resources"
            assert [node.path for node in tree.children] == ["resources/echo"]
    assert backend.journal == ["start:echo", "agent start: a", "agent stop: z", "stop:echo"]


async def test_concurrency_limit_holds_across_agents(autojump_clock: trio.abc.Clock) -> None:
    """100 requests from 20 tasks into max_concurrency 2 peak at exactly 2,
    and all are answered."""
    backend = Backend(delay=1.0)
    async with open_system(_topology(backend), store="memory://") as system:
        ref = system.resource("echo")
        answers: list[int] = []

        async def agent(first: int) -> None:
            for n in range(first, first + 5):
                answers.append(await ref.ask(Ping(n), timeout=1000))

        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                for task in range(20):
                    nursery.start_soon(agent, task * 5)
        assert backend.peak == 2
        assert sorted(answers) == list(range(100))
        stats = system.resource_statistics()["echo"]
        assert stats.limiter.tokens_in_use == 0 and stats.limiter.max_concurrency == 2
        assert stats.requests == 100 and stats.failures == 0
        assert stats.backend == {"running": 0}


async def test_high_priority_requests_overtake_waiting_ones(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An ask's priority carries into the limiter: waiting low requests are
    overtaken by a later high one, FIFO within a priority."""
    backend = Backend(delay=1.0)
    async with open_system(_topology(backend, max_concurrency=1), store="memory://") as system:
        ref = system.resource("echo")
        async with trio.open_nursery() as nursery:
            for value, priority in [
                ("first", "normal"),
                ("low1", "low"),
                ("low2", "low"),
                ("normal", "normal"),
                ("high", "high"),
            ]:
                nursery.start_soon(lambda v=value, p=priority: ref.ask(Ping(v), priority=p))
                await trio.testing.wait_all_tasks_blocked()
    assert backend.served == ["first", "high", "normal", "low1", "low2"]


async def test_rate_limit_holds_in_every_window(autojump_clock: trio.abc.Clock) -> None:
    """200 requests against 10 per minute: at most 10 admissions in any
    minute starting at an admission, and no idle minute."""
    backend = Backend()
    admitted = backend.started_at
    async with open_system(
        _topology(backend, rate={"requests": 10, "period": "1m"}), store="memory://"
    ) as system:
        ref = system.resource("echo")
        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(lambda n=n: ref.ask(Ping(n), timeout=10_000))
    assert len(admitted) == 200
    for start in admitted:
        assert sum(start <= t < start + 60 for t in admitted) <= 10
    assert admitted[-1] - admitted[0] == pytest.approx(19 * 60)


async def test_failed_requests_go_back_to_the_caller(autojump_clock: trio.abc.Clock) -> None:
    """A request's error is raised to its asker as itself; the resource goes
    on serving, in the same incarnation."""
    backend = Backend(failing="permanent")
    async with open_system(_topology(backend), store="memory://") as system:
        ref = system.resource("echo")
        with pytest.raises(ValueError, match="backend refused 1"):
            await ref.ask(Ping(1))
        backend.failing = None
        assert await ref.ask(Ping(2)) == 2
        assert ref.statistics().incarnation == 1
        stats = system.resource_statistics()["echo"]
        assert (stats.requests, stats.failures) == (2, 1)
        # A permanent error is the request's fault, not the backend's.
        assert stats.limiter.breaker == "closed"


async def test_outage_opens_the_breaker_and_callers_fail_fast(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Transient failures are retried; once ``failures`` in a row have
    failed, callers get CircuitOpen at once; after ``reset_timeout`` one
    trial goes through and closes the breaker."""
    backend = Backend(failing="transient")
    async with open_system(
        _topology(
            backend,
            retry={"attempts": 2, "initial": "1s"},
            circuit_breaker={"failures": 4, "reset_timeout": "30s"},
        ),
        store="memory://",
    ) as system:
        ref = system.resource("echo")
        for _ in range(2):  # two requests, two attempts each
            with pytest.raises(ConnectionResetError):
                await ref.ask(Ping(0))
        before = trio.current_time()
        with pytest.raises(CircuitOpen):
            await ref.ask(Ping(0))
        assert trio.current_time() == before  # fast: no attempt, no backoff
        assert system.resource_statistics()["echo"].limiter.breaker == "open"
        assert ref.statistics().incarnation == 1  # the actor itself never crashed
        backend.failing = None
        await trio.sleep(30)
        assert await ref.ask(Ping("trial")) == "trial"
        assert system.resource_statistics()["echo"].limiter.breaker == "closed"


async def test_a_broken_backend_restarts_the_resource(autojump_clock: trio.abc.Clock) -> None:
    """``fail`` crashes the resource: callers in flight get a ResourceError
    naming the reason, its supervisor restarts it, and the limiter (rate
    window, breaker) carries over to the new incarnation."""
    backend = Backend(delay=5.0)
    async with open_system(
        _topology(backend, rate={"requests": 3, "period": "1m"}), store="memory://"
    ) as system:
        ref = system.resource("echo")
        async with trio.open_nursery() as nursery:
            errors: list[BaseException] = []

            async def in_flight() -> None:
                try:
                    await ref.ask(Ping("lost"))
                except ResourceError as exc:
                    errors.append(exc)

            nursery.start_soon(in_flight)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ResourceError, match="server went away"):
                await ref.ask(Break("server went away"))
        assert len(errors) == 1 and "server went away" in str(errors[0])
        await trio.sleep(1)  # the restart backoff
        assert ref.statistics().incarnation == 2 and backend.starts == 2
        # The lost ping's admission is still in this minute's window.
        assert system.resource_statistics()["echo"].limiter.in_window == 1
        assert await ref.ask(Ping("after")) == "after"


async def test_a_request_told_not_asked_that_fails_is_logged(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A told request has nobody to answer: its failure is counted and the
    resource goes on."""
    backend = Backend(failing="permanent")
    async with open_system(_topology(backend), store="memory://") as system:
        ref = system.resource("echo")
        await ref.tell(Ping(1))
        await system.wait_until_idle()
        assert system.resource_statistics()["echo"].failures == 1
        assert ref.statistics().incarnation == 1


YAML = """\
system: res
resources:
  echo:
    kind: tests.resource_kinds:Echo
    max_concurrency: 3
    rate: {requests: 60, period: 1m}
    timeout: 2s
    retry: {attempts: 4, initial: 100ms}
    circuit_breaker: {failures: 3, reset_timeout: 10s}
    greeting: bonjour
supervisor: {name: root}
"""


async def test_resources_from_yaml() -> None:
    """The common fields and the kind's own options sit side by side."""
    topology = runtime.parse_topology(YAML)
    spec = topology.resources["echo"]
    assert spec.kind is Echo and spec.concurrency == 3
    assert spec.rate == runtime.RateSpec(requests=60, period=60.0)
    assert spec.timeout == 2.0 and spec.retry == runtime.RetrySpec(attempts=4, initial=0.1)
    assert spec.options.greeting == "bonjour"
    async with open_system(topology, store="memory://") as system:
        assert await system.resource("echo").ask(Greeting()) == "bonjour"
        limiter = system.resource_statistics()["echo"].limiter
        assert limiter.max_concurrency == 3 and limiter.breaker == "closed"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{kind: redis}", "t.yaml:3: resources.db.kind: expected postgres, llm, mcp or an import"),
        (
            "{kind: 'tests.sample_actors:Echo'}",
            "resources.db.kind: tests.sample_actors:Echo is not a subclass of runtime.Resource",
        ),
        (
            "{kind: 'tests.resource_kinds:Echo', colour: red}",
            "t.yaml:3: resources.db.colour: unknown key 'colour'",
        ),
        (
            "{kind: 'tests.resource_kinds:Echo', rate: {requests: 0, period: 1m}}",
            "t.yaml:3: resources.db.rate.requests: expected a whole number of at least 1",
        ),
        (
            "{kind: 'tests.resource_kinds:Echo', max_concurrency: 0, timeout: soon}",
            "resources.db.max_concurrency: expected a whole number of at least 1",
        ),
        ("{kind: 'tests.resource_kinds:Echo', greeting: [1]}", "resources.db.greeting: expected"),
        ("[1, 2]", "t.yaml:3: resources.db: expected a mapping with kind:"),
    ],
    ids=[
        "unknown-kind",
        "not-a-resource",
        "unknown-key",
        "bad-rate",
        "two-bad",
        "bad-option",
        "list",
    ],
)
def test_bad_resource_entries_name_line_and_field(entry: str, expected: str) -> None:
    text = f"system: res\nresources:\n  db: {entry}\nsupervisor: {{name: root}}\n"
    with pytest.raises(TopologyError) as info:
        runtime.parse_topology(text, "t.yaml")
    assert any(expected in error for error in info.value.errors), info.value.errors


async def test_reload_changes_limits_live_and_restarts_on_new_options(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``reload``: a higher max_concurrency admits waiting requests at once,
    new options restart the resource, and what cannot change live is
    reported, not applied."""
    backend = Backend(delay=10.0)
    topology = _topology(backend, max_concurrency=1)
    async with open_system(topology, store="memory://") as system:
        ref = system.resource("echo")
        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(lambda n=n: ref.ask(Ping(n), timeout=100))
            await trio.testing.wait_all_tasks_blocked()
            assert backend.running == 1
            faster = attrs.evolve(
                topology,
                resources={
                    "echo": attrs.evolve(
                        topology.resources["echo"],
                        max_concurrency=4,
                        rate=runtime.RateSpec(requests=100, period=60),
                    )
                },
            )
            changes = system.reload(faster)
            await trio.testing.wait_all_tasks_blocked()
            assert backend.running == 4
        assert changes == [
            "resources.echo: max_concurrency: 1 -> 4",
            "resources.echo: rate: None -> {requests: 100, period: 60.0}",
        ]
        assert system.resource_statistics()["echo"].limiter.max_concurrency == 4

        renamed = attrs.evolve(
            faster,
            resources={
                "echo": attrs.evolve(
                    faster.resources["echo"],
                    options={"backend": backend, "greeting": "salut"},
                    mailbox={"capacity": 5},
                )
            },
            supervisor=SupervisorSpec(name="root", strategy="one_for_all"),
        )
        assert system.reload(renamed) == [
            "resources.echo: mailbox: not applied until the system restarts",
            "resources.echo: options changed: restarting the resource",
            "supervisor: changed: not applied until the next start",
        ]
        await trio.sleep(1)
        assert await ref.ask(Greeting()) == "salut"
        assert ref.statistics().incarnation == 2
        assert ref.statistics().mailbox_capacity == 100
        assert system.reload(renamed) == [
            "resources.echo: mailbox: not applied until the system restarts",
            "supervisor: changed: not applied until the next start",
        ]
        with pytest.raises(TopologyError):
            system.reload(
                Topology(resources=topology.resources, supervisor=SupervisorSpec(name="resources"))
            )


def test_a_handler_may_not_shadow_the_base_class_methods() -> None:
    """A handler named ``call`` would hide ``Resource.call`` (and recurse)."""
    with pytest.raises(TypeError, match=r"Shadow\.call is a handler"):

        class Shadow(runtime.Resource):
            @runtime.handler
            async def call(self, msg: Ping) -> None:  # type: ignore[override]
                pass


async def test_asks_run_in_the_askers_task_and_a_stop_waits_for_them(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An ask to a running resource is served in the asker's task: its
    timeout (or the asker's cancellation) cancels the backend call. A
    graceful stop lets requests in flight finish before on_stop."""
    backend = Backend(delay=10.0)
    answers: list[Any] = []
    async with (
        trio.open_nursery() as outside,
        open_system(_topology(backend), store="memory://") as system,
    ):
        ref = system.resource("echo")
        with pytest.raises(runtime.errors.AskTimeout):
            await ref.ask(Ping("slow"), timeout=2)
        assert trio.current_time() == pytest.approx(2)
        assert backend.running == 0 and backend.served == []  # cancelled, not left running
        with trio.move_on_after(1):
            await ref.ask(Ping("cancelled"))
        assert backend.running == 0
        assert ref.statistics().pending_asks == 0

        async def in_flight() -> None:
            answers.append(await ref.ask(Ping("finished")))

        backend.delay = 3.0  # less than the resource's shutdown_timeout (5 s)
        outside.start_soon(in_flight)
        await trio.testing.wait_all_tasks_blocked()
        stopping_at = trio.current_time()
    assert answers == ["finished"]
    assert trio.current_time() == pytest.approx(stopping_at + 3)
    assert backend.journal == ["start:echo", "stop:echo"]
