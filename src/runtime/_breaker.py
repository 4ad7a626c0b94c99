"""A circuit breaker: typed states and explicit transitions, one implementation
for the limiter (a backend's failures), actor cells and resources (crashes).

States and transitions::

                 `failures` consecutive record_failure()
        CLOSED ─────────────────────────────────────────▶ OPEN ◀─┐
          ▲                                                │      │
          │ record_success(),                 reset_timeout│      │ a failure,
          │ end_trial(SUCCEEDED)         (auto_half_open), │      │ end_trial(FAILED)
          │                              or half_open()    ▼      │
          └──────────────────────────────────────────── HALF_OPEN ┘

    reset(): any state -> CLOSED, no failures counted, no trial.

Half-open lets exactly one trial through: ``try_take_trial()`` hands it to
one caller, who must end it with ``end_trial()`` whatever happens (succeeded,
failed, or abandoned: cancelled, timed out before it ran, refused); until
then ``check()`` refuses everyone else. An abandoned trial leaves the circuit
half-open with the trial free for the next caller.

The breaker is pure logic: it starts no task, does no I/O and reads the time
only when a caller passes none (``trio.current_time()``). Its owner does the
effects (logging, failing waiters, restarting a child) from what the
transitions return. Every method is synchronous and never yields, so each is
atomic with respect to other tasks and to cancellation; a ``check()``
followed by ``try_take_trial()`` with no ``await`` between is one atomic
admission.
"""

from __future__ import annotations

import enum

import attrs
import trio

from .errors import CircuitOpen

__all__ = ["BreakerState", "BreakerStatistics", "CircuitBreaker", "TrialOutcome"]


class BreakerState(enum.Enum):
    """A breaker's state; ``.value`` is the name statistics and metrics show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class TrialOutcome(enum.Enum):
    """How a half-open trial ended (``CircuitBreaker.end_trial``)."""

    SUCCEEDED = "succeeded"
    """It worked: the circuit closes."""
    FAILED = "failed"
    """It failed: the circuit opens again, for a fresh ``reset_timeout``."""
    ABANDONED = "abandoned"
    """No verdict (cancelled, timed out before it ran, refused): the circuit
    stays half-open and the next caller may take the trial."""


@attrs.frozen
class BreakerStatistics:
    """A snapshot of a breaker.

    Attributes:
        state: the state now (an open auto-half-open breaker whose
            ``reset_timeout`` has passed shows ``HALF_OPEN``).
        failures, reset_timeout: its settings.
        consecutive_failures: failures since the last success or reset.
        trial_taken: a half-open trial was handed out and has not ended.
        opened_at: when it last opened (None while closed).
        half_opens_at: when it half-opens by itself (open, auto_half_open);
            else None.
        last_failure: the last failure recorded (kept after it closes).
        times_opened: how many times it opened (from closed or half-open).
    """

    state: BreakerState
    failures: int
    reset_timeout: float
    consecutive_failures: int
    trial_taken: bool
    opened_at: float | None
    half_opens_at: float | None
    last_failure: BaseException | None
    times_opened: int


def _now(now: float | None) -> float:
    return trio.current_time() if now is None else now


class CircuitBreaker:
    """A circuit breaker over a count of consecutive failures.

    Args:
        failures: consecutive failures that open the circuit (at least 1).
        reset_timeout: seconds an open circuit stays open before it is
            half-open (with ``auto_half_open``; else the owner's timer's).
        name: what ``CircuitOpen`` messages start with (a path, a resource).
        auto_half_open: whether an open circuit half-opens by itself once
            ``reset_timeout`` has passed since it opened (the limiter), or
            only on ``half_open()`` (an actor cell, whose supervisor starts
            the trial incarnation on its own timer).
        reason_format: the reason appended to ``CircuitOpen`` messages once a
            failure was recorded; ``str.format`` fields ``count`` (the
            consecutive failures), ``s`` (``"s"`` unless ``count`` is 1) and
            ``error`` (the last failure).

    Methods that take ``now`` read ``trio.current_time()`` when it is None.
    """

    __slots__ = (
        "_consecutive",
        "_last_failure",
        "_opened_at",
        "_state",
        "_times_opened",
        "_trial",
        "auto_half_open",
        "failures",
        "name",
        "reason_format",
        "reset_timeout",
    )

    def __init__(
        self,
        failures: int,
        reset_timeout: float,
        *,
        name: str = "breaker",
        auto_half_open: bool = True,
        reason_format: str = "after {count} consecutive failure{s}; last: {error!r}",
    ) -> None:
        _check(failures, reset_timeout)
        self.failures = failures
        self.reset_timeout = float(reset_timeout)
        self.name = name
        self.auto_half_open = auto_half_open
        self.reason_format = reason_format
        self._state = BreakerState.CLOSED  # as last stored; see state()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False  # the half-open trial is out and has not ended
        self._last_failure: BaseException | None = None
        self._times_opened = 0

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self.name!r} {self._state.value} "
            f"{self._consecutive}/{self.failures}{' trial' if self._trial else ''}>"
        )

    def configure(self, *, failures: int | None = None, reset_timeout: float | None = None) -> None:
        """Change the settings (None keeps one); the state is kept.

        A new ``failures`` applies from the next failure; a new
        ``reset_timeout`` counts from when the circuit last opened.

        Raises:
            ValueError: ``failures`` below 1 or ``reset_timeout`` below 0.
        """
        failures = self.failures if failures is None else failures
        reset_timeout = self.reset_timeout if reset_timeout is None else reset_timeout
        _check(failures, reset_timeout)
        self.failures = failures
        self.reset_timeout = float(reset_timeout)

    # -- reading -------------------------------------------------------------

    def state(self, now: float | None = None) -> BreakerState:
        """The state at ``now``; reading it changes nothing."""
        if self._state is BreakerState.OPEN and self.auto_half_open:
            assert self._opened_at is not None
            if _now(now) >= self._opened_at + self.reset_timeout:
                return BreakerState.HALF_OPEN
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the circuit is closed: every call may go ahead and none is
        a trial (one read, for the fast path of a call)."""
        return self._state is BreakerState.CLOSED

    @property
    def trial_taken(self) -> bool:
        """Whether a half-open trial is out and has not ended."""
        return self._trial

    @property
    def consecutive_failures(self) -> int:
        """Failures recorded since the last success or reset."""
        return self._consecutive

    @property
    def last_failure(self) -> BaseException | None:
        """The last failure recorded (kept after the circuit closes)."""
        return self._last_failure

    def refusal(self, now: float | None = None) -> CircuitOpen | None:
        """The ``CircuitOpen`` that ``check`` would raise at ``now``, or None
        if a call may go ahead (closed, or half-open with the trial free)."""
        state = self.state(now)
        if state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._trial):
            return None
        message = f"{self.name}: circuit breaker is {state.value}"
        error = self._last_failure
        if error is not None:
            count = self._consecutive
            s = "" if count == 1 else "s"
            message += " " + self.reason_format.format(count=count, s=s, error=error)
        refusal = CircuitOpen(message)
        refusal.__cause__ = error
        return refusal

    def check(self, now: float | None = None) -> None:
        """Refuse a call the circuit does not let through; changes nothing.

        A half-open circuit lets a call through while its trial is free: the
        caller then takes it with ``try_take_trial`` (no ``await`` between).

        Raises:
            CircuitOpen: open, or half-open with its trial taken; the message
                names the state and the last failure, which is its
                ``__cause__``.
        """
        refusal = self.refusal(now)
        if refusal is not None:
            raise refusal

    def statistics(self, now: float | None = None) -> BreakerStatistics:
        """State, settings, count, trial and last failure at ``now``; reads only."""
        state = self.state(now)
        half_opens_at = None
        if self._state is BreakerState.OPEN and self.auto_half_open:
            assert self._opened_at is not None
            half_opens_at = self._opened_at + self.reset_timeout
        return BreakerStatistics(
            state=state,
            failures=self.failures,
            reset_timeout=self.reset_timeout,
            consecutive_failures=self._consecutive,
            trial_taken=self._trial,
            opened_at=self._opened_at,
            half_opens_at=half_opens_at,
            last_failure=self._last_failure,
            times_opened=self._times_opened,
        )

    # -- transitions ---------------------------------------------------------

    def record_failure(self, error: BaseException, now: float | None = None) -> bool:
        """Count a failure; returns True if that opened the circuit.

        Closed: it opens when ``failures`` have come in a row. Half-open
        (a trial's or a straggler's failure): it opens again. Already open:
        its ``reset_timeout`` starts again from ``now``. A trial taken stays
        taken until its holder ends it.
        """
        now = _now(now)
        self._consecutive += 1
        self._last_failure = error
        state = self.state(now)
        if state is BreakerState.CLOSED and self._consecutive < self.failures:
            return False
        self._state = BreakerState.OPEN
        self._opened_at = now
        if state is BreakerState.OPEN:
            return False
        self._times_opened += 1
        return True

    def record_success(self) -> bool:
        """Count a success: no failures in a row; returns True if that closed
        an open or half-open circuit. A trial taken stays taken until its
        holder ends it."""
        self._consecutive = 0
        if self._state is BreakerState.CLOSED:
            return False
        self._state = BreakerState.CLOSED
        self._opened_at = None
        return True

    def try_take_trial(self, now: float | None = None) -> bool:
        """Take the half-open trial: True for exactly one caller per trial.

        False when not half-open at ``now`` or the trial is taken. The holder
        must end it with ``end_trial`` exactly once, whatever happens (in a
        ``finally``): a trial never ended refuses every later call.
        """
        if self._trial or self.state(now) is not BreakerState.HALF_OPEN:
            return False
        self._state = BreakerState.HALF_OPEN
        self._trial = True
        return True

    def end_trial(
        self,
        outcome: TrialOutcome,
        error: BaseException | None = None,
        now: float | None = None,
    ) -> bool:
        """End the trial taken with ``try_take_trial``; returns True if the
        outcome moved the circuit (``SUCCEEDED``: closed it; ``FAILED``:
        opened it).

        ``SUCCEEDED`` is then ``record_success()``, ``FAILED`` is
        ``record_failure(error, now)``, ``ABANDONED`` changes nothing else:
        the circuit stays as it is, the trial free for the next caller.

        Raises:
            ValueError: ``FAILED`` without its ``error``.
        """
        if outcome is TrialOutcome.FAILED and error is None:
            raise ValueError("a failed trial needs its error")
        self._trial = False
        if outcome is TrialOutcome.SUCCEEDED:
            return self.record_success()
        if outcome is TrialOutcome.FAILED:
            assert error is not None
            return self.record_failure(error, now)
        return False

    def half_open(self) -> bool:
        """Half-open an open circuit now, with its trial free; returns False
        (and changes nothing) if it is closed.

        A trial still marked taken is forgotten: call it only when that
        trial's holder can no longer end it (a supervisor starting the trial
        incarnation after the previous one ended).
        """
        if self._state is BreakerState.CLOSED:
            return False
        self._state = BreakerState.HALF_OPEN
        self._trial = False
        return True

    def reset(self) -> None:
        """Close the circuit and forget the failures in a row and any trial
        (a supervisor restarting a whole group). The last failure is kept
        for statistics. As ``half_open``, only when no trial holder remains."""
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = None
        self._trial = False


def _check(failures: int, reset_timeout: float) -> None:
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        raise ValueError(f"failures must be an integer of at least 1, got {failures!r}")
    if not (isinstance(reset_timeout, (int, float)) and reset_timeout >= 0):  # (not NaN)
        raise ValueError(f"reset_timeout must be seconds of at least 0, got {reset_timeout!r}")
