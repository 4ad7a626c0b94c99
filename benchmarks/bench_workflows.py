"""Workflows: what a step costs over the bare ask it makes.

A step is an ask plus the scheduling around it and a journal write (on
SQLite here, the embedded default store). Measured against the same asks
made directly, in the same run:

- one-step runs, p50 and p99 of a whole run (journal read, the ask, the
  step's write and the run's last write) against one bare ask;
- a sequential workflow: the time per step against one bare ask;
- a DAG of 1,000 no-op steps (ten layers of 100, each step needing one of
  the layer before), ``max_parallel`` 16, against the same 1,000 asks made
  directly under a ``trio.CapacityLimiter(16)``. Steps that end in the same
  scheduling round share one journal write.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import runtime
from runtime import ChildSpec, SupervisorSpec, Topology
from runtime.workflow import Step, Workflow

from ._measure import percentile


@attrs.frozen
class Noop:
    n: int


class Agent(runtime.Actor[None]):
    @runtime.handler
    async def noop(self, msg: Noop) -> int:
        return msg.n


PARALLEL = 16
TOPOLOGY = Topology(
    system="bench",
    supervisor=SupervisorSpec(
        name="root", children=[ChildSpec(name="agent", actor=Agent, concurrency=PARALLEL)]
    ),
)


def dag(layers: int, width: int) -> Workflow:
    steps = [
        Step(
            f"s{index}",
            "root/agent",
            Noop(index),
            depends_on=[f"s{index - width}"] if index >= width else [],
        )
        for index in range(layers * width)
    ]
    return Workflow("dag", steps, max_parallel=PARALLEL)


async def _one_step_runs(store: str, count: int) -> tuple[list[float], list[float]]:
    runs, asks = [], []
    wf = Workflow("one", [Step("only", "root/agent", Noop(1))])
    async with runtime.open_system(TOPOLOGY, store=store) as system:
        agent = system.ref("root/agent")
        for index in range(count):
            started = time.perf_counter()
            await system.run_workflow(wf, run_id=f"r{index}")
            runs.append(time.perf_counter() - started)
            started = time.perf_counter()
            await agent.ask(Noop(index))
            asks.append(time.perf_counter() - started)
    return runs, asks


async def _sequential(store: str, steps: int) -> tuple[float, float]:
    """Seconds per step of a sequential run, and per bare ask."""
    wf = Workflow(
        "seq", [Step(f"s{i}", "root/agent", Noop(i)) for i in range(steps)], strategy="sequential"
    )
    async with runtime.open_system(TOPOLOGY, store=store) as system:
        await system.run_workflow(wf, run_id="warm")
        started = time.perf_counter()
        await system.run_workflow(wf, run_id="measured")
        per_step = (time.perf_counter() - started) / steps
        agent = system.ref("root/agent")
        started = time.perf_counter()
        for index in range(steps):
            await agent.ask(Noop(index))
        per_ask = (time.perf_counter() - started) / steps
    return per_step, per_ask


async def _dag(store: str, layers: int, width: int) -> tuple[float, float]:
    """Seconds for the DAG, and for the same asks under a CapacityLimiter."""
    wf = dag(layers, width)
    async with runtime.open_system(TOPOLOGY, store=store) as system:
        await system.run_workflow(dag(2, width), run_id="warm")
        started = time.perf_counter()
        result = await system.run_workflow(wf, run_id="measured")
        workflow_seconds = time.perf_counter() - started
        assert result.status == "succeeded"
        agent = system.ref("root/agent")
        limiter = trio.CapacityLimiter(PARALLEL)

        async def ask(index: int) -> None:
            async with limiter:
                await agent.ask(Noop(index))

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(layers * width):
                nursery.start_soon(ask, index)
        direct_seconds = time.perf_counter() - started
    return workflow_seconds, direct_seconds


def _store(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


def test_step_overhead(bench: Any, quick: bool, tmp_path: Path) -> None:
    """A one-step run against one bare ask (p50, p99), and the time per step
    of a sequential run against a bare ask."""
    runs, asks = trio.run(_one_step_runs, _store(tmp_path, "one"), 50 if quick else 1_000)
    for q in (50, 99):
        bench.record(
            f"workflow one-step run p{q} (sqlite journal)",
            percentile(runs, q),
            "s",
            baseline=percentile(asks, q),
            baseline_name="bare ask",
            higher_is_better=False,
        )
    per_step, per_ask = trio.run(_sequential, _store(tmp_path, "seq"), 50 if quick else 1_000)
    bench.record(
        "workflow sequential, per step (sqlite journal)",
        per_step,
        "s",
        baseline=per_ask,
        baseline_name="bare ask",
        higher_is_better=False,
    )


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_dag_of_noop_steps(bench: Any, quick: bool, tmp_path: Path, store: str) -> None:
    """1,000 no-op steps as a DAG, ``max_parallel`` 16, against the same asks
    under a ``CapacityLimiter(16)`` (target: under 2x with SQLite). Full
    mode: the median of five runs of each (a new store each time), each run
    of the workflow followed by its baseline; the spread is the workflow's."""
    layers, width = (2, 50) if quick else (10, 100)
    runs = []
    for attempt in range(1 if quick else 5):
        url = _store(tmp_path, f"dag{attempt}") if store == "sqlite" else "memory://"
        runs.append(trio.run(_dag, url, layers, width))
    workflow_seconds = statistics.median(seconds for seconds, _ in runs)
    direct_seconds = statistics.median(seconds for _, seconds in runs)
    bench.record(
        f"workflow DAG of {layers * width} no-op steps ({store} journal)",
        workflow_seconds,
        "s",
        baseline=direct_seconds,
        baseline_name="asks under a CapacityLimiter",
        higher_is_better=False,
        spread=(min(seconds for seconds, _ in runs), max(seconds for seconds, _ in runs)),
    )
