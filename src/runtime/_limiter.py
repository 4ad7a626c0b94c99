"""A limiter for calls to a shared backend: concurrency, rate, priority,
timeout, retries and a circuit breaker, on trio's clock.

``Limiter.call(fn, *args, priority=...)`` waits for admission, runs
``await fn(*args)`` under the per-request timeout, retries transient failures
with exponential backoff and full jitter, and keeps the breaker's count.
Admission needs a free concurrency token, room in the rate window (at most
``rate.requests`` admissions in every window ``[t, t + rate.period)``, ``t``
the start of a call), no pause in force (``pause()``, for ``Retry-After``) and
a breaker that lets the call through (a ``CircuitBreaker``, whose half-open
trial every way a call can end gives back). Waiters are admitted highest
priority first, FIFO within one.

A shared limiter (``shared=SharedLimits(...)``) also needs a grant from the
coordination engine before it admits its head waiter: one waiter at a time
asks for it, and whichever waiter is the head when it comes is admitted
with it. When the engine cannot be reached, the limits fall back to this
process's share (``limit / members``) until it is back.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio

from ._breaker import BreakerState, CircuitBreaker, TrialOutcome
from ._logging import get_logger
from ._priority import PRIORITY_INDEX, check_priority
from ._shared import SharedLimits
from ._specs import RateSpec, RetrySpec
from .errors import CircuitOpen

__all__ = ["KEEP", "Limiter", "LimiterStatistics"]

logger = get_logger()

T = TypeVar("T")


@attrs.frozen
class LimiterStatistics:
    """A snapshot of a limiter.

    Attributes:
        tokens_in_use, max_concurrency: calls running, and the most allowed
            (None: no limit).
        waiting: waiters by priority.
        admitted: admissions so far (retries count again).
        rejected: calls refused with ``CircuitOpen``.
        in_window: admissions in the current rate window.
        rate: the rate limit (None: none).
        paused_for: seconds left of a ``pause()``.
        breaker: ``closed``, ``open`` or ``half_open``; None without a breaker.
        waited: admissions that had to wait.
        wait_seconds: the time those admissions waited, in all.
        rate_waits: admissions that waited for room in the rate window.
        retries: attempts after a transient failure.
        timeouts: attempts that ran past ``timeout``.
        failures: attempts that failed (transient or not).
        last_failure: the last failure the breaker counted (``repr``), also
            after it closed; None without a breaker or before any.
        shared: ``backend`` (the limits are counted on the coordination
            engine, for every process), ``fallback`` (the engine cannot be
            reached: this process admits its share) or None (not shared).
        members: the processes sharing the limits, as last counted on the
            engine (None: not shared).
        share_concurrency, share_rate: this process's own limits in
            fallback (``limit / members``, at least 1); None otherwise.
    """

    tokens_in_use: int
    max_concurrency: int | None
    waiting: dict[str, int]
    admitted: int
    rejected: int
    in_window: int
    rate: RateSpec | None
    paused_for: float
    breaker: str | None
    waited: int = 0
    wait_seconds: float = 0.0
    rate_waits: int = 0
    retries: int = 0
    timeouts: int = 0
    failures: int = 0
    last_failure: str | None = None
    shared: str | None = None
    members: int | None = None
    share_concurrency: int | None = None
    share_rate: int | None = None


class _Keep:
    """The type of ``KEEP``: ``configure``'s "leave this limit as it is"."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()

_GRANT_NEEDED = -1.0
"""``_blocked_until``: only a grant from the coordination engine is missing."""


class _Waiter:
    __slots__ = ("admitted", "error", "event", "priority", "rate_blocks", "trial")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.admitted: object = None  # the token's borrower, once admitted
        self.trial: CircuitBreaker | None = None  # admitted as this breaker's trial
        self.error: BaseException | None = None
        self.event = trio.Event()
        self.rate_blocks = 0  # the limiter's count of full-window pumps when it queued


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, (TimeoutError, OSError))


class Limiter:
    """Admission and retry policy for calls to one backend.

    Args:
        max_concurrency: calls running at once (the tokens of a
            ``trio.CapacityLimiter``); None for no limit.
        rate: at most ``rate.requests`` admissions in every ``rate.period``.
        timeout: seconds each attempt may take; it then fails with
            ``TimeoutError`` (transient).
        retry: how transient failures are retried; None: no retry.
        failures, reset_timeout: the circuit breaker: after ``failures``
            consecutive transient failures calls fail fast with
            ``CircuitOpen`` (naming the last failure); after
            ``reset_timeout`` one trial call is let through, whose success
            closes the circuit and whose failure opens it again. None: no
            breaker.
        is_transient: which exceptions are the backend's failures (counted
            by the breaker, and retried); by default ``TimeoutError`` and
            ``OSError``.
        should_retry: of those, which may be tried again (False, say, for a
            request that may have taken effect); by default all.
        name: shown in errors and logs.
        shared: the limits' shared side (a resource with ``shared: true``);
            None for limits of this process alone.

    Every limit can be changed while calls run, with ``configure``.

    Raises:
        ValueError: ``max_concurrency`` or ``failures`` below 1, or a
            negative ``reset_timeout``.
    """

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        rate: RateSpec | None = None,
        timeout: float | None = None,
        retry: RetrySpec | None = None,
        failures: int | None = None,
        reset_timeout: float = 60.0,
        is_transient: Callable[[BaseException], bool] = _is_transient,
        should_retry: Callable[[BaseException], bool] | None = None,
        name: str = "limiter",
        shared: SharedLimits | None = None,
    ) -> None:
        _check_concurrency(max_concurrency)
        self.name = name
        self.max_concurrency = max_concurrency
        # Tokens: the CapacityLimiter counts them; admission order is this
        # class's (priorities), so nothing ever waits inside the CapacityLimiter.
        self._tokens = trio.CapacityLimiter(
            max_concurrency if max_concurrency is not None else math.inf
        )
        self.rate = rate
        self._local_rate = rate  # the rate this process applies (its share in fallback)
        self.timeout = timeout
        self.retry = retry
        self.failures = failures
        self.reset_timeout = reset_timeout
        self.is_transient = is_transient
        self.should_retry = should_retry
        self._queues: tuple[deque[_Waiter], ...] = (deque(), deque(), deque())
        # When each call in the last period started, in order (the backend
        # sees starts: a waiter admitted by another task's release is counted
        # in _reserved until its own task runs and starts it).
        self._window: deque[float] = deque()
        self._reserved = 0  # waiters admitted by another task's pump, not started yet
        self._awaiting_starts = False  # the head waits for those to start to time the window
        self._paused_until = -math.inf
        self._timed: _Waiter | None = None  # the head waiter, which times the next slot
        self._admitted = 0
        self._rejected = 0
        self._waited = 0
        self._wait_seconds = 0.0
        self._rate_waits = 0
        self._rate_blocks = 0  # pumps that found the rate window full
        self._retries = 0
        self._timeouts = 0
        self._failed = 0
        self._breaker = self._new_breaker()
        self._random = random.Random()
        self._shared = shared
        self._grant: object = None  # a grant from the engine, for the head waiter
        self._acquiring = False  # a waiter is asking the engine for a grant
        self._grant_retry_at = -math.inf  # when to ask the engine again
        if shared is not None:
            shared.on_change = self._shared_changed
            shared.on_pause = self._pause_locally

    def configure(
        self,
        *,
        max_concurrency: int | _Keep | None = KEEP,
        rate: RateSpec | _Keep | None = KEEP,
        timeout: float | _Keep | None = KEEP,
        retry: RetrySpec | _Keep | None = KEEP,
        failures: int | _Keep | None = KEEP,
        reset_timeout: float | _Keep = KEEP,
    ) -> None:
        """Change limits while calls run; a limit not given is kept (None
        removes one).

        Calls running keep their tokens: a lower ``max_concurrency`` takes
        effect as they finish. Admissions already made stay in the rate
        window. A breaker that is removed closes; one that is added starts
        closed. Waiters are admitted at once if the new limits allow.

        Raises:
            ValueError: a limit out of range (nothing is then changed).
        """
        if not isinstance(max_concurrency, _Keep):
            _check_concurrency(max_concurrency)
        new_failures = self.failures if isinstance(failures, _Keep) else failures
        new_reset = self.reset_timeout if isinstance(reset_timeout, _Keep) else reset_timeout
        breaker = self._breaker
        if new_failures is None:
            breaker = None
        elif breaker is None:
            breaker = CircuitBreaker(new_failures, new_reset, name=self.name)
        else:
            breaker.configure(failures=new_failures, reset_timeout=new_reset)
        # A call still holding a removed breaker's trial ends it on that
        # breaker, never on one added later.
        self._breaker = breaker
        self.failures = new_failures
        self.reset_timeout = new_reset
        if not isinstance(max_concurrency, _Keep):
            self.max_concurrency = max_concurrency
        if not isinstance(rate, _Keep):
            self.rate = rate
            if rate is None:
                self._window.clear()
        self._apply_share()
        if not isinstance(timeout, _Keep):
            self.timeout = timeout
        if not isinstance(retry, _Keep):
            self.retry = retry
        self._grant_retry_at = -math.inf
        self._timed = None
        self._pump()

    # -- shared limits -------------------------------------------------------

    def _apply_share(self) -> None:
        """Set this process's own limits: the whole limits, or in fallback
        its share of them (``limit / members``, at least 1)."""
        shared = self._shared
        members = shared.members if shared is not None and shared.mode == "fallback" else 1
        concurrency = self.max_concurrency
        self._tokens.total_tokens = (
            math.inf if concurrency is None else max(1, concurrency // members)
        )
        rate = self.rate
        if rate is None or shared is None or shared.mode != "fallback":
            self._local_rate = rate
        else:  # its share, over the period the engine counts (with its guard)
            self._local_rate = RateSpec(
                requests=max(1, rate.requests // members), period=shared.window(rate)
            )

    def _shared_changed(self) -> None:
        """The engine's side changed (a lease came back, fallback, recovery):
        the head waiter asks again."""
        self._apply_share()
        self._grant_retry_at = -math.inf
        self._timed = None
        self._pump()

    async def _head_deadline(self, head: _Waiter) -> float | None:
        """When the head waiter should look again; None once it asked the
        engine for a grant (it then looks at once)."""
        now = trio.current_time()
        blocked = self._blocked_until(now)
        if blocked != _GRANT_NEEDED:
            return blocked or math.inf
        if self._acquiring:
            return math.inf  # the asker wakes the head when answered
        if now < self._grant_retry_at:
            return self._grant_retry_at
        await self._acquire_grant(head.priority)
        return None

    async def _acquire_grant(self, priority: int) -> None:
        """Ask the engine for a grant for the head (at ``priority``); then the
        head, whichever waiter it is by then, is woken to take it."""
        assert self._shared is not None
        self._acquiring = True
        try:
            result = await self._shared.acquire(priority, self.max_concurrency, self.rate)
        finally:
            self._acquiring = False
        if isinstance(result, float):
            self._grant_retry_at = trio.current_time() + result
        elif result is not None:
            self._grant = result
        self._timed = None  # the next pump wakes the head

    def _publish_waiting(self) -> None:
        assert self._shared is not None
        best = next((i for i, queue in enumerate(self._queues) if queue), None)
        self._shared.set_waiting(best)

    # -- the breaker ---------------------------------------------------------

    def _new_breaker(self) -> CircuitBreaker | None:
        if self.failures is None:
            return None
        return CircuitBreaker(self.failures, self.reset_timeout, name=self.name)

    @property
    def breaker(self) -> str | None:
        """``closed``, ``open`` or ``half_open`` (None without a breaker)."""
        breaker = self._breaker
        return breaker.state().value if breaker is not None else None

    def _succeeded(self, trial: CircuitBreaker | None) -> None:
        """An attempt succeeded: the trial's success, or one more in a row."""
        if trial is not None:
            closed = trial.end_trial(TrialOutcome.SUCCEEDED)
        else:
            closed = self._breaker is not None and self._breaker.record_success()
        if closed and (trial is None or trial is self._breaker):
            logger.info("breaker_closed", resource=self.name)

    def _failed_attempt(
        self, trial: CircuitBreaker | None, error: Exception, transient: bool
    ) -> None:
        """An attempt failed with ``error``: a trial's failure (whatever the
        error) opens the circuit again; otherwise a transient one counts."""
        breaker = self._breaker
        if trial is not None:
            opened = trial.end_trial(TrialOutcome.FAILED, error)
        elif breaker is not None and transient:
            opened = breaker.record_failure(error)
        else:
            return
        if opened and breaker is not None and (trial is None or trial is breaker):
            stats = breaker.statistics()
            logger.warning(
                "breaker_opened",
                resource=self.name,
                failures=stats.consecutive_failures,
                reset_timeout=stats.reset_timeout,
                error=repr(error),
            )
            self._fail_waiters(breaker)

    def _fail_waiters(self, breaker: CircuitBreaker) -> None:
        """Refuse every waiter: the circuit is open."""
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                waiter.error = breaker.refusal() or CircuitOpen(
                    f"{self.name}: circuit breaker is open"
                )
                self._rejected += 1
                waiter.event.set()
        self._timed = None
        if self._shared is not None:
            if self._grant is not None:
                self._shared.release(self._grant)
                self._grant = None
            self._publish_waiting()

    # -- admission -----------------------------------------------------------

    def _head(self) -> _Waiter | None:
        for queue in self._queues:
            if queue:
                return queue[0]
        return None

    def _rate_full(self, now: float) -> float | None:
        """When the rate window has room again, or None if it has room now.

        The window holds the start times of the last period, in order, and
        counts the waiters admitted but not started yet (``_reserved``). A
        start ``t`` leaves it when ``t + period <= now``: the same float
        expression a checker of "at most ``requests`` in every window ``[t,
        t + period)``" evaluates, so the rule and its accounting agree
        exactly, boundaries included.
        """
        rate = self._local_rate
        if rate is None:
            return None
        window = self._window
        period = rate.period
        while window and window[0] + period <= now:
            window.popleft()
        over = len(window) + self._reserved - rate.requests
        if over < 0:
            return None
        if over >= len(window):
            # Full of admitted calls yet to start: the next time room comes
            # is known once they start (_unreserve wakes the head then).
            self._awaiting_starts = True
            return math.inf
        # Room comes when the start at `over` (and every earlier one) leaves.
        return window[over] + period

    def _in_window(self, now: float) -> int:
        """Admissions in the rate window at ``now`` (reads only)."""
        if self._local_rate is None:
            return 0
        period = self._local_rate.period
        gone = next((i for i, t in enumerate(self._window) if t + period > now), len(self._window))
        return len(self._window) - gone + self._reserved

    def _blocked_until(self, now: float) -> float | None:
        """None if one more call may be admitted now, else when that may change
        (``inf``: only when a token is released; ``_GRANT_NEEDED``: when the
        coordination engine grants it)."""
        if self._paused_until > now:
            return self._paused_until
        room = self._rate_full(now)
        if room is not None:
            return room
        if self._tokens.available_tokens < 1:
            return math.inf
        if self._shared is not None and self._grant is None and self._shared.mode == "backend":
            return _GRANT_NEEDED
        return None

    def _pump(self) -> None:
        """Admit waiters, best first, while everything allows; wake the new head.

        An open breaker refuses every waiter; a half-open one admits the
        first as its trial, and the others wait for the trial's outcome.
        """
        now = trio.current_time()
        breaker = self._breaker
        while (head := self._head()) is not None:
            if breaker is not None and breaker.state(now) is BreakerState.OPEN:
                self._fail_waiters(breaker)
                return
            if self._blocked_until(now) is not None:
                if self._rate_full(now) is not None:
                    self._rate_blocks += 1
                break
            trial = None
            if breaker is not None and breaker.state(now) is BreakerState.HALF_OPEN:
                if not breaker.try_take_trial(now):
                    break  # the trial is running: the others wait for its outcome
                trial = breaker
            self._queues[head.priority].popleft()
            # It waited for the rate if the window was found full since it queued.
            self._rate_waits += self._rate_blocks > head.rate_blocks
            head.admitted = self._take()
            head.trial = trial
            self._reserved += 1  # until its own task runs and starts it (in _wait)
            head.event.set()
        head = self._head()
        if head is not self._timed:
            self._timed = head
            if head is not None:
                head.event.set()  # let the new head time the next slot
        if self._shared is not None:
            if head is None and self._grant is not None:
                self._shared.release(self._grant)  # its waiter left: nobody takes it
                self._grant = None
            self._publish_waiting()

    def _take(self) -> object:
        """Take a token; returns the borrower (the engine's grant, if any)."""
        borrower = self._grant
        if borrower is None:
            borrower = object()
        else:
            self._grant = None
        self._tokens.acquire_on_behalf_of_nowait(borrower)
        self._admitted += 1
        return borrower

    def _unreserve(self) -> None:
        """A waiter admitted by a pump started, or gave its admission back."""
        self._reserved -= 1
        if self._awaiting_starts:
            self._awaiting_starts = False
            if self._timed is not None:
                self._timed.event.set()  # its deadline can be known now: time it again

    def _release(self, borrower: object) -> None:
        self._tokens.release_on_behalf_of(borrower)
        if self._shared is not None:
            self._shared.release(borrower)
        self._pump()

    async def _admit(self, priority: str) -> tuple[object, CircuitBreaker | None]:
        """Wait for admission; returns the token's borrower and, if this call
        is the half-open trial, the breaker whose trial it holds (it must end
        it: see ``call``).

        Cancellation while waiting leaves no waiter, holds no token and no
        trial.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        now = trio.current_time()
        breaker = self._breaker
        if breaker is not None:
            refusal = breaker.refusal(now)
            if refusal is not None:
                self._rejected += 1
                raise refusal
        if self._head() is None and self._blocked_until(now) is None:
            # The fast path: nobody waits and nothing blocks. No schedule
            # point from here to the call: it starts now.
            trial = breaker if breaker is not None and breaker.try_take_trial(now) else None
            borrower = self._take()
            if self._local_rate is not None:
                self._window.append(now)
            return borrower, trial
        return await self._wait(_Waiter(PRIORITY_INDEX[priority]), now)

    async def _wait(self, waiter: _Waiter, now: float) -> tuple[object, CircuitBreaker | None]:
        """Queue ``waiter`` and wait for its admission (``now``: when it came).

        Another task's pump may admit it (token, place reserved in the rate
        window, maybe the trial) in the same scheduling round in which it is
        cancelled: it then gives all three back before the cancellation
        propagates.
        """
        self._queues[waiter.priority].append(waiter)
        waiter.rate_blocks = self._rate_blocks
        try:
            while True:
                waiter.event = trio.Event()
                self._pump()
                if waiter.admitted is not None or waiter.error is not None:
                    break
                deadline = math.inf
                if waiter is self._timed:
                    found = await self._head_deadline(waiter)
                    if found is None:
                        continue  # the engine answered: admit (or time) the head again
                    deadline = found
                with trio.move_on_at(deadline):
                    await waiter.event.wait()
                if waiter.admitted is not None or waiter.error is not None:
                    break
        except BaseException:
            if waiter.admitted is not None:
                self._unreserve()  # it never started: it takes no place in the window
                if waiter.trial is not None:
                    waiter.trial.end_trial(TrialOutcome.ABANDONED)
                self._release(waiter.admitted)
            else:
                self._queues[waiter.priority].remove(waiter)
                if self._timed is waiter:
                    self._timed = None
                self._pump()
            raise
        if waiter.error is not None:
            raise waiter.error
        started = trio.current_time()
        if self._local_rate is not None:
            # Every start in the window came at or before `started`: it stays in order.
            self._window.append(started)
        self._unreserve()
        self._waited += 1
        self._wait_seconds += started - now
        return waiter.admitted, waiter.trial

    # -- calls ---------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a ``Retry-After``); calls running go
        on. A shared limiter pauses every process."""
        if self._shared is not None:
            self._shared.pause(seconds)
        self._pause_locally(seconds)

    def _pause_locally(self, seconds: float) -> None:
        until = trio.current_time() + seconds
        if until > self._paused_until:
            self._paused_until = until
            logger.info("limiter_paused", resource=self.name, seconds=seconds)
        self._timed = None
        self._pump()

    def resume(self) -> None:
        """End a pause now (``pause``'s opposite): waiters are admitted at
        once if the other limits allow."""
        if self._paused_until > trio.current_time():
            logger.info("limiter_resumed", resource=self.name)
        self._paused_until = -math.inf
        self._timed = None
        self._pump()

    def reset_breaker(self) -> None:
        """Close the breaker now and forget its failures in a row (an
        operator's reset); nothing without a breaker."""
        if self._breaker is None:
            return
        self._breaker.reset()
        logger.info("breaker_reset", resource=self.name)
        self._timed = None
        self._pump()

    async def call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, priority: str = "normal"
    ) -> T:
        """Run ``await fn(*args)`` under the limits, retrying transient failures.

        Waits for admission (strict priority, FIFO within one), then for the
        call; between retries it holds no token. Cancellation at any point
        releases what was taken and never counts as a failure. A call that
        is the half-open trial ends it however the call ends: a success
        closes the circuit, a failure (transient or not) opens it again, a
        cancellation frees the trial for the next call.

        Raises:
            CircuitOpen: the breaker is open (or half-open with its trial running).
            TimeoutError: the last attempt ran past ``timeout``.
            ValueError: ``priority`` is not high, normal or low.
            Whatever ``fn`` raised on its last attempt.
        """
        check_priority(priority)
        attempt = 0
        while True:
            attempt += 1
            borrower, trial = await self._admit(priority)
            try:
                result = await self._attempt(fn, args)
            except Exception as exc:
                self._failed += 1
                transient = self.is_transient(exc)
                ended, trial = trial, None
                self._failed_attempt(ended, exc, transient)
                if not self._retry_wanted(exc, transient, attempt):
                    raise
            else:
                ended, trial = trial, None
                self._succeeded(ended)
                return result
            finally:
                # Cancelled (alone, or in a group from the call's own
                # nursery), or a callback raised: never a failure, but the
                # trial is over, without a verdict: the next call may take it.
                if trial is not None:
                    trial.end_trial(TrialOutcome.ABANDONED)
                self._release(borrower)
            assert self.retry is not None
            self._retries += 1
            await trio.sleep(self.retry.delay(attempt, self._random.random()))

    def _retry_wanted(self, error: Exception, transient: bool, attempt: int) -> bool:
        """Whether a failed attempt is tried again (its token is released first)."""
        if not transient or attempt >= (self.retry.attempts if self.retry is not None else 1):
            return False
        if self.should_retry is not None and not self.should_retry(error):
            return False
        return self._breaker is None or self._breaker.refusal() is None

    async def _attempt(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        timeout = self.timeout
        if timeout is None:
            return await fn(*args)
        with trio.move_on_after(timeout) as scope:
            return await fn(*args)
        assert scope.cancelled_caught
        self._timeouts += 1
        raise TimeoutError(f"{self.name}: the call took longer than {timeout:g}s")

    def statistics(self) -> LimiterStatistics:
        """Tokens, waiters, admissions, rejections, window, breaker and counters, now."""
        now = trio.current_time()
        shared = self._shared
        fallback = shared is not None and shared.mode == "fallback"
        return LimiterStatistics(
            tokens_in_use=self._tokens.borrowed_tokens,
            max_concurrency=self.max_concurrency,
            waiting={p: len(self._queues[i]) for p, i in PRIORITY_INDEX.items()},
            admitted=self._admitted,
            rejected=self._rejected,
            in_window=self._in_window(now),
            rate=self.rate,
            paused_for=max(0.0, self._paused_until - now),
            breaker=self.breaker,
            waited=self._waited,
            wait_seconds=self._wait_seconds,
            rate_waits=self._rate_waits,
            retries=self._retries,
            timeouts=self._timeouts,
            failures=self._failed,
            last_failure=(
                None
                if self._breaker is None or self._breaker.last_failure is None
                else repr(self._breaker.last_failure)
            ),
            shared=shared.mode if shared is not None else None,
            members=shared.members if shared is not None else None,
            share_concurrency=(
                int(self._tokens.total_tokens)
                if fallback and self.max_concurrency is not None
                else None
            ),
            share_rate=(
                self._local_rate.requests if fallback and self._local_rate is not None else None
            ),
        )


def _check_concurrency(max_concurrency: int | None) -> None:
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
