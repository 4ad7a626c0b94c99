"""Pools: the price of routing, against sending to one actor directly.

A pool's ref picks a worker and puts the message straight into its mailbox;
these figures show what the pick costs a sender. The baseline is the same
workload told (or asked) to one actor in the same run: target at least 0.8x
the tell throughput, at most 1.2x the ask p50.

Throughput is taken in CPU time of the process (``time.process_time``), the
pooled and direct runs interleaved: the workload never sleeps and trio runs
on one thread, so on an idle machine CPU time is the elapsed time, and on a
shared one it leaves out the time other processes held the CPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
import trio

import runtime

from ._measure import percentile
from .bench_messaging import Msg, Ping, Sink

POOL = {"size": 4}


async def _tells(messages: int, pool: dict[str, Any] | None) -> float:
    """Messages per second from one task, until the last is handled."""
    async with runtime.open_system() as system:
        fields: dict[str, Any] = {} if pool is None else {"pool": pool}
        ref = await system.spawn(Sink, name="sink", **fields)
        msg = Msg(1)
        start = time.process_time()
        for _ in range(messages):
            await ref.tell(msg)
        await system.wait_until_idle(poll=0.0005)
        return messages / (time.process_time() - start)


async def _asks(count: int, pool: dict[str, Any] | None) -> list[float]:
    """Round trips of sequential asks."""
    samples: list[float] = []
    async with runtime.open_system() as system:
        fields: dict[str, Any] = {} if pool is None else {"pool": pool}
        ref = await system.spawn(Sink, name="sink", **fields)
        msg = Ping()
        for _ in range(count):
            start = time.perf_counter()
            await ref.ask(msg)
            samples.append(time.perf_counter() - start)
    return samples


@pytest.mark.parametrize("routing", ["round_robin", "least_busy", "random"])
def test_pool_tell_throughput(bench: Any, quick: bool, routing: str) -> None:
    """Tells through a 4-worker pool against tells to one actor (target >= 0.8x)."""
    messages = 20_000 if quick else 400_000
    times = 1 if quick else 5
    pool = {**POOL, "routing": routing}
    trio.run(_tells, messages // 10, pool)  # warm-up
    pooled_runs, direct_runs = [], []
    for _ in range(times):
        pooled_runs.append(trio.run(_tells, messages, pool))
        direct_runs.append(trio.run(_tells, messages, None))
    pooled, direct = statistics.median(pooled_runs), statistics.median(direct_runs)
    spread = (min(pooled_runs), max(pooled_runs))
    bench.record(
        f"pool tell throughput ({routing}, 4 workers)",
        pooled,
        "msg/s",
        baseline=direct,
        baseline_name="tells to one actor",
        spread=spread,
    )


def test_pool_ask_latency(bench: Any, quick: bool) -> None:
    """Sequential asks through a 4-worker round-robin pool against asks to
    one actor: p50 and p99 (target p50 <= 1.2x)."""
    count = 2_000 if quick else 50_000
    pooled = trio.run(_asks, count, POOL)
    direct = trio.run(_asks, count, None)
    for q in (50, 99):
        bench.record(
            f"pool ask p{q} (4 workers)",
            percentile(pooled, q),
            "s",
            baseline=percentile(direct, q),
            baseline_name="ask to one actor",
            higher_is_better=False,
        )
