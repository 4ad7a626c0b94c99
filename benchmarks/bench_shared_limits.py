"""Shared resource limits: what a shared admission costs against the local
limiter's, on PostgreSQL and on NATS; and at an LLM-like rate across three
processes, the share of the limit achieved and the windows over it, counted
where the provider would count them (arrivals at one fake LLM server).

Overhead: one caller, calls that return at once, through a ``Limiter``
with ``max_concurrency`` and ``rate`` (set high enough never to bind):
unshared (the baseline, in the same run), then shared on each engine.

Rate: three OS processes (tests.shared_worker) run a system of one name
with a shared ``llm`` resource (``rate: 150 per 3 s`` = 50 req/s, 16
callers each) against the fake LLM in this process. Achieved: arrivals in
the whole periods from the first arrival, over what the limit allows in
them. Windows over: windows ``[t, t + period)`` holding more than the limit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio_asyncio
from tests import postgres_session
from tests.servers import NATS_URL, unique
from tests.sharedkit import Workers, most_in_window

from runtime._backends import Backends, NatsBackend
from runtime._limiter import Limiter
from runtime._shared import SharedLimits, nats_bucket
from runtime._specs import RateSpec
from runtime.testing import fake_llm

from ._measure import percentile

_RATE = RateSpec(requests=1_000_000, period=1.0)


async def _instant() -> None:
    await trio.lowlevel.checkpoint()


async def _timed_calls(limiter: Limiter, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await limiter.call(_instant)
        samples.append(time.perf_counter() - start)
    return samples


@contextlib.asynccontextmanager
async def _shared_limiter(url: str, system: str) -> AsyncIterator[Limiter]:
    backends = Backends()
    shared = SharedLimits(url, backends, system=system, resource="llm", name="bench")
    limiter = Limiter(max_concurrency=8, rate=_RATE, retry=None, shared=shared)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shared.serve)
            yield limiter
            nursery.cancel_scope.cancel()
    finally:
        if url.startswith("nats"):
            with contextlib.suppress(Exception):
                await backends.nats(url).delete_bucket(nats_bucket(system, "llm"))
        await backends.aclose()


async def _overhead(calls: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    local = Limiter(max_concurrency=8, rate=_RATE, retry=None)
    await _timed_calls(local, calls // 10)
    results["local"] = await _timed_calls(local, calls)
    async with trio_asyncio.open_loop():
        for engine, url in (("postgresql", postgres_session.URL), ("nats", NATS_URL)):
            async with _shared_limiter(url, unique("bench")) as limiter:
                await _timed_calls(limiter, calls // 10)  # connect, migrate, warm up
                results[engine] = await _timed_calls(limiter, calls)
    return results


def test_shared_admission_overhead(bench: Any, quick: bool) -> None:
    """Per call: one admission (and release) through a shared limiter on
    each engine, against the same call through the local limiter."""
    postgres_session.require()
    calls = 200 if quick else 2_000
    results = trio.run(_overhead, calls)
    local = results["local"]
    for engine in ("postgresql", "nats"):
        samples = results[engine]
        bench.record(
            f"shared admission ({engine}): call p50",
            percentile(samples, 50),
            "s",
            baseline=percentile(local, 50),
            baseline_name="local limiter",
            higher_is_better=False,
            p99=percentile(samples, 99),
            baseline_p99=percentile(local, 99),
        )


def _achieved(times: list[float], requests: int, period: float) -> float:
    start = times[0]
    periods = int((times[-1] - start) // period)
    inside = sum(t < start + periods * period for t in times)
    return inside / (periods * requests) if periods else 0.0


async def _rate_run(via: str, requests: int, period: float, seconds: float) -> list[float]:
    system = unique("bench")
    async with fake_llm(latency=0.02) as fake, trio.open_nursery() as nursery:
        workers = Workers(nursery)
        for n in range(3):
            await workers.start(
                {
                    "system": system,
                    "via": via,
                    "fake": fake.url,
                    "tag": f"w{n}",
                    "max_concurrency": 48,
                    "rate": [requests, period],
                    "callers": 16,
                    "seconds": seconds,
                }
            )
        await workers.go()
        await workers.finish()
    if via.startswith("nats"):
        async with trio_asyncio.open_loop():
            backend = NatsBackend(via)
            await backend.delete_bucket(nats_bucket(system, "llm"))
            await backend.aclose()
    return sorted(request.time for request in fake.requests)


@pytest.mark.parametrize("engine", ["postgresql", "nats"])
def test_shared_rate_across_processes(bench: Any, quick: bool, engine: str) -> None:
    """50 req/s (150 per 3 s) across three processes: the achieved share of
    the limit at the backend (target >= 95%) and the windows over it (target 0)."""
    postgres_session.require()
    requests, period = 150, 3.0
    seconds = 6.5 if quick else 12.5
    via = postgres_session.URL if engine == "postgresql" else NATS_URL
    times = trio.run(_rate_run, via, requests, period, seconds)
    share = _achieved(times, requests, period)
    over = 0
    end = 0
    for index, first in enumerate(times):
        while end < len(times) and times[end] < first + period:
            end += 1
        over += end - index > requests
    bench.record(
        f"shared rate 50/s x3 processes ({engine}): achieved share of the limit",
        share * 100,
        "%",
        target=">= 95% with 0 windows over",
        met=share >= 0.95 and over == 0,
        arrivals=len(times),
        most_in_window=most_in_window(times, period),
    )
    bench.record(
        f"shared rate 50/s x3 processes ({engine}): windows over the limit",
        over,
        "windows",
        higher_is_better=False,
        windows_checked=len(times),
    )
