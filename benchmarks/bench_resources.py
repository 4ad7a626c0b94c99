"""Resource actors: the rate a limited resource achieves against the rate it
was configured with (and its window violations), and what a call through a
resource costs against the same call made directly under a
``trio.CapacityLimiter``. Backends here are in-process, so the figures are
the runtime's own cost; bench_resource_postgres and bench_resource_mcp
measure real backends.

The rate runs read time through a ``StepClock``: trio's clock, read once per
task step. The limiter stamps a call's start with ``trio.current_time()``
and the backend, later in the same step, notes the same float; so the
windows counted here are the limiter's own, with its own arithmetic
(``t + period``), not the limiter's plus the microseconds a real clock ticks
between its stamp and the backend's (which once showed a "violation" of
1.5 µs)."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import attrs
import trio

import runtime

from ._measure import percentile


@attrs.frozen
class Call:
    pass


@attrs.define
class Journal:
    admitted: list[float] = attrs.Factory(list)


@attrs.frozen
class JournalOptions:
    journal: Journal = attrs.field(factory=Journal)


class StepClock(trio.abc.Clock):
    """trio's system clock, read once per task step (``StepTicker`` ticks it):
    every ``trio.current_time()`` within one step returns the same float.
    Sleeps still end on the real clock."""

    def __init__(self) -> None:
        self._now = 0.0

    def tick(self) -> None:
        self._now = time.perf_counter()

    def start_clock(self) -> None:
        self.tick()

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - time.perf_counter()


class StepTicker(trio.abc.Instrument):
    """Ticks a ``StepClock`` before each task step and after each I/O wait
    (before trio expires deadlines)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.clock.tick()

    def after_io_wait(self, timeout: float) -> None:
        self.clock.tick()


def _run_on_step_clock(fn: Any, *args: Any) -> Any:
    clock = StepClock()
    return trio.run(fn, *args, clock=clock, instruments=[StepTicker(clock)])


class Instant(runtime.Resource):
    """A backend that answers at once, noting when each call started (on
    trio's clock: under a ``StepClock``, the limiter's own stamp)."""

    Options = JournalOptions

    async def _serve(self) -> None:
        self.options.journal.admitted.append(trio.current_time())
        await trio.lowlevel.checkpoint()

    @runtime.handler
    async def handle(self, msg: Call) -> None:
        await self.call(self._serve)


def _topology(journal: Journal, **limits: Any) -> runtime.Topology:
    return runtime.Topology(
        system="bench",
        resources={
            "backend": runtime.ResourceSpec(
                kind=Instant, options={"journal": journal}, retry=None, **limits
            )
        },
    )


def _windows(admitted: list[float], requests: int, period: float) -> tuple[float, int, int, float]:
    """The achieved share of the limit, and the windows over it.

    Share: admissions in the first ``k`` whole periods from the first
    admission, over ``k * requests`` (the callers always have more ready, so
    this is the steady state). Violations: windows ``[t, t + period)``,
    ``t`` any admission, holding more than ``requests``: ``u`` is inside when
    ``u < t + period``, the limiter's rule to the bit (it admits at ``now``
    only once ``t + period <= now``). Also returns how many windows were
    checked and the largest overshoot: how far inside its window the first
    admission too many fell (0 without violations).
    """
    start = admitted[0]
    periods = int((admitted[-1] - start) // period)
    inside = sum(t < start + periods * period for t in admitted)
    share = inside / (periods * requests) if periods else 0.0
    violations = 0
    overshoot = 0.0
    end = 0
    for index, first in enumerate(admitted):
        while end < len(admitted) and admitted[end] < first + period:
            end += 1
        if end - index > requests:
            violations += 1
            overshoot = max(overshoot, first + period - admitted[index + requests])
    return share, violations, len(admitted), overshoot


async def _through_resource(requests: int, period: float, total: int, callers: int) -> Journal:
    journal = Journal()
    rate = runtime.RateSpec(requests=requests, period=period)
    async with runtime.open_system(
        _topology(journal, rate=rate, max_concurrency=callers), store="memory://"
    ) as system:
        ref = system.resource("backend")

        async def caller(count: int) -> None:
            for _ in range(count):
                await ref.ask(Call(), timeout=3600)

        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller, total // callers)
    return journal


async def _fixed_window(requests: int, period: float, total: int, callers: int) -> Journal:
    """The hand-rolled limiter this replaces: a counter reset at each period
    boundary, callers sleeping until the next boundary when it is spent."""
    journal = Journal()
    window_start = trio.current_time()
    used = 0

    async def caller(count: int) -> None:
        nonlocal window_start, used
        for _ in range(count):
            while True:
                now = trio.current_time()
                if now >= window_start + period:
                    window_start += period * ((now - window_start) // period)
                    used = 0
                if used < requests:
                    used += 1
                    break
                await trio.sleep_until(window_start + period)
            journal.admitted.append(trio.current_time())
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller, total // callers)
    return journal


def test_rate_limit_accuracy(bench: Any, quick: bool) -> None:
    """A resource limited to R per period, driven by 10 callers that always
    have a request ready: its share of R in every full window (target >= 95%)
    and its window violations (target 0), beside a fixed-window counter.
    Both run on a ``StepClock``, so starts are counted as the limiter
    stamped them."""
    requests, period, windows, callers = (50, 0.5, 4, 10) if quick else (200, 1.0, 10, 10)
    total = requests * windows
    gc.disable()  # a collection between admission and the call would skew the start times
    try:
        ours = _run_on_step_clock(_through_resource, requests, period, total, callers)
        fixed = _run_on_step_clock(_fixed_window, requests, period, total, callers)
    finally:
        gc.enable()
    share, violations, checked, overshoot = _windows(ours.admitted, requests, period)
    fixed_share, fixed_violations, _, fixed_overshoot = _windows(fixed.admitted, requests, period)
    bench.record(
        f"rate {requests}/{period:g}s: achieved share of the limit",
        share * 100,
        "%",
        baseline=fixed_share * 100,
        baseline_name="fixed-window counter",
        target=">= 95% with 0 violations",
        met=share >= 0.95 and violations == 0,
    )
    bench.record(
        f"rate {requests}/{period:g}s: windows over the limit",
        violations,
        "windows",
        baseline=fixed_violations,
        baseline_name="fixed-window counter",
        higher_is_better=False,
        windows_checked=checked,
        largest_overshoot_seconds=overshoot,
        baseline_largest_overshoot_seconds=fixed_overshoot,
    )


async def _resource_calls(calls: int, concurrency: int) -> tuple[list[float], float]:
    """Per-call latencies, and the seconds from the first call to the last
    answer (the system's start and stop are not counted)."""
    journal = Journal()
    samples: list[float] = []
    async with runtime.open_system(
        _topology(journal, max_concurrency=concurrency, timeout=None), store="memory://"
    ) as system:
        ref = system.resource("backend")

        async def caller(count: int) -> None:
            for _ in range(count):
                start = time.perf_counter()
                await ref.ask(Call())
                samples.append(time.perf_counter() - start)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller, calls // concurrency)
        elapsed = time.perf_counter() - start
    return samples, elapsed


async def _direct_calls(
    calls: int, concurrency: int, scoped: bool = False
) -> tuple[list[float], float]:
    """The same calls under a ``CapacityLimiter``; ``scoped``: each in a
    ``trio.CancelScope`` of its own, the least a call that can time out or
    be cancelled on its own costs in trio (a request served inline has one)."""
    journal = Journal()
    limiter = trio.CapacityLimiter(concurrency)
    samples: list[float] = []

    async def serve() -> None:
        journal.admitted.append(time.perf_counter())
        await trio.lowlevel.checkpoint()

    async def caller(count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            if scoped:
                with trio.CancelScope():
                    async with limiter:
                        await serve()
            else:
                async with limiter:
                    await serve()
            samples.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(caller, calls // concurrency)
    return samples, time.perf_counter() - start


def test_call_overhead(bench: Any, quick: bool) -> None:
    """A call through a resource (ask served in the asker's task: limiter,
    handler, reply) against the same call under a CapacityLimiter, 8
    callers, backend answering at once; and that bare call in a cancel scope
    of its own, the part of the gap that is trio's price for a call its
    timeout can end."""
    calls, concurrency = (4_000, 8) if quick else (40_000, 8)
    rounds = 1 if quick else 5
    trio.run(_resource_calls, calls // 10, concurrency)  # warm-up
    ours: list[float] = []
    direct: list[float] = []
    rates: dict[str, list[float]] = {"ours": [], "direct": [], "scoped": []}
    for _ in range(rounds):  # interleaved, so load on the machine falls on all three alike
        gc.collect()
        samples, elapsed = trio.run(_resource_calls, calls, concurrency)
        ours += samples
        rates["ours"].append(len(samples) / elapsed)
        gc.collect()
        samples, elapsed = trio.run(_direct_calls, calls, concurrency)
        direct += samples
        rates["direct"].append(len(samples) / elapsed)
        gc.collect()
        samples, elapsed = trio.run(_direct_calls, calls, concurrency, True)
        rates["scoped"].append(len(samples) / elapsed)
    median = {kind: statistics.median(figures) for kind, figures in rates.items()}
    bench.record(
        "resource call, 8 callers: throughput",
        median["ours"],
        "calls/s",
        baseline=median["direct"],
        baseline_name="CapacityLimiter call",
        spread=(min(rates["ours"]), max(rates["ours"])),
    )
    bench.record(
        "resource call, 8 callers: latency p50",
        percentile(ours, 50),
        "s",
        baseline=percentile(direct, 50),
        baseline_name="CapacityLimiter call",
        higher_is_better=False,
    )
    # What one cancel scope per call costs on its own: the ceiling of the
    # first ratio for any call that its ask's timeout can end.
    bench.record(
        "CapacityLimiter call in a CancelScope, 8 callers: throughput",
        median["scoped"],
        "calls/s",
        baseline=median["direct"],
        spread=(min(rates["scoped"]), max(rates["scoped"])),
        baseline_name="CapacityLimiter call",
    )
