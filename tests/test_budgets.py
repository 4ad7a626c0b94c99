"""Token and cost accounting by asking agent, and budgets: the refuse and wait
policies, a supervisor's budget shared by its subtree, spending kept across a
resource's restart and the system's, and the metrics' bounded ``agent`` label.

The llm resource talks to runtime.testing's fake LLM over real loopback
HTTP under virtual time (``loopback_clock``). Budget windows are aligned to
the wall clock, read once per system: ``wall_clock`` is pinned here, so the
windows are the same on every run.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from prometheus_client import CollectorRegistry

import runtime
import runtime._budget
from runtime import (
    ActorSystem,
    BudgetSpec,
    ChildSpec,
    SupervisorSpec,
    Topology,
    open_system,
)
from runtime._cli import _summary as print_summary
from runtime._endpoint import status_document
from runtime._status import format_status
from runtime.errors import AskTimeout, BudgetExceeded, TopologyError
from runtime.resources.llm import Chat, ChatResult
from runtime.testing import FakeLLM, FakeRequest, Reply, fake_llm
from tests.clikit import REPO, SOURCE

# 800 s into an hour: a 1h window started 800 s ago and resets in 2800 s.
T0 = 1_700_000_000.0
WINDOW_START = 1_699_999_200.0
PRICES = {"gpt-test": {"input": 2.0, "output": 10.0}}  # dollars per million tokens


@pytest.fixture(autouse=True)
def pinned_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime._budget, "wall_clock", lambda: T0)


def sixty_tokens(request: FakeRequest) -> Reply:
    """Every answer reports 40 input and 20 output tokens."""
    return Reply(f"ok {request.prompt}", input_tokens=40, output_tokens=20)


@attrs.frozen
class Prompt:
    text: str
    model: str | None = None
    timeout: float = 30.0


class Agent(runtime.Actor[None]):
    """Asks the llm resource; a refusal is returned, not raised (no crash)."""

    @runtime.handler
    async def prompt(self, msg: Prompt) -> ChatResult | BudgetExceeded:
        try:
            result: ChatResult = await self.ctx.resource("llm").ask(
                Chat.prompt(msg.text, model=msg.model), timeout=msg.timeout
            )
        except BudgetExceeded as exc:
            return exc
        return result


def agents(*names: str) -> list[ChildSpec | SupervisorSpec]:
    return [ChildSpec(name=name, actor=Agent) for name in names]


@contextlib.asynccontextmanager
async def budget_system(
    server: FakeLLM,
    children: list[ChildSpec | SupervisorSpec],
    *,
    store: str = "memory://",
    registry: CollectorRegistry | None = None,
    root_budget: BudgetSpec | None = None,
    **fields: Any,
) -> AsyncIterator[ActorSystem]:
    fields.setdefault("model", "gpt-test")
    topology = Topology(
        system="budgets",
        resources={"llm": server.resource_spec(**fields)},
        supervisor=SupervisorSpec(name="root", children=children, budget=root_budget),
    )
    async with open_system(topology, store=store, registry=registry) as system:
        yield system


async def prompt(system: ActorSystem, path: str, **fields: Any) -> Any:
    message = Prompt("hello", **fields)
    return await system.ref(path).ask(message, timeout=message.timeout + 5)


def usage_by_agent(system: ActorSystem) -> dict[str, tuple[int, int, float, int]]:
    return {
        u.agent: (u.input_tokens, u.output_tokens, u.dollars, u.unpriced_requests)
        for u in system.usage_statistics()
    }


async def test_each_agent_gets_its_own_tokens_and_cost(loopback_clock: Any) -> None:
    """Two agents and the host program each get their own token and dollar
    totals; a model with no price counts tokens and no dollars."""
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a", "b"), pricing=PRICES) as system,
        ):
            await prompt(system, "root/a")
            await prompt(system, "root/a")
            await prompt(system, "root/b", model="unpriced-model")
            await system.resource("llm").ask(Chat.prompt("from outside"))
            usage = usage_by_agent(system)
            backend = system.resource_statistics()["llm"].backend
            per_resource = system.resource_statistics()["llm"].usage
    cost = (40 * 2.0 + 20 * 10.0) / 1_000_000
    assert usage == {
        "(system)": (40, 20, pytest.approx(cost), 0),
        "root/a": (80, 40, pytest.approx(2 * cost), 0),
        "root/b": (40, 20, 0.0, 1),
    }
    assert backend["tokens_total"] == 240
    assert backend["dollars_total"] == pytest.approx(3 * cost)
    assert [u.agent for u in per_resource] == ["(system)", "root/a", "root/b"]


async def test_no_pricing_counts_no_dollars(loopback_clock: Any) -> None:
    """Without pricing every request is counted in tokens only."""
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a")) as system,
        ):
            await prompt(system, "root/a")
            [usage] = system.usage_statistics()
    assert (usage.tokens, usage.dollars, usage.unpriced_requests) == (60, 0.0, 1)


async def test_refuse_raises_budget_exceeded_and_the_resource_goes_on(
    loopback_clock: Any,
) -> None:
    """A spent budget refuses the next request with BudgetExceeded, naming
    the scope, spent against limit and the reset; the request that crossed
    the limit was let through. The resource keeps running, its breaker
    closed, its limiter counting no failure, its backend never asked."""
    budget = BudgetSpec(tokens=100, period="1h")
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a"), budget=budget) as system,
        ):
            assert isinstance(await prompt(system, "root/a"), ChatResult)  # 60
            assert isinstance(await prompt(system, "root/a"), ChatResult)  # 120: crosses
            refused = await prompt(system, "root/a")
            with pytest.raises(BudgetExceeded):
                await system.resource("llm").ask(Chat.prompt("outside"))
            stats = system.resource_statistics()["llm"]
            health = runtime._health.health_of(system)
    assert isinstance(refused, BudgetExceeded)
    assert (refused.scope, refused.unit, refused.spent, refused.limit) == (
        "resources/llm",
        "tokens",
        120,
        100,
    )
    assert refused.resets_at is not None and refused.resets_at.timestamp() == WINDOW_START + 3600
    assert str(refused) == (
        "budget of resources/llm exhausted: 120 of 100 tokens spent in this window; "
        "it resets at 2023-11-14 23:00:00 UTC (in 46m40s)"
    )
    assert len(server.requests) == 2
    assert (stats.status, stats.circuit, stats.limiter.breaker) == ("running", "closed", "closed")
    assert (stats.limiter.failures, stats.limiter.rejected, stats.failures) == (0, 0, 0)
    assert stats.budget is not None
    assert (stats.budget.tokens_spent, stats.budget.refusals, stats.budget.exhausted) == (
        120,
        2,
        True,
    )
    assert health.ready and health.problems == ()
    assert [(w.kind, w.name, w.condition) for w in health.warnings] == [
        ("budget", "resources/llm", "budget_exhausted")
    ]


async def test_wait_holds_the_request_until_the_next_window(loopback_clock: Any) -> None:
    """With on_exhausted: wait a request waits (holding no concurrency
    token) for the next window, then goes; one whose ask times out first
    gets AskTimeout."""
    budget = BudgetSpec(tokens=100, period="1m", on_exhausted="wait")  # resets 40 s after T0
    with trio.fail_after(300):  # virtual seconds
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a"), budget=budget, max_concurrency=1) as system,
        ):
            begun = trio.current_time()
            await prompt(system, "root/a")
            await prompt(system, "root/a")
            llm = system.resource("llm")
            with pytest.raises(AskTimeout):
                await llm.ask(Chat.prompt("too impatient"), timeout=10)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(prompt, system, "root/a", timeout=100))
                await trio.sleep(5)
                # Waiting for the window, it holds no token: nothing is in flight.
                assert system.resource_statistics()["llm"].limiter.tokens_in_use == 0
                assert system.budget_statistics()["resources/llm"].waits == 2
            waited = trio.current_time() - begun
            after = system.budget_statistics()["resources/llm"]
    assert 40 <= waited <= 41  # the reset, 40 s after T0
    assert len(server.requests) == 3
    assert (after.tokens_spent, after.window_start.timestamp()) == (60, T0 + 40)


async def test_a_supervisor_budget_is_shared_by_its_subtree(loopback_clock: Any) -> None:
    """A budget on a supervisor counts every agent below it, and only them."""
    team = SupervisorSpec(
        name="team", children=agents("a", "b"), budget=BudgetSpec(tokens=100, period="1h")
    )
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, [team, *agents("c")]) as system,
        ):
            assert isinstance(await prompt(system, "root/team/a"), ChatResult)
            assert isinstance(await prompt(system, "root/team/b"), ChatResult)
            refused_a = await prompt(system, "root/team/a")
            refused_b = await prompt(system, "root/team/b")
            outside = await prompt(system, "root/c")
            budgets = system.budget_statistics()
    assert isinstance(refused_a, BudgetExceeded) and isinstance(refused_b, BudgetExceeded)
    assert refused_a.scope == refused_b.scope == "root/team"
    assert isinstance(outside, ChatResult)
    assert (budgets["root/team"].tokens_spent, budgets["root/team"].refusals) == (120, 2)


async def test_dollar_budget_on_the_root(loopback_clock: Any) -> None:
    """A dollar budget on the root counts the priced requests of every agent."""
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(
                server,
                agents("a", "b"),
                pricing=PRICES,
                root_budget=BudgetSpec(dollars=0.0005, period="1h"),
            ) as system,
        ):
            # 0.00028 $ per request: the second crosses the limit.
            assert isinstance(await prompt(system, "root/a"), ChatResult)
            assert isinstance(await prompt(system, "root/b"), ChatResult)
            refused = await prompt(system, "root/a")
    assert isinstance(refused, BudgetExceeded)
    assert (refused.scope, refused.unit) == ("root", "dollars")
    assert refused.spent == pytest.approx(0.00056)


async def test_spending_and_token_totals_survive_a_resource_restart(loopback_clock: Any) -> None:
    """Killing the resource forgets neither the usage nor the budget's spending."""
    budget = BudgetSpec(tokens=1000, period="1h")
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a"), budget=budget) as system,
        ):
            await prompt(system, "root/a")
            await prompt(system, "root/a")
            [cell] = [c for c in system.cells() if c.path == "resources/llm"]
            incarnation = cell.incarnation
            cell.kill()
            await trio.sleep(1)  # virtual: past the restart's backoff (100 ms)
            stats = system.resource_statistics()["llm"]
            assert cell.incarnation == incarnation + 1 and cell.statistics().restarts == 1
            await prompt(system, "root/a")
            after = system.resource_statistics()["llm"]
    assert stats.backend["tokens_total"] == 120
    assert [(u.agent, u.tokens) for u in stats.usage] == [("root/a", 120)]
    assert stats.budget is not None and stats.budget.tokens_spent == 120
    assert after.backend["tokens_total"] == 180
    assert after.budget is not None and after.budget.tokens_spent == 180


async def test_spending_survives_a_system_restart(tmp_path: Path) -> None:
    """A new system on the same SQLite store starts from the window's
    spending: its first request is refused. The records are no actor's
    checkpoints (the store's paths() leaves them out).

    On trio's real clock: SQLite runs in worker threads, during which a
    virtual clock would jump to the next deadline."""
    store = f"sqlite:///{tmp_path / 'budgets.db'}"
    budget = BudgetSpec(tokens=100, period="1h")
    with trio.fail_after(30):
        async with fake_llm(responder=sixty_tokens) as server:
            async with budget_system(server, agents("a"), budget=budget, store=store) as system:
                await prompt(system, "root/a")
                await prompt(system, "root/a")
            async with budget_system(server, agents("a"), budget=budget, store=store) as system:
                before = system.budget_statistics()["resources/llm"]
                refused = await prompt(system, "root/a")
            opened = runtime.open_store(store)
            try:
                paths = await opened.paths()
                record = await opened.load(f"__budget__/budgets/resources/llm/{int(WINDOW_START)}")
            finally:
                await opened.aclose()
    assert before.tokens_spent == 120
    assert isinstance(refused, BudgetExceeded) and refused.spent == 120
    assert len(server.requests) == 2
    assert paths == []
    assert record is not None and '"tokens": 120' in record[1]


async def test_a_new_window_starts_from_zero_and_old_records_go(loopback_clock: Any) -> None:
    """In the next window the budget is fresh; records two windows old are deleted."""
    budget = BudgetSpec(tokens=100, period="1m")  # the first window ends 40 s after T0
    store = runtime.MemoryStore()
    with trio.fail_after(600):  # virtual seconds
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a"), budget=budget, store=store) as system,
        ):
            await prompt(system, "root/a")
            await prompt(system, "root/a")
            assert isinstance(await prompt(system, "root/a"), BudgetExceeded)
            await trio.sleep(40 + 2 * 60)  # two windows later
            assert isinstance(await prompt(system, "root/a"), ChatResult)
            await trio.sleep(2)  # a flush
            key = f"__budget__/budgets/resources/llm/{int(T0 - 20)}"
            gone = await store.load(key)
    assert gone is None


class Metered(runtime.Resource):
    """A resource kind of a user's own that answers ``Chat`` at once and
    reports usage as the llm kind does: 40 input and 20 output tokens."""

    @runtime.handler
    async def chat(self, msg: Chat) -> ChatResult:
        await self.check_budget()
        self.record_usage(40, 20, 0.0001)
        return ChatResult("ok", "metered", 40, 20, "stop")


async def test_the_agent_label_stays_bounded_by_the_topology(autojump_clock: Any) -> None:
    """1,000 actors spawned at run time count under their nearest declared
    ancestor: the statistics and the metrics have one entry per declared
    path, not one per actor. (A kind of the user's own, which reports usage
    through the same Resource API as llm, keeps the 1,000 requests fast.)"""
    registry = CollectorRegistry()
    topology = Topology(
        system="budgets",
        resources={"llm": runtime.ResourceSpec(kind=Metered)},
        supervisor=SupervisorSpec(name="root", children=agents("a")),
    )
    with trio.fail_after(60):
        async with open_system(topology, store="memory://", registry=registry) as system:
            refs = [await system.spawn(Agent, name=f"spawned-{n}") for n in range(1000)]
            async with trio.open_nursery() as nursery:
                for ref in refs:
                    nursery.start_soon(ref.ask, Prompt("hi"))
            await prompt(system, "root/a")
            usage = system.usage_statistics()
            samples = [
                sample
                for family in registry.collect()
                if family.name in ("runtime_llm_tokens", "runtime_llm_cost_dollars")
                for sample in family.samples
                if sample.name.endswith("_total")
            ]
    assert [(u.agent, u.requests) for u in usage] == [("root", 1000), ("root/a", 1)]
    assert {sample.labels["agent"] for sample in samples} == {"root", "root/a"}
    assert len(samples) == 2 * 3  # per agent: tokens in, tokens out, cost
    by = {(s.name, s.labels["agent"], s.labels.get("direction")): s.value for s in samples}
    assert by[("runtime_llm_tokens_total", "root", "input")] == 40 * 1000
    assert by[("runtime_llm_tokens_total", "root/a", "output")] == 20
    assert by[("runtime_llm_cost_dollars_total", "root", None)] == pytest.approx(0.1)


async def test_budget_metrics(loopback_clock: Any) -> None:
    """Spent, limit, period, reset and refusals per budget scope and unit."""
    registry = CollectorRegistry()
    budget = BudgetSpec(tokens=100, dollars=1.0, period="1h")
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(
                server, agents("a"), registry=registry, budget=budget, pricing=PRICES
            ) as system,
        ):
            await prompt(system, "root/a")
            await prompt(system, "root/a")
            await prompt(system, "root/a")
            value = registry.get_sample_value
            scope = {"scope": "resources/llm"}
            assert value("runtime_budget_spent", {**scope, "unit": "tokens"}) == 120
            assert value("runtime_budget_limit", {**scope, "unit": "tokens"}) == 100
            assert value("runtime_budget_spent", {**scope, "unit": "dollars"}) == pytest.approx(
                0.00056
            )
            assert value("runtime_budget_limit", {**scope, "unit": "dollars"}) == 1.0
            assert value("runtime_budget_period_seconds", scope) == 3600
            assert value("runtime_budget_resets_at_seconds", scope) == WINDOW_START + 3600
            assert value("runtime_budget_refusals_total", scope) == 1
            assert value("runtime_budget_waits_total", scope) == 0
            assert (
                value(
                    "runtime_llm_tokens_total",
                    {"resource": "llm", "agent": "root/a", "direction": "input"},
                )
                == 80
            )


def test_budget_and_pricing_in_yaml_are_validated() -> None:
    """Budgets and prices are checked with file, line and field."""
    text = """
system: s
resources:
  llm:
    kind: llm
    provider: fake
    pricing: {fake: {input: -1, output: 2}}
    budget: {period: 0, on_exhausted: later}
  db:
    kind: llm
    provider: fake
    budget: {dollars: 5}
supervisor:
  name: root
  budget: {tokens: 0}
"""
    with pytest.raises(TopologyError) as caught:
        runtime.parse_topology(text, "t.yaml")
    errors = caught.value.errors
    assert any(
        e.startswith("t.yaml:7: resources.llm.pricing.fake.input: expected dollars per million")
        for e in errors
    ), errors
    assert any(e.startswith("t.yaml:8: resources.llm.budget.period:") for e in errors), errors
    assert any(
        e.startswith("t.yaml:8: resources.llm.budget.on_exhausted: expected one of refuse, wait")
        for e in errors
    ), errors
    assert any(e.startswith("t.yaml:15: supervisor.budget.tokens:") for e in errors), errors
    with pytest.raises(TopologyError) as unpriced:
        runtime.parse_topology(
            "resources:\n  db:\n    kind: llm\n    provider: fake\n    budget: {dollars: 5}\n",
            "u.yaml",
        )
    assert unpriced.value.errors[0].startswith(
        "u.yaml:5: resources.db.budget.dollars: this resource has no pricing:"
    )
    with pytest.raises(TopologyError) as empty:
        runtime.parse_topology(
            "resources:\n  db:\n    kind: llm\n    provider: fake\n    budget: {period: 1d}\n",
            "v.yaml",
        )
    assert empty.value.errors == [
        "v.yaml:5: resources.db.budget.tokens: a budget needs tokens:, dollars: or both"
    ]
    topology = runtime.parse_topology(
        "resources:\n  llm:\n    kind: llm\n    provider: fake\n"
        "    pricing: {fake: {input: 3, output: 15}}\n"
        "    budget: {tokens: 1000000, dollars: 20, period: 1d, on_exhausted: wait}\n",
        "w.yaml",
    )
    assert topology.resources["llm"].budget == BudgetSpec(
        tokens=1_000_000, dollars=20.0, period=86400.0, on_exhausted="wait"
    )


@pytest.mark.multiprocess
def test_processes_sharing_a_store_spend_one_budget(tmp_path: Path) -> None:
    """Three OS processes of one system on one SQLite file spend one budget:
    every increment reaches the store (compare-and-set loses none), and
    together they stop near the limit (each sees the others' spending at
    most one flush late), not at three times it."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    limit = 2000
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([SOURCE, str(REPO)])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.budget_process", store, str(limit)],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    assert all(result["refused"] for result in results), results
    [window] = {result["window_start"] for result in results}

    async def stored() -> str | None:
        opened = runtime.open_store(store)
        try:
            loaded = await opened.load(f"__budget__/shared-budget/resources/llm/{int(window)}")
        finally:
            await opened.aclose()
        return None if loaded is None else loaded[1]

    record = trio.run(stored)
    assert record is not None
    total = json.loads(record)["tokens"]
    assert total == sum(result["tokens"] for result in results)
    assert limit <= total < 2 * limit, results


async def test_status_and_run_summary_show_usage_and_budgets(loopback_clock: Any) -> None:
    """/status carries usage and budgets; `runtime status` prints them as
    tables and the spent budget as a warning; so does the run summary."""
    budget = BudgetSpec(tokens=100, period="1h")
    with trio.fail_after(30):
        async with (
            fake_llm(responder=sixty_tokens) as server,
            budget_system(server, agents("a"), budget=budget, pricing=PRICES) as system,
        ):
            for _ in range(3):
                await prompt(system, "root/a")
            document = json.loads(json.dumps(status_document(system)))
            summary = io.StringIO()
            print_summary(system, 1.0, summary)
    assert document["usage"] == [
        {
            "resource": "llm",
            "agent": "root/a",
            "requests": 2,
            "input_tokens": 80,
            "output_tokens": 40,
            "dollars": pytest.approx(0.00056),
            "unpriced_requests": 0,
        }
    ]
    assert document["budgets"]["resources/llm"]["refusals"] == 1
    assert document["health"]["status"] == "ok"
    text = format_status(document)
    assert "RESOURCE  AGENT   REQUESTS  INPUT TOKENS  OUTPUT TOKENS  COST" in text
    assert "llm       root/a  2         80            40             $0.0006" in text
    assert "resources/llm  120/100  -        refuse" in text
    assert (
        "warnings:\n  budget resources/llm: exhausted, requests refused: 120 of 100 tokens "
        "spent; resets at 2023-11-14 23:00:00 UTC"
    ) in text
    lines = summary.getvalue().splitlines()
    assert "usage llm by root/a: 2 request(s), 80 input + 40 output tokens, $0.0006" in lines
    assert (
        "budget resources/llm: 120 of 100 tokens spent (exhausted: refuse), 1 refused, "
        "0 waited; resets at 2023-11-14 23:00:00 UTC"
    ) in lines
