"""Shared limits across real OS processes: three processes run a system of
the same name with a shared ``llm`` resource pointed at one fake LLM server
(in this process, on the real clock), which counts arrivals as the
provider would. On PostgreSQL and on NATS: every window ``[t, t + period)``
at the backend holds at most ``rate.requests`` arrivals and at most
``max_concurrency`` requests are in flight there; a SIGKILLed holder's
tokens come back within the lease; a 429 with Retry-After in one process
pauses the others; a high-priority waiter in one goes before another's low
ones; and with the engine stopped each falls back to its share, then
recovers when it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from runtime.testing import FakeRequest, Fault, fake_llm
from tests.conftest import POSTGRES_URL
from tests.servers import NATS_URL, PrivateNats, PrivatePostgres, unique
from tests.sharedkit import Workers, most_in_window

pytestmark = pytest.mark.multiprocess

ENGINES = [
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("nats", marks=pytest.mark.nats),
]


def _via(kind: str) -> str:
    return POSTGRES_URL if kind == "postgresql" else NATS_URL


def _config(system: str, via: str, fake: str, tag: str, **settings: Any) -> dict[str, Any]:
    return {"system": system, "via": via, "fake": fake, "tag": tag, "lease": 2.0, **settings}


async def _start_three(workers: Workers, system: str, via: str, fake: str, **settings: Any) -> None:
    """Three workers ``w0``, ``w1``, ``w2`` of one system, with one configuration."""
    for n in range(3):
        await workers.start(_config(system, via, fake, f"w{n}", **settings))


def _tag(request: FakeRequest) -> str:
    return request.prompt.split()[0]


def _in_flight_peak(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.fixture
def nats_cleanup() -> Iterator[list[str]]:
    """Buckets to delete after the test (the shared NATS server keeps them)."""
    systems: list[str] = []
    yield systems
    if systems:
        trio.run(_delete_buckets, systems)


async def _delete_buckets(systems: list[str]) -> None:
    import trio_asyncio

    from runtime._backends import NatsBackend
    from runtime._shared import nats_bucket

    async with trio_asyncio.open_loop():
        backend = NatsBackend(NATS_URL)
        try:
            for system in systems:
                await backend.delete_bucket(nats_bucket(system, "llm"))
        finally:
            await backend.aclose()


@pytest.mark.parametrize("kind", ENGINES)
async def test_rate_and_concurrency_hold_at_the_backend(kind: str, nats_cleanup: list[str]) -> None:
    system = unique("shared")
    nats_cleanup.append(system)
    async with fake_llm(latency=0.1) as fake, trio.open_nursery() as nursery:
        workers = Workers(nursery)
        await _start_three(
            workers,
            system,
            _via(kind),
            fake.url,
            max_concurrency=2,
            rate=[10, 1.0],
            callers=4,
            seconds=3.0,
        )
        await workers.go()
        await workers.finish()
    times = [request.time for request in fake.requests]
    for worker in workers.workers:
        assert worker.logged("shared_limit_fallback") == []
    assert most_in_window(times, 1.0) <= 10
    assert fake.peak_in_flight <= 2
    # The limits were reached, by every process: the checks above are not idle.
    assert most_in_window(times, 1.0) >= 8
    assert fake.peak_in_flight == 2
    assert {_tag(request) for request in fake.requests} == {"w0", "w1", "w2"}
    for worker in workers.workers:
        assert worker.report is not None and worker.report["errors"] == []
        assert {sample[1] for sample in worker.report["samples"]} == {"backend"}
        assert max(sample[2] for sample in worker.report["samples"]) == 3, worker.report[
            "samples"
        ]  # three members


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_killed_holder_gives_its_tokens_back_within_the_lease(
    kind: str, nats_cleanup: list[str]
) -> None:
    system = unique("shared")
    nats_cleanup.append(system)
    lease = 1.5

    held: list[FakeRequest] = []
    both_held = trio.Event()

    def responder(request: FakeRequest) -> str | Fault:
        if _tag(request) != "holder":
            return "ok"
        held.append(request)
        if len(held) == 2:
            both_held.set()
        return Fault(hang=True)

    async with fake_llm(responder=responder) as fake, trio.open_nursery() as nursery:
        workers = Workers(nursery)
        settings = {"max_concurrency": 2, "lease": lease, "seconds": 20.0}
        holder = await workers.start(
            _config(system, _via(kind), fake.url, "holder", callers=2, requests=1, **settings)
        )
        others = [
            await workers.start(
                _config(system, _via(kind), fake.url, f"w{n}", callers=1, requests=3, **settings)
            )
            for n in range(2)
        ]
        await workers.go(holder)
        with trio.fail_after(20):
            await both_held.wait()
        await workers.go(*others)
        await trio.sleep(lease + 0.5)  # longer than the lease: renewal keeps it
        assert [_tag(request) for request in fake.requests] == ["holder", "holder"]
        killed = trio.current_time()
        holder.kill()
        await workers.finish()
    late = [request.time - killed for request in fake.requests if _tag(request) != "holder"]
    assert len(late) == 6
    # The lease ran out within `lease` of the last renewal, which came at most
    # a third of it before the kill; plus a poll and a round trip.
    assert min(late) <= lease + 0.5


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_429_in_one_process_pauses_the_others(kind: str, nats_cleanup: list[str]) -> None:
    system = unique("shared")
    nats_cleanup.append(system)
    armed = trio.Event()
    refused: list[FakeRequest] = []

    def responder(request: FakeRequest) -> str | Fault:
        if armed.is_set() and not refused:
            refused.append(request)
            return Fault(status=429, retry_after=2)
        return "ok"

    async with fake_llm(responder=responder, latency=0.05) as fake, trio.open_nursery() as nursery:
        workers = Workers(nursery)
        await _start_three(
            workers,
            system,
            _via(kind),
            fake.url,
            max_concurrency=3,
            rate=[20, 1.0],
            callers=2,
            seconds=4.0,
        )
        await workers.go()
        await trio.sleep(1.0)
        armed.set()
        await workers.finish()
    (first,) = refused
    after = [request for request in fake.requests if request.time > first.time]
    # Calls admitted before the pause reached the engine may still arrive
    # within a round trip or two; then nothing until the pause ends.
    quiet = [request for request in after if first.time + 0.2 <= request.time < first.time + 1.9]
    assert quiet == []
    resumed = {_tag(request) for request in after if request.time >= first.time + 1.9}
    assert resumed == {"w0", "w1", "w2"}
    got_429 = [w.tag for w in workers.workers if w.report is not None and w.report["errors"]]
    assert got_429 == [_tag(first)]


@pytest.mark.parametrize("kind", ENGINES)
async def test_a_high_priority_waiter_goes_before_another_process_low_ones(
    kind: str, nats_cleanup: list[str]
) -> None:
    system = unique("shared")
    nats_cleanup.append(system)
    async with fake_llm(latency=0.1) as fake, trio.open_nursery() as nursery:
        workers = Workers(nursery)
        low = await workers.start(
            _config(
                system,
                _via(kind),
                fake.url,
                "low",
                max_concurrency=1,
                callers=3,
                seconds=3.0,
                priority="low",
            )
        )
        high = await workers.start(
            _config(
                system,
                _via(kind),
                fake.url,
                "high",
                max_concurrency=1,
                callers=1,
                requests=8,
                seconds=20.0,
                priority="high",
            )
        )
        await workers.go(low)
        await trio.sleep(0.5)
        await workers.go(high)
        await workers.finish()
    tags = [_tag(request) for request in fake.requests]
    first, last = tags.index("high"), len(tags) - 1 - tags[::-1].index("high")
    between = tags[first : last + 1]
    assert between.count("high") == 8
    # Each high request, once waiting, goes next: at most the low request
    # already admitted when it came (the high one is published after 25 ms).
    runs = "".join("H" if tag == "high" else "L" for tag in between)
    assert "LL" not in runs, runs
    assert low.report is not None and low.report["answered"] > 0


@pytest.mark.parametrize("kind", ["postgresql", "nats"])
async def test_engine_outage_falls_back_to_the_share_then_recovers(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server: PrivatePostgres | PrivateNats = request.getfixturevalue(
        "private_postgres" if kind == "postgresql" else "private_nats"
    )
    system = unique("shared")
    rate, period = 9, 1.0
    async with fake_llm(latency=0.05) as fake, trio.open_nursery() as nursery:
        workers = Workers(nursery)
        await _start_three(
            workers,
            system,
            server.url,
            fake.url,
            max_concurrency=3,
            rate=[rate, period],
            callers=3,
            seconds=8.0,
            lease=1.5,
        )
        await workers.go()
        await trio.sleep(2.0)
        offset = time.time() - trio.current_time()  # the workers' wall clock, here
        stopped = trio.current_time()
        await trio.to_thread.run_sync(server.stop)
        await trio.sleep(3.0)
        restarted = trio.current_time()
        await trio.to_thread.run_sync(server.start)
        await workers.finish()
    recovered = []
    for worker in workers.workers:
        assert worker.report is not None
        fell = worker.logged("shared_limit_fallback")
        back = worker.logged("shared_limit_recovered")
        assert len(fell) == 1 and len(back) == 1, worker.events
        assert fell[0]["level"] == "warning" and back[0]["level"] == "info"
        recovered.append(back[0]["timestamp"] - offset)
        modes = [sample[1] for sample in worker.report["samples"]]
        assert "fallback" in modes and modes[-1] == "backend"
        shares = {
            tuple(sample[2:]) for sample in worker.report["samples"] if sample[1] == "fallback"
        }
        assert shares == {(3, 1, 3)}  # three members: 3 // 3 tokens, 9 // 3 per second
        mine = [
            request.time
            for request in fake.requests
            if _tag(request) == worker.tag and stopped + 0.1 < request.time < restarted
        ]
        assert mine, (
            stopped + offset,
            restarted + offset,
            [e for e in worker.events if "shared" in e["event"]],
            worker.report["samples"],
        )
        assert most_in_window(mine, period) <= rate // 3
    assert all(restarted <= at <= restarted + 4.0 for at in recovered)
    times = [request.time for request in fake.requests]
    before = [t for t in times if t < stopped]
    after = [t for t in times if t >= max(recovered)]
    assert most_in_window(before, period) <= rate
    assert most_in_window(after, period) <= rate
    assert len(before) >= rate and len(after) >= rate
