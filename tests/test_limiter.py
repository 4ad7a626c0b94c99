"""The limiter under virtual time: concurrency, rate windows, priorities,
pauses, timeouts, retries and the circuit breaker."""

from __future__ import annotations

import functools
import itertools

import pytest
import trio
import trio.testing

from runtime import Limiter, RateSpec, RetrySpec
from runtime.errors import CircuitOpen


async def test_concurrency_never_exceeds_the_limit(autojump_clock: trio.abc.Clock) -> None:
    """100 calls from 20 tasks into max_concurrency 2 peak at exactly 2 and all
    complete (FIFO within a priority: see the priority test)."""
    limiter = Limiter(max_concurrency=2)
    running = peak = 0
    started: list[int] = []

    async def work(n: int) -> int:
        nonlocal running, peak
        started.append(n)
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1
        return n

    results: list[int] = []

    async def caller(first: int) -> None:
        for n in range(first, first + 5):
            results.append(await limiter.call(work, n))

    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            for task in range(20):
                nursery.start_soon(caller, task * 5)
                await trio.testing.wait_all_tasks_blocked()
    assert peak == 2
    assert sorted(results) == list(range(100))
    assert limiter.statistics().tokens_in_use == 0
    assert trio.current_time() == pytest.approx(50)  # two at a time, 1 s each


async def test_rate_limit_holds_in_every_window(autojump_clock: trio.abc.Clock) -> None:
    """1,000 requests against 60 per minute: no 60 s window starting at any
    admission holds more than 60, and steady state reaches at least 57 a minute."""
    limiter = Limiter(rate=RateSpec(requests=60, period="1m"))
    times: list[float] = []

    async def request() -> None:
        times.append(trio.current_time())

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(limiter.call, request)
    assert len(times) == 1000
    start = times[0]
    for index, t in enumerate(times):
        in_window = sum(1 for other in times[index:] if other < t + 60)
        assert in_window <= 60
    for minute in range(1, 15):
        per_minute = sum(1 for t in times if start + 60 * minute <= t < start + 60 * (minute + 1))
        assert per_minute >= 57


async def test_higher_priorities_overtake(autojump_clock: trio.abc.Clock) -> None:
    """Waiting calls start highest priority first, FIFO within a priority."""
    limiter = Limiter(max_concurrency=1)
    order: list[str] = []
    release = trio.Event()

    async def blocker() -> None:
        await release.wait()

    async def work(label: str) -> None:
        order.append(label)

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.call, blocker)
            await trio.testing.wait_all_tasks_blocked()
            for label, priority in [
                ("low1", "low"),
                ("normal1", "normal"),
                ("low2", "low"),
                ("high1", "high"),
                ("normal2", "normal"),
                ("high2", "high"),
            ]:
                nursery.start_soon(functools.partial(limiter.call, work, label, priority=priority))
                await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().waiting == {"high": 2, "normal": 2, "low": 2}
            release.set()
    assert order == ["high1", "high2", "normal1", "normal2", "low1", "low2"]


async def test_tokens_come_back_after_errors_and_cancellation(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A call that raises, or that is cancelled while running or waiting,
    leaves no token taken and no waiter behind."""
    limiter = Limiter(max_concurrency=1)

    async def fail() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        await limiter.call(fail)
    with trio.move_on_after(5):
        await limiter.call(trio.sleep_forever)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.call, trio.sleep_forever)
        nursery.start_soon(limiter.call, trio.sleep_forever)  # waits for the token
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.statistics().waiting["normal"] == 1
        nursery.cancel_scope.cancel()
    stats = limiter.statistics()
    assert (stats.tokens_in_use, stats.waiting["normal"]) == (0, 0)


async def test_pause_silences_every_caller(autojump_clock: trio.abc.Clock) -> None:
    """pause(7) (a Retry-After: 7) admits nothing for 7 s, for every caller."""
    limiter = Limiter(max_concurrency=4)
    started: list[float] = []

    async def work() -> None:
        started.append(trio.current_time())

    limiter.pause(7)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(limiter.call, work)
    assert started == [pytest.approx(7)] * 3


async def test_timeout_bounds_each_attempt(autojump_clock: trio.abc.Clock) -> None:
    """An attempt past the timeout fails with TimeoutError at the timeout."""
    limiter = Limiter(timeout=2.5)
    with pytest.raises(TimeoutError, match=r"took longer than 2\.5s"):
        await limiter.call(trio.sleep_forever)
    assert trio.current_time() == pytest.approx(2.5)


async def test_transient_failures_are_retried_with_jittered_backoff(
    autojump_clock: trio.abc.Clock,
) -> None:
    """OSError is retried up to the attempts, each wait within its full-jitter
    bound; the result of the first success is returned."""
    limiter = Limiter(retry=RetrySpec(attempts=4, initial=1, multiplier=2, max=10))
    attempts: list[float] = []

    async def flaky() -> str:
        attempts.append(trio.current_time())
        if len(attempts) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert await limiter.call(flaky) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) == 2
    assert 0 <= gaps[0] <= 1 and 0 <= gaps[1] <= 2


async def test_non_transient_errors_are_not_retried() -> None:
    """A ValueError (not transient) fails at once."""
    limiter = Limiter(retry=RetrySpec(attempts=5))
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("no")

    with pytest.raises(ValueError):
        await limiter.call(bad)
    assert calls == 1


async def test_breaker_trips_fails_fast_tries_once_and_closes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """After `failures` consecutive transient failures calls fail fast; after
    reset_timeout exactly one trial runs while others fail fast; its success
    closes the breaker."""
    limiter = Limiter(failures=3, reset_timeout=30)

    async def down() -> None:
        raise ConnectionRefusedError("down")

    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await limiter.call(down)
    assert limiter.breaker == "open"
    with pytest.raises(CircuitOpen):
        await limiter.call(down)
    await trio.sleep(30)
    assert limiter.breaker == "half_open"
    release = trio.Event()
    refused: list[BaseException] = []

    async def trial() -> str:
        await release.wait()
        return "up"

    async def other() -> None:
        try:
            await limiter.call(trial)
        except CircuitOpen as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        results: list[str] = []

        async def first() -> None:
            results.append(await limiter.call(trial))

        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(other)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert results == ["up"] and len(refused) == 1
    assert limiter.breaker == "closed"


async def test_a_failed_or_hung_trial_reopens_the_breaker(autojump_clock: trio.abc.Clock) -> None:
    """A trial that fails, or hangs past the timeout, opens the breaker again."""
    limiter = Limiter(failures=1, reset_timeout=10, timeout=3)

    async def down() -> None:
        raise OSError("down")

    with pytest.raises(OSError):
        await limiter.call(down)
    await trio.sleep(10)
    with pytest.raises(TimeoutError):
        await limiter.call(trio.sleep_forever)  # the hung trial, bounded by timeout
    assert limiter.breaker == "open"
    assert trio.current_time() == pytest.approx(13)


async def test_cancellation_never_counts_as_a_failure(autojump_clock: trio.abc.Clock) -> None:
    """Calls cancelled by their caller leave the breaker closed."""
    limiter = Limiter(failures=1, reset_timeout=10)
    for _ in range(5):
        with trio.move_on_after(1):
            await limiter.call(trio.sleep_forever)
    assert limiter.breaker == "closed"


async def test_limits_change_while_calls_run(autojump_clock: trio.abc.Clock) -> None:
    """configure() applies at once: a higher max_concurrency admits waiters
    now, a lower one takes effect as running calls finish, a new rate
    counts the admissions already made."""
    limiter = Limiter(max_concurrency=1)
    running = peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(10)
        running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(limiter.call, work)
        await trio.testing.wait_all_tasks_blocked()
        assert running == 1
        limiter.configure(max_concurrency=3)
        await trio.testing.wait_all_tasks_blocked()
        assert running == 3 and limiter.statistics().waiting["normal"] == 3
        limiter.configure(max_concurrency=1)
        await trio.sleep(10.5)  # the three finish; only one of the rest starts
        assert running == 1
    assert peak == 3
    limiter.configure(max_concurrency=None, rate=RateSpec(requests=2, period=60))
    started: list[float] = []

    async def mark() -> None:
        started.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(limiter.call, mark)
    base = started[0]
    assert [t - base for t in started] == [0, 0, 60, 60]
    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):
        limiter.configure(max_concurrency=0)


async def test_statistics_count_waits_retries_timeouts_and_failures(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The counters metrics read: admissions that waited and for how long,
    waits for the rate window, retries, timeouts and failed attempts."""
    limiter = Limiter(
        max_concurrency=1,
        rate=RateSpec(requests=2, period=10),
        timeout=1,
        retry=RetrySpec(attempts=2, initial=0.5),
    )

    async def work() -> None:
        await trio.sleep(0.25)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(limiter.call, work)
    stats = limiter.statistics()
    # The second waited 0.25 s for the token; the third also for the window.
    assert (stats.admitted, stats.waited, stats.rate_waits) == (3, 2, 1)
    assert stats.wait_seconds == pytest.approx(0.25 + 10)
    with pytest.raises(TimeoutError):
        await limiter.call(trio.sleep_forever)
    stats = limiter.statistics()
    assert (stats.retries, stats.timeouts, stats.failures) == (1, 2, 2)
    assert stats.rate == RateSpec(requests=2, period=10)


async def test_a_failure_that_may_not_be_retried_still_counts(
    autojump_clock: trio.abc.Clock,
) -> None:
    """should_retry=False (an attempt that may have taken effect) is not
    repeated, but the breaker counts it: a backend that only ever times out
    still trips the breaker."""
    limiter = Limiter(
        timeout=1,
        retry=RetrySpec(attempts=3),
        failures=2,
        should_retry=lambda error: not isinstance(error, TimeoutError),
    )
    attempts = 0

    async def hang() -> None:
        nonlocal attempts
        attempts += 1
        await trio.sleep_forever()

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await limiter.call(hang)
    assert attempts == 2
    assert limiter.breaker == "open"
    with pytest.raises(CircuitOpen):
        await limiter.call(hang)
