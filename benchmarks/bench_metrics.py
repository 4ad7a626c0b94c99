"""What metrics cost: tell throughput to one actor with metrics on (a
registry given to ``open_system``: handling times kept, the collector
registered) against metrics off, in the same run, and the time one scrape
of a system of 1,000 actors takes."""

from __future__ import annotations

import time
from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest

import runtime

from ._measure import repeat
from .bench_messaging import Msg, Ping, Sink


async def _tell(messages: int, metrics: bool) -> float:
    registry = CollectorRegistry() if metrics else None
    async with runtime.open_system(registry=registry) as system:
        ref = await system.spawn(Sink, name="sink")
        msg = Msg(1)
        start = time.perf_counter()
        for _ in range(messages):
            await ref.tell(msg)
        await ref.ask(Ping())  # every message before it has been handled
        return messages / (time.perf_counter() - start)


async def _scrape(actors: int, scrapes: int) -> float:
    registry = CollectorRegistry()
    async with runtime.open_system(registry=registry) as system:
        for n in range(actors):
            await system.spawn(Sink, name=f"sink{n}")
        start = time.perf_counter()
        for _ in range(scrapes):
            generate_latest(registry)
        return (time.perf_counter() - start) / scrapes


def test_metrics_cost_on_tell_throughput(bench: Any, quick: bool) -> None:
    """Target: metrics cost at most 10% of tell throughput."""
    messages = 20_000 if quick else 400_000
    times = 1 if quick else 7
    # Interleaved, so both sides see the same machine.
    on: list[float] = []
    off: list[float] = []

    def both() -> float:
        off.append(trio.run(_tell, messages, False))
        on.append(trio.run(_tell, messages, True))
        return 0.0

    repeat(both, times)
    on.sort()
    off.sort()
    with_metrics, without = on[len(on) // 2], off[len(off) // 2]
    bench.record(
        "tell throughput 1->1 with metrics on",
        with_metrics,
        "msg/s",
        baseline=without,
        baseline_name="metrics off",
        spread=(on[0], on[-1]),
        target="cost <= 10%",
        met=with_metrics >= 0.9 * without,
    )


def test_scrape_time(bench: Any, quick: bool) -> None:
    """One /metrics rendering of a system of 1,000 idle actors (100 quick)."""
    actors = 100 if quick else 1_000
    seconds = trio.run(_scrape, actors, 3 if quick else 10)
    bench.record(f"scrape of {actors} actors", seconds, "s", higher_is_better=False)
