"""The cost of usage accounting and budgets per resource request.

Every llm request checks the budgets that apply to its asker before it is
sent and records its tokens and cost after: a ledger lookup, a walk up the
asker's path, and a few additions. Measured on a resource kind that answers
at once (no HTTP), so the accounting is not hidden behind a backend's
latency: the same requests, asked by an actor, with no budget and no
accounting (the baseline, in the same run) against usage recorded and two
budgets spent (the resource's and a supervisor's).
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

import runtime
from runtime import BudgetSpec, ChildSpec, ResourceSpec, SupervisorSpec, Topology


@attrs.frozen
class Call:
    metered: bool


@attrs.frozen
class Drive:
    calls: int
    metered: bool


class Backend(runtime.Resource):
    """Answers at once; with ``metered``, accounts as the llm kind does."""

    @runtime.handler
    async def serve(self, msg: Call) -> None:
        if msg.metered:
            await self.check_budget()
        await self.call(trio.lowlevel.checkpoint)
        if msg.metered:
            self.record_usage(40, 20, 0.0001)


class Driver(runtime.Actor[None]):
    """Asks the backend ``calls`` times, one after the other."""

    @runtime.handler
    async def drive(self, msg: Drive) -> float:
        backend = self.ctx.resource("backend")
        message = Call(msg.metered)
        start = time.perf_counter()
        for _ in range(msg.calls):
            await backend.ask(message)
        return time.perf_counter() - start


def _topology() -> Topology:
    # Limits so large that no budget is ever exhausted: what is measured is
    # the checking and the counting.
    budget = BudgetSpec(tokens=10**15, period="1d")
    team = SupervisorSpec(
        name="team", budget=budget, children=[ChildSpec(name="driver", actor=Driver)]
    )
    return Topology(
        system="bench-budgets",
        resources={"backend": ResourceSpec(kind=Backend, budget=budget, timeout=None)},
        supervisor=SupervisorSpec(name="root", children=[team]),
    )


async def _per_call(calls: int, rounds: int) -> tuple[float, float]:
    """Seconds per call, plain and metered, the best of ``rounds`` interleaved rounds."""
    plain, metered = [], []
    async with runtime.open_system(_topology(), store="memory://") as system:
        driver = system.ref("root/team/driver")
        await driver.ask(Drive(calls // 10, metered=True), timeout=600)  # warm-up
        for _ in range(rounds):
            plain.append(await driver.ask(Drive(calls, metered=False), timeout=600) / calls)
            metered.append(await driver.ask(Drive(calls, metered=True), timeout=600) / calls)
    return min(plain), min(metered)


def test_accounting_overhead_per_request(bench: Any, quick: bool) -> None:
    """Time per resource request with usage recorded and two budgets
    checked and charged, against the same request without accounting."""
    calls, rounds = (2_000, 2) if quick else (50_000, 5)
    plain, metered = trio.run(_per_call, calls, rounds)
    bench.record(
        "resource request with usage and 2 budgets: time per request",
        metered,
        "s",
        baseline=plain,
        baseline_name="the same request, no accounting",
        higher_is_better=False,
        overhead_seconds=metered - plain,
    )
