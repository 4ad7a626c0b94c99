"""The limiter under virtual time: concurrency, rate windows, priorities,
pauses, timeouts, retries and the circuit breaker."""

from __future__ import annotations

import functools
import itertools
import math

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


def _most_in_a_window(starts: list[float], period: float) -> int:
    """The most starts in any window ``[t, t + period)``, ``t`` a start:
    what a checker of the rate contract computes."""
    return max(
        (
            sum(1 for other in starts[index:] if other < t + period)
            for index, t in enumerate(starts)
        ),
        default=0,
    )


def _jump_to(clock: trio.testing.MockClock, when: float) -> None:
    clock.jump(when - trio.current_time())
    assert trio.current_time() == when  # exactly: the test is about the last bit


async def test_starts_at_the_window_boundary_agree_with_a_checker(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Admissions put exactly on window boundaries, where floats round
    (``(10.1 + 0.7) - 10.1 != 0.7``): nothing starts an ulp before
    ``t + period``, the waiters and a fast-path call start at exactly
    ``t + period``, and the recorded starts hold at most ``requests`` in
    every window ``[t, t + period)`` counted with a checker's arithmetic."""
    requests, period = 2, 0.7
    limiter = Limiter(rate=RateSpec(requests=requests, period=period))
    starts: list[float] = []

    async def mark() -> None:
        starts.append(trio.current_time())

    async def admit_at_the_boundary(newcomer: bool = False) -> None:
        n = len(starts)
        boundary = starts[n - requests] + period  # the checker's end of that window
        _jump_to(mock_clock, math.nextafter(boundary, -math.inf))
        if newcomer:
            nursery.start_soon(limiter.call, mark)
        await trio.testing.wait_all_tasks_blocked()
        assert len(starts) == n  # an ulp early: nothing starts
        _jump_to(mock_clock, boundary)
        await trio.testing.wait_all_tasks_blocked()
        assert len(starts) > n and set(starts[n:]) == {boundary}

    _jump_to(mock_clock, 10.1)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(limiter.call, mark)
            await trio.testing.wait_all_tasks_blocked()
        assert starts == [10.1, 10.1]
        while len(starts) < 10:
            await admit_at_the_boundary()
        assert limiter.statistics().waiting["normal"] == 0
        # A call an ulp early, with nobody waiting: it must wait, to the boundary.
        await admit_at_the_boundary(newcomer=True)
        await limiter.call(mark)  # fills the window again, at the same instant
        # The fast path (nobody waiting, no schedule point) at the boundary.
        boundary = starts[-requests] + period
        _jump_to(mock_clock, boundary)
        waited = limiter.statistics().waited
        await limiter.call(mark)
        assert starts[-1] == boundary and limiter.statistics().waited == waited
    assert len(starts) == 13
    assert _most_in_a_window(starts, period) == requests
    assert starts[2] - starts[0] != period  # the boundaries did round


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


# -- the half-open trial: every way it can end ---------------------------------
#
# After each, the breaker is in a stated state and a later call goes through.


async def _up() -> str:
    return "up"


async def _half_open(limiter: Limiter) -> None:
    """Open ``limiter``'s breaker with one transient failure, then wait it out."""

    async def down() -> None:
        raise ConnectionRefusedError("down")

    with pytest.raises(ConnectionRefusedError):
        await limiter.call(down)
    assert limiter.breaker == "open"
    await trio.sleep(limiter.reset_timeout)
    assert limiter.breaker == "half_open"


async def _goes_through(limiter: Limiter) -> None:
    """A later call runs and leaves the breaker closed (waiting out an open one)."""
    if limiter.breaker == "open":
        with pytest.raises(CircuitOpen):
            await limiter.call(_up)
        await trio.sleep(limiter.reset_timeout)
    assert await limiter.call(_up) == "up"
    assert limiter.breaker in ("closed", None)
    stats = limiter.statistics()
    assert (stats.tokens_in_use, sum(stats.waiting.values())) == (0, 0)


class _Holder:
    """A call that holds a token until released, then fails without counting
    (a non-transient error): the release admits the next waiter."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.release = trio.Event()
        self.then: list[trio.CancelScope] = []  # cancelled right before the token returns

    async def _hold(self) -> None:
        await self.release.wait()
        for scope in self.then:
            scope.cancel()
        raise LookupError("not a backend failure")

    async def run(self) -> None:
        with pytest.raises(LookupError):
            await self.limiter.call(self._hold)


async def _half_open_with_tokens_taken(limiter: Limiter, nursery: trio.Nursery) -> _Holder:
    """Half-open ``limiter`` (max_concurrency 1) while a call admitted
    before it opened holds the only token: the next caller waits for it."""
    holder = _Holder(limiter)
    limiter.configure(max_concurrency=2)
    nursery.start_soon(holder.run)
    await trio.testing.wait_all_tasks_blocked()
    await _half_open(limiter)
    limiter.configure(max_concurrency=1)
    return holder


async def test_trial_success_closes(autojump_clock: trio.abc.Clock) -> None:
    """The trial succeeds: closed, and the next call goes through."""
    limiter = Limiter(failures=1, reset_timeout=10)
    with trio.fail_after(100):
        await _half_open(limiter)
        assert await limiter.call(_up) == "up"
        assert limiter.breaker == "closed"
        await _goes_through(limiter)


async def test_trial_transient_failure_reopens(autojump_clock: trio.abc.Clock) -> None:
    """The trial fails transiently: open again for a fresh reset_timeout,
    refusing with the failure named; then a call goes through."""
    limiter = Limiter(failures=1, reset_timeout=10, name="llm")

    async def down() -> None:
        raise TimeoutError("no answer")

    with trio.fail_after(100):
        await _half_open(limiter)
        with pytest.raises(TimeoutError):
            await limiter.call(down)
        assert limiter.breaker == "open"
        with pytest.raises(
            CircuitOpen,
            match=r"^llm: circuit breaker is open after 2 "
            r"consecutive failures; last: TimeoutError\('no answer'\)$",
        ):
            await limiter.call(_up)
        await trio.sleep(9.9)
        assert limiter.breaker == "open"  # reset_timeout counts from the trial's failure
        await _goes_through(limiter)


async def test_trial_non_transient_failure_reopens(autojump_clock: trio.abc.Clock) -> None:
    """The trial fails with an error that is not the backend's (ValueError):
    no verdict that the backend is back, so it opens again; then a call
    goes through."""
    limiter = Limiter(failures=1, reset_timeout=10)

    async def bad() -> None:
        raise ValueError("bad request")

    with trio.fail_after(100):
        await _half_open(limiter)
        with pytest.raises(ValueError):
            await limiter.call(bad)
        assert limiter.breaker == "open"
        await _goes_through(limiter)


async def test_trial_cancelled_while_waiting_for_a_token(autojump_clock: trio.abc.Clock) -> None:
    """The would-be trial waits for a token and is cancelled: it never took
    the trial, which stays free; the breaker stays half-open."""
    limiter = Limiter(max_concurrency=1, failures=1, reset_timeout=10)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            holder = await _half_open_with_tokens_taken(limiter, nursery)
            with trio.move_on_after(1):
                await limiter.call(_up)
            assert limiter.statistics().waiting["normal"] == 0
            assert limiter.breaker == "half_open"
            holder.release.set()
        assert limiter.breaker == "half_open"
        await _goes_through(limiter)


async def test_trial_cancelled_in_the_round_it_is_admitted(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The race that wedged resources: the waiter is cancelled, then a
    release in the same scheduling round (before it runs) admits it as the
    trial. It must give back the token and the trial, not just the token:
    the breaker stays half-open and the next call is the trial."""
    limiter = Limiter(max_concurrency=1, failures=1, reset_timeout=10)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            holder = await _half_open_with_tokens_taken(limiter, nursery)
            cancelled = False

            async def waiter() -> None:
                nonlocal cancelled
                with trio.CancelScope() as scope:
                    holder.then.append(scope)
                    await limiter.call(_up)
                cancelled = scope.cancelled_caught

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.statistics().waiting["normal"] == 1
            holder.release.set()  # cancels the waiter, then returns the token
        assert cancelled
        assert limiter.breaker == "half_open"
        assert limiter.statistics().admitted == 3  # the holder, the failure, the waiter
        await _goes_through(limiter)


async def test_trial_admitted_then_cancelled_in_the_same_round(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The other order: a release admits the waiter as the trial and its
    scope is cancelled right after, before it runs. It starts and is
    cancelled at its first checkpoint: the trial is given back."""
    limiter = Limiter(max_concurrency=1, failures=1, reset_timeout=10)
    ran: list[float] = []

    async def trial() -> None:
        ran.append(trio.current_time())
        await trio.sleep_forever()

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            holder = await _half_open_with_tokens_taken(limiter, nursery)
            scope = trio.CancelScope()

            async def waiter() -> None:
                with scope:
                    await limiter.call(trial)

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            holder.release.set()
            while limiter.statistics().waiting["normal"]:
                await trio.lowlevel.checkpoint()  # until the holder's release admits it
            scope.cancel()
        assert scope.cancelled_caught and len(ran) == 1
        assert limiter.breaker == "half_open"
        await _goes_through(limiter)


async def test_trial_cancelled_by_a_deadline_in_the_round_it_is_admitted(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An ask's timeout and the release that admits the waiter fall at the
    same instant; trio runs the two tasks in either order. Over many
    rounds both orders come up; the breaker never wedges."""
    limiter = Limiter(max_concurrency=1, failures=1, reset_timeout=10)

    async def hold_until(deadline: float) -> None:
        await trio.sleep_until(deadline)
        raise LookupError("not a backend failure")

    async def holder(deadline: float) -> None:
        with pytest.raises(LookupError):
            await limiter.call(hold_until, deadline)

    async def waiter(deadline: float) -> None:
        with trio.move_on_at(deadline):
            await limiter.call(trio.sleep_forever)

    with trio.fail_after(10_000):
        for _ in range(40):
            limiter.configure(max_concurrency=2)
            deadline = trio.current_time() + 50
            async with trio.open_nursery() as nursery:
                nursery.start_soon(holder, deadline)
                await trio.testing.wait_all_tasks_blocked()
                await _half_open(limiter)
                limiter.configure(max_concurrency=1)
                nursery.start_soon(waiter, deadline)
            assert limiter.breaker == "half_open"
            await _goes_through(limiter)


async def test_trial_cancelled_while_running(autojump_clock: trio.abc.Clock) -> None:
    """The trial is cancelled mid-call: no verdict, half-open, trial free."""
    limiter = Limiter(failures=1, reset_timeout=10)
    with trio.fail_after(100):
        await _half_open(limiter)
        with trio.move_on_after(1):
            await limiter.call(trio.sleep_forever)
        assert limiter.breaker == "half_open"
        await _goes_through(limiter)


async def test_trial_timeout_reopens(autojump_clock: trio.abc.Clock) -> None:
    """The trial runs past the per-attempt timeout: a transient failure, so
    open again; then a call goes through."""
    limiter = Limiter(failures=1, reset_timeout=10, timeout=3)
    with trio.fail_after(100):
        await _half_open(limiter)
        with pytest.raises(TimeoutError):
            await limiter.call(trio.sleep_forever)
        assert limiter.breaker == "open"
        await _goes_through(limiter)


async def test_trial_waiter_admitted_plainly_when_the_breaker_is_removed(
    autojump_clock: trio.abc.Clock,
) -> None:
    """configure(failures=None) while the would-be trial waits: it runs as
    an ordinary call, and a breaker added later starts closed."""
    limiter = Limiter(max_concurrency=1, failures=1, reset_timeout=10)
    results: list[str] = []

    async def waiter() -> None:
        results.append(await limiter.call(_up))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            holder = await _half_open_with_tokens_taken(limiter, nursery)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            limiter.configure(failures=None)
            assert limiter.breaker is None
            holder.release.set()
        assert results == ["up"]
        limiter.configure(failures=1)
        assert limiter.breaker == "closed"
        await _goes_through(limiter)


async def test_trial_waiter_refused_when_a_longer_reset_timeout_reopens(
    autojump_clock: trio.abc.Clock,
) -> None:
    """configure(reset_timeout=...) longer while the would-be trial waits:
    the circuit is open again (the timeout counts from when it opened), so
    the waiter is refused; after the new timeout a call goes through."""
    limiter = Limiter(max_concurrency=1, failures=1, reset_timeout=10)
    refused: list[CircuitOpen] = []

    async def waiter() -> None:
        with pytest.raises(CircuitOpen) as info:
            await limiter.call(_up)
        refused.append(info.value)

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            holder = await _half_open_with_tokens_taken(limiter, nursery)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            limiter.configure(reset_timeout=30)
            assert limiter.breaker == "open"
            holder.release.set()
        assert len(refused) == 1 and "ConnectionRefusedError('down')" in str(refused[0])
        await trio.sleep(20)
        await _goes_through(limiter)


async def test_trial_running_when_the_breaker_changes_ends_on_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """configure(failures=3) while the trial runs keeps the breaker (and its
    trial): the trial's success closes it, and the new threshold holds."""
    limiter = Limiter(failures=1, reset_timeout=10)
    release = trio.Event()

    async def trial() -> str:
        await release.wait()
        return "up"

    async def down() -> None:
        raise OSError("down")

    with trio.fail_after(100):
        await _half_open(limiter)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.call, trial)
            await trio.testing.wait_all_tasks_blocked()
            limiter.configure(failures=3)
            with pytest.raises(CircuitOpen, match="half_open"):
                await limiter.call(_up)  # the trial is still out
            release.set()
        assert limiter.breaker == "closed"
        for _ in range(2):
            with pytest.raises(OSError):
                await limiter.call(down)
        assert limiter.breaker == "closed"
        await _goes_through(limiter)


async def test_pause_during_the_trial(autojump_clock: trio.abc.Clock) -> None:
    """pause() while the trial runs: the trial goes on and its success
    closes the breaker (a caller meanwhile is refused: the trial is out);
    the next caller waits out the pause and goes through."""
    limiter = Limiter(failures=1, reset_timeout=10)
    release = trio.Event()

    async def trial() -> str:
        await trio.sleep(1)
        await release.wait()
        return "up"

    with trio.fail_after(100):
        await _half_open(limiter)
        begin = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.call, trial)
            await trio.testing.wait_all_tasks_blocked()
            limiter.pause(5)
            with pytest.raises(CircuitOpen, match="half_open"):
                await limiter.call(_up)
            release.set()
        assert trio.current_time() == pytest.approx(begin + 1)
        assert limiter.breaker == "closed"
        assert await limiter.call(_up) == "up"
        assert trio.current_time() == pytest.approx(begin + 5)
        await _goes_through(limiter)


async def test_pause_before_the_trial_queues_it_and_the_rest_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Half-open under a pause: callers queue; when the pause ends the first
    is admitted as the trial and the others wait for its outcome, then go
    through once it closes the breaker."""
    limiter = Limiter(failures=1, reset_timeout=10)
    order: list[str] = []
    release = trio.Event()

    async def work(label: str) -> None:
        order.append(label)
        if label == "trial":
            await release.wait()

    with trio.fail_after(100):
        await _half_open(limiter)
        limiter.pause(5)
        async with trio.open_nursery() as nursery:
            for label in ("trial", "second", "third"):
                nursery.start_soon(limiter.call, work, label)
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(5)
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["trial"]
            assert limiter.statistics().waiting["normal"] == 2
            release.set()
        assert order[0] == "trial" and sorted(order[1:]) == ["second", "third"]
        assert limiter.breaker == "closed"
        await _goes_through(limiter)


async def test_trial_cancelled_while_paused(autojump_clock: trio.abc.Clock) -> None:
    """The would-be trial waits out a pause and is cancelled: the trial is
    never taken; after the pause a call is the trial and closes the breaker."""
    limiter = Limiter(failures=1, reset_timeout=10)
    with trio.fail_after(100):
        await _half_open(limiter)
        limiter.pause(5)
        with trio.move_on_after(1):
            await limiter.call(_up)
        assert limiter.breaker == "half_open"
        await _goes_through(limiter)


async def test_trial_is_not_retried(autojump_clock: trio.abc.Clock) -> None:
    """Retries inside the trial: its transient failure opens the circuit
    again, so it is not retried (the retry would be refused); the call
    raises the backend's error after one attempt."""
    limiter = Limiter(failures=1, reset_timeout=10, retry=RetrySpec(attempts=5, initial=0.1))
    attempts = 0

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionResetError("reset")

    with trio.fail_after(100):
        await _half_open(limiter)
        with pytest.raises(ConnectionResetError):
            await limiter.call(down)
        assert attempts == 1
        assert limiter.breaker == "open"
        await _goes_through(limiter)


async def test_a_retry_in_a_half_open_circuit_takes_the_trial(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A call whose first attempt failed retries after its backoff; the
    circuit opened meanwhile (reset_timeout 0: at once half-open), so the
    retry is the trial: others are refused while it runs, its success
    closes the breaker."""
    limiter = Limiter(
        failures=2,
        reset_timeout=0,
        retry=RetrySpec(attempts=2, initial=1),
        should_retry=lambda error: "flaky" in str(error),
    )
    go, second = trio.Event(), trio.Event()
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await go.wait()
            raise ConnectionResetError("flaky")
        await second.wait()
        return "up"

    async def down() -> None:
        await go.wait()
        raise ConnectionResetError("down")  # not retried (should_retry)

    results: list[str] = []

    async def retrying() -> None:
        results.append(await limiter.call(flaky))

    async def failing() -> None:
        with pytest.raises(ConnectionResetError):
            await limiter.call(down)

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retrying)
            nursery.start_soon(failing)
            await trio.testing.wait_all_tasks_blocked()
            go.set()  # two failures in a row: the circuit opens
            await trio.sleep(1)  # past the backoff: the retry runs, as the trial
            assert attempts == 2
            with pytest.raises(CircuitOpen, match="half_open"):
                await limiter.call(_up)
            second.set()
        assert results == ["up"]
        assert limiter.breaker == "closed"
        await _goes_through(limiter)


async def test_a_caller_deadline_stands_in_for_the_attempt_timeout_only_where_it_applies(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``deadline``: under a scope of the caller's that ends the call no
    later than the attempt's timeout would, the caller's scope ends it (no
    timeout counted); a deadline no scope of the task enforces leaves the
    limiter's own timeout in force."""
    limiter = Limiter(timeout=5)

    async def slow() -> None:
        await trio.sleep(100)

    with trio.move_on_after(3) as scope:
        await limiter.call(slow, deadline=scope.deadline)
    assert scope.cancelled_caught
    assert limiter.statistics().timeouts == 0
    start = trio.current_time()
    with pytest.raises(TimeoutError):
        await limiter.call(slow, deadline=trio.current_time() + 3)
    assert trio.current_time() - start == 5
    stats = limiter.statistics()
    assert (stats.timeouts, stats.tokens_in_use) == (1, 0)
