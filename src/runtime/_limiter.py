"""A limiter for calls to a shared backend: concurrency, rate, priority,
timeout, retries and a circuit breaker, on trio's clock.

``Limiter.call(fn, *args, priority=...)`` waits for admission, runs
``await fn(*args)`` under the per-request timeout, retries transient failures
with exponential backoff and full jitter, and keeps the breaker's count.
Admission needs a free concurrency token, room in the rate window (at most
``rate.requests`` admissions in every window ``[t, t + rate.period)``), no
pause in force (``pause()``, for ``Retry-After``) and a breaker that lets the
call through. Waiters are admitted highest priority first, FIFO within one.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio

from ._logging import get_logger
from ._priority import PRIORITIES
from ._specs import RateSpec, RetrySpec
from .errors import CircuitOpen

__all__ = ["KEEP", "Limiter", "LimiterStatistics"]

logger = get_logger()

T = TypeVar("T")
_INDEX = {priority: index for index, priority in enumerate(PRIORITIES)}


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


class _Keep:
    """The type of ``KEEP``: ``configure``'s "leave this limit as it is"."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


class _Waiter:
    __slots__ = ("admitted", "entry", "error", "event", "priority", "rate_blocks")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self.admitted: object = None  # the token's borrower, once admitted
        self.error: BaseException | None = None
        self.event = trio.Event()
        self.rate_blocks = 0  # the limiter's count of full-window pumps when it queued
        self.entry: list[float] | None = None  # its place in the rate window


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
            ``CircuitOpen``; after ``reset_timeout`` one trial call is let
            through. None: no breaker.
        is_transient: which exceptions are the backend's failures (counted
            by the breaker, and retried); by default ``TimeoutError`` and
            ``OSError``.
        should_retry: of those, which may be tried again (False, say, for a
            request that may have taken effect); by default all.
        name: shown in errors and logs.

    Every limit can be changed while calls run, with ``configure``.
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
        self.timeout = timeout
        self.retry = retry
        self.failures = failures
        self.reset_timeout = reset_timeout
        self.is_transient = is_transient
        self.should_retry = should_retry
        self._queues: tuple[deque[_Waiter], ...] = (deque(), deque(), deque())
        # When each call in the last period started: one-item lists, so a
        # waiter admitted by another task's release can move its own entry
        # to when it actually starts (the backend sees starts, not admissions).
        self._window: deque[list[float]] = deque()
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
        self._consecutive = 0
        self._opened_at: float | None = None  # breaker open since
        self._trial_running = False
        self._random = random.Random()

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
        """
        if not isinstance(max_concurrency, _Keep):
            _check_concurrency(max_concurrency)
            self.max_concurrency = max_concurrency
            self._tokens.total_tokens = max_concurrency if max_concurrency is not None else math.inf
        if not isinstance(rate, _Keep):
            self.rate = rate
            if rate is None:
                self._window.clear()
        if not isinstance(timeout, _Keep):
            self.timeout = timeout
        if not isinstance(retry, _Keep):
            self.retry = retry
        if not isinstance(failures, _Keep):
            if failures is None:
                self._consecutive = 0
                self._opened_at = None
                self._trial_running = False
            self.failures = failures
        if not isinstance(reset_timeout, _Keep):
            self.reset_timeout = reset_timeout
        self._timed = None
        self._pump()

    # -- the breaker ---------------------------------------------------------

    @property
    def breaker(self) -> str | None:
        """``closed``, ``open`` or ``half_open`` (None without a breaker)."""
        if self.failures is None:
            return None
        if self._opened_at is None:
            return "closed"
        if trio.current_time() < self._opened_at + self.reset_timeout:
            return "open"
        return "half_open"

    def _refuse(self) -> CircuitOpen | None:
        state = self.breaker
        if state == "open" or (state == "half_open" and self._trial_running):
            return CircuitOpen(f"{self.name}: circuit breaker is {state}")
        return None

    def _record(self, failed: bool, trial: bool) -> None:
        if trial:
            self._trial_running = False
        if self.failures is None:
            return
        if not failed:
            self._consecutive = 0
            if self._opened_at is not None:
                self._opened_at = None
                logger.info("breaker_closed", resource=self.name)
            return
        self._consecutive += 1
        if trial or self._consecutive >= self.failures:
            self._opened_at = trio.current_time()
            logger.warning(
                "breaker_opened",
                resource=self.name,
                failures=self._consecutive,
                reset_timeout=self.reset_timeout,
            )
            self._fail_waiters()

    def _fail_waiters(self) -> None:
        for queue in self._queues:
            while queue:
                waiter = queue.popleft()
                waiter.error = CircuitOpen(f"{self.name}: circuit breaker opened")
                self._rejected += 1
                waiter.event.set()
        self._timed = None

    # -- admission -----------------------------------------------------------

    def _head(self) -> _Waiter | None:
        for queue in self._queues:
            if queue:
                return queue[0]
        return None

    def _rate_full(self, now: float) -> float | None:
        """When the rate window has room again, or None if it has room now."""
        if self.rate is None:
            return None
        window = self._window
        period = self.rate.period
        while window and window[0][0] + period <= now:
            window.popleft()
        if len(window) >= self.rate.requests:
            # Entries are in admission order; a start moved later can only
            # make this wait longer than needed, never shorter.
            return window[0][0] + period
        return None

    def _blocked_until(self, now: float) -> float | None:
        """None if one more call may be admitted now, else when that may change
        (``inf``: only when a token is released)."""
        if self._paused_until > now:
            return self._paused_until
        room = self._rate_full(now)
        if room is not None:
            return room
        if self._tokens.available_tokens < 1:
            return math.inf
        return None

    def _pump(self) -> None:
        """Admit waiters, best first, while everything allows; wake the new head."""
        now = trio.current_time()
        while (head := self._head()) is not None:
            if self._blocked_until(now) is not None:
                if self._rate_full(now) is not None:
                    self._rate_blocks += 1
                break
            if self._refuse() is not None:
                if self.breaker == "half_open":
                    break  # the trial is running: the others wait for its outcome
                self._fail_waiters()
                return
            self._queues[head.priority].popleft()
            # It waited for the rate if the window was found full since it queued.
            self._rate_waits += self._rate_blocks > head.rate_blocks
            head.admitted = self._take(now)
            if self.rate is not None:
                head.entry = self._window[-1]
            head.event.set()
        head = self._head()
        if head is not self._timed:
            self._timed = head
            if head is not None:
                head.event.set()  # let the new head time the next slot

    def _take(self, now: float) -> object:
        """Take a token and a place in the rate window; returns the borrower."""
        borrower = object()
        self._tokens.acquire_on_behalf_of_nowait(borrower)
        self._admitted += 1
        if self.rate is not None:
            self._window.append([now])
        if self.breaker == "half_open":
            self._trial_running = True
        return borrower

    def _release(self, borrower: object) -> None:
        self._tokens.release_on_behalf_of(borrower)
        self._pump()

    async def _admit(self, priority: str) -> tuple[object, bool]:
        """Wait for admission; returns the token's borrower and whether this
        call is the half-open trial.

        Cancellation while waiting leaves no waiter and holds no token.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        refusal = self._refuse()
        if refusal is not None:
            self._rejected += 1
            raise refusal
        now = trio.current_time()
        if self._head() is None and self._blocked_until(now) is None:
            # The fast path: nobody waits and nothing blocks. No schedule
            # point here: the call that follows is the caller's.
            borrower = self._take(now)
            return borrower, self._trial_running and self.breaker == "half_open"
        return await self._wait(_Waiter(_INDEX[priority]), now)

    async def _wait(self, waiter: _Waiter, now: float) -> tuple[object, bool]:
        """Queue ``waiter`` and wait for its admission (``now``: when it came)."""
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
                    deadline = self._blocked_until(trio.current_time()) or math.inf
                with trio.move_on_at(deadline):
                    await waiter.event.wait()
                if waiter.admitted is not None or waiter.error is not None:
                    break
        except BaseException:
            if waiter.admitted is not None:
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
        if waiter.entry is not None:
            waiter.entry[0] = started  # admitted at the pump, starting now
        self._waited += 1
        self._wait_seconds += started - now
        return waiter.admitted, self._trial_running and self.breaker == "half_open"

    # -- calls ---------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a ``Retry-After``); calls running go on."""
        until = trio.current_time() + seconds
        if until > self._paused_until:
            self._paused_until = until
            logger.info("limiter_paused", resource=self.name, seconds=seconds)
        self._timed = None
        self._pump()

    async def call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, priority: str = "normal"
    ) -> T:
        """Run ``await fn(*args)`` under the limits, retrying transient failures.

        Waits for admission (strict priority, FIFO within one), then for the
        call; between retries it holds no token. Cancellation at any point
        releases what was taken and never counts as a failure.

        Raises:
            CircuitOpen: the breaker is open (or half-open with its trial running).
            TimeoutError: the last attempt ran past ``timeout``.
            ValueError: ``priority`` is not high, normal or low.
            Whatever ``fn`` raised on its last attempt.
        """
        if priority not in _INDEX:
            raise ValueError("priority must be 'high', 'normal' or 'low'")
        attempt = 0
        while True:
            attempt += 1
            borrower, trial = await self._admit(priority)
            try:
                result = await self._attempt(fn, args)
            except Exception as exc:
                self._failed += 1
                transient = self.is_transient(exc)
                if transient or trial:
                    self._record(failed=True, trial=trial)
                attempts = self.retry.attempts if self.retry is not None else 1
                retry = transient and (self.should_retry is None or self.should_retry(exc))
                if not retry or attempt >= attempts or self._refuse() is not None:
                    raise
            except BaseException:
                # Cancelled (alone, or in a group from the call's own
                # nursery): never a failure, but the trial is over.
                if trial:
                    self._trial_running = False
                raise
            else:
                self._record(failed=False, trial=trial)
                return result
            finally:
                self._release(borrower)
            assert self.retry is not None
            self._retries += 1
            await trio.sleep(self.retry.delay(attempt, self._random.random()))

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
        self._rate_full(now)  # drops admissions older than the window
        return LimiterStatistics(
            tokens_in_use=self._tokens.borrowed_tokens,
            max_concurrency=self.max_concurrency,
            waiting={p: len(self._queues[i]) for p, i in _INDEX.items()},
            admitted=self._admitted,
            rejected=self._rejected,
            in_window=len(self._window),
            rate=self.rate,
            paused_for=max(0.0, self._paused_until - now),
            breaker=self.breaker,
            waited=self._waited,
            wait_seconds=self._wait_seconds,
            rate_waits=self._rate_waits,
            retries=self._retries,
            timeouts=self._timeouts,
            failures=self._failed,
        )


def _check_concurrency(max_concurrency: int | None) -> None:
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
