"""The circuit breaker's state machine, alone: every transition, and a
half-open trial ending each way (time is passed in; one test reads trio's)."""

from __future__ import annotations

import pytest
import trio

from runtime._breaker import BreakerState, BreakerStatistics, CircuitBreaker, TrialOutcome
from runtime.errors import CircuitOpen

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def _opened(failures: int = 2, reset_timeout: float = 10.0, **kwargs: object) -> CircuitBreaker:
    """A breaker opened at t=100 by ``failures`` OSErrors in a row."""
    breaker = CircuitBreaker(failures, reset_timeout, name="db", **kwargs)  # type: ignore[arg-type]
    for n in range(failures):
        breaker.record_failure(OSError(f"down {n}"), now=100.0)
    assert breaker.state(100.0) is OPEN
    return breaker


def _half_open_with_trial() -> CircuitBreaker:
    breaker = _opened()
    assert breaker.try_take_trial(now=110.0)
    return breaker


def test_state_values_are_the_statistics_strings() -> None:
    """What statistics and metrics have always shown."""
    assert [state.value for state in BreakerState] == ["closed", "open", "half_open"]


def test_starts_closed_and_lets_calls_through() -> None:
    """A new breaker is closed, counts nothing and refuses nothing."""
    breaker = CircuitBreaker(3, 60, name="db")
    assert breaker.state(0.0) is CLOSED
    assert breaker.refusal(0.0) is None
    breaker.check(0.0)
    assert breaker.statistics(0.0) == BreakerStatistics(
        state=CLOSED,
        failures=3,
        reset_timeout=60.0,
        consecutive_failures=0,
        trial_taken=False,
        opened_at=None,
        half_opens_at=None,
        last_failure=None,
        times_opened=0,
    )
    assert not breaker.try_take_trial(0.0)  # no trial while closed


def test_opens_after_failures_in_a_row_only() -> None:
    """Failures below the threshold keep it closed and a success forgets
    them; the `failures`-th in a row opens it (True once)."""
    breaker = CircuitBreaker(3, 60, name="db")
    assert not breaker.record_failure(OSError("a"), now=1.0)
    assert not breaker.record_failure(OSError("b"), now=2.0)
    assert not breaker.record_success()  # closed already: nothing to close
    assert breaker.consecutive_failures == 0
    assert not breaker.record_failure(OSError("c"), now=3.0)
    assert not breaker.record_failure(OSError("d"), now=4.0)
    assert breaker.record_failure(OSError("e"), now=5.0)
    stats = breaker.statistics(5.0)
    assert (stats.state, stats.consecutive_failures, stats.opened_at) == (OPEN, 3, 5.0)
    assert (stats.half_opens_at, stats.times_opened) == (65.0, 1)
    assert str(stats.last_failure) == "e"


def test_open_refuses_naming_the_last_failure() -> None:
    """check() raises CircuitOpen with the state, the count and the last
    failure (also its __cause__); refusal() returns the same, raising nothing."""
    breaker = _opened(2)
    with pytest.raises(CircuitOpen) as info:
        breaker.check(101.0)
    assert str(info.value) == (
        "db: circuit breaker is open after 2 consecutive failures; last: OSError('down 1')"
    )
    assert info.value.__cause__ is breaker.last_failure
    refusal = breaker.refusal(101.0)
    assert isinstance(refusal, CircuitOpen) and str(refusal) == str(info.value)


def test_reason_format_is_the_owners() -> None:
    """An actor cell words its reason its own way; ``s`` pluralises."""
    breaker = CircuitBreaker(1, 5, name="root/a", reason_format="after crashing with {error!r}")
    breaker.record_failure(RuntimeError("boom"), now=0.0)
    with pytest.raises(
        CircuitOpen,
        match=r"^root/a: circuit breaker is open after crashing "
        r"with RuntimeError\('boom'\)$",
    ):
        breaker.check(0.0)
    single = CircuitBreaker(1, 5, name="x")
    single.record_failure(OSError("down"), now=0.0)
    assert "after 1 consecutive failure;" in str(single.refusal(0.0))


def test_a_failure_while_open_restarts_the_reset_timeout() -> None:
    """A straggler's failure while open is counted and the open period
    starts again; it is not a new opening (False)."""
    breaker = _opened(2, 10)
    assert not breaker.record_failure(TimeoutError("late"), now=105.0)
    stats = breaker.statistics(112.0)
    assert (stats.state, stats.opened_at, stats.half_opens_at) == (OPEN, 105.0, 115.0)
    assert (stats.consecutive_failures, stats.times_opened) == (3, 1)
    assert breaker.state(115.0) is HALF_OPEN


def test_auto_half_open_at_exactly_reset_timeout() -> None:
    """Open until opened_at + reset_timeout, half-open from that instant;
    reading the state changes nothing."""
    breaker = _opened(2, 10)
    assert breaker.state(109.999) is OPEN
    assert breaker.state(110.0) is HALF_OPEN
    assert breaker.refusal(110.0) is None  # the trial is free
    assert breaker.state(109.999) is OPEN  # nothing was stored by reading


def test_reading_never_changes_anything() -> None:
    """state(), refusal(), check() and statistics() only read."""
    breaker = _opened(2, 10)
    before = breaker.statistics(111.0)
    for _ in range(3):
        breaker.state(111.0)
        breaker.refusal(111.0)
        breaker.check(111.0)
        breaker.statistics(111.0)
    assert breaker.statistics(111.0) == before
    assert not breaker.trial_taken


def test_without_auto_half_open_only_half_open_does() -> None:
    """An actor cell's breaker stays open past reset_timeout until its
    supervisor calls half_open()."""
    breaker = _opened(2, 10, auto_half_open=False)
    assert breaker.state(1e9) is OPEN
    assert breaker.statistics(1e9).half_opens_at is None
    assert breaker.half_open()
    assert breaker.state(100.0) is HALF_OPEN
    assert breaker.try_take_trial(100.0)


def test_half_open_on_a_closed_breaker_does_nothing() -> None:
    """half_open() only moves an open (or half-open) circuit."""
    breaker = CircuitBreaker(1, 10, auto_half_open=False)
    assert not breaker.half_open()
    assert breaker.state(0.0) is CLOSED


def test_exactly_one_trial() -> None:
    """Half-open hands the trial to one caller; everyone else is refused
    (``half_open`` in the message) until it ends."""
    breaker = _opened()
    assert breaker.try_take_trial(110.0)
    assert breaker.trial_taken and breaker.state(110.0) is HALF_OPEN
    assert not breaker.try_take_trial(110.0)
    with pytest.raises(CircuitOpen, match=r"^db: circuit breaker is half_open after 2"):
        breaker.check(110.0)
    assert breaker.statistics(110.0).trial_taken


def test_no_trial_while_open() -> None:
    """Before reset_timeout has passed there is no trial to take."""
    breaker = _opened()
    assert not breaker.try_take_trial(105.0)
    assert not breaker.trial_taken


def test_trial_succeeded_closes() -> None:
    """SUCCEEDED closes (True), forgets the count, frees the trial."""
    breaker = _half_open_with_trial()
    assert breaker.end_trial(TrialOutcome.SUCCEEDED)
    stats = breaker.statistics(111.0)
    assert (stats.state, stats.consecutive_failures, stats.trial_taken) == (CLOSED, 0, False)
    assert stats.opened_at is None
    breaker.check(111.0)


def test_trial_failed_reopens_for_a_fresh_reset_timeout() -> None:
    """FAILED opens again (True) from the trial's failure; the error is
    the new reason; the trial is free for the next half-open period."""
    breaker = _half_open_with_trial()
    error = TimeoutError("still down")
    assert breaker.end_trial(TrialOutcome.FAILED, error, now=112.0)
    stats = breaker.statistics(112.0)
    assert (stats.state, stats.opened_at, stats.half_opens_at) == (OPEN, 112.0, 122.0)
    assert (stats.consecutive_failures, stats.times_opened, stats.trial_taken) == (3, 2, False)
    assert stats.last_failure is error
    assert breaker.state(121.9) is OPEN
    assert breaker.try_take_trial(122.0)


def test_trial_failed_needs_its_error() -> None:
    """The reason must be kept, so FAILED without the error is refused."""
    breaker = _half_open_with_trial()
    with pytest.raises(ValueError, match="needs its error"):
        breaker.end_trial(TrialOutcome.FAILED)
    assert breaker.trial_taken  # unchanged


def test_trial_abandoned_frees_the_trial() -> None:
    """ABANDONED (cancelled, timed out before it ran, refused) changes
    nothing but the trial: still half-open, and the next caller takes it."""
    breaker = _half_open_with_trial()
    assert not breaker.end_trial(TrialOutcome.ABANDONED)
    stats = breaker.statistics(111.0)
    assert (stats.state, stats.trial_taken, stats.consecutive_failures) == (HALF_OPEN, False, 2)
    breaker.check(111.0)
    assert breaker.try_take_trial(111.0)


def test_a_straggler_failure_during_the_trial_reopens_but_keeps_the_trial() -> None:
    """A call admitted before the circuit opened fails while the trial
    runs: open again; the trial stays out, so no second trial is handed
    out even once reset_timeout has passed, until the first one ends."""
    breaker = _half_open_with_trial()
    assert breaker.record_failure(OSError("straggler"), now=111.0)
    assert breaker.state(111.0) is OPEN and breaker.trial_taken
    assert breaker.state(121.0) is HALF_OPEN
    assert not breaker.try_take_trial(121.0)
    with pytest.raises(CircuitOpen, match="half_open"):
        breaker.check(121.0)
    assert breaker.end_trial(TrialOutcome.SUCCEEDED)
    assert breaker.state(121.0) is CLOSED


def test_a_success_closes_an_open_circuit() -> None:
    """Any success is evidence the backend answers: open or half-open
    circuits close (True); a trial out stays out until its holder ends it."""
    breaker = _opened()
    assert breaker.record_success()
    assert breaker.state(101.0) is CLOSED
    breaker = _half_open_with_trial()
    assert breaker.record_success()
    assert breaker.state(111.0) is CLOSED and breaker.trial_taken
    assert not breaker.end_trial(TrialOutcome.SUCCEEDED)  # already closed
    assert not breaker.trial_taken


def test_a_trial_failing_after_a_straggler_closed_the_circuit_counts_once() -> None:
    """The trial's failure after the circuit closed is one failure in a row."""
    breaker = _half_open_with_trial()
    breaker.record_success()
    assert not breaker.end_trial(TrialOutcome.FAILED, OSError("x"), now=112.0)
    assert breaker.state(112.0) is CLOSED and breaker.consecutive_failures == 1


def test_half_open_forgets_a_trial_still_out() -> None:
    """The supervisor half-opens again after the trial incarnation ended:
    its trial (if the cell never ended it) does not block the new one."""
    breaker = _opened(auto_half_open=False)
    breaker.half_open()
    assert breaker.try_take_trial(110.0)
    breaker.record_failure(RuntimeError("crash"), now=111.0)  # the trial crashed
    assert breaker.state(111.0) is OPEN
    assert breaker.half_open()
    assert not breaker.trial_taken
    assert breaker.try_take_trial(130.0)


@pytest.mark.parametrize("trial", [False, True])
def test_reset_closes_from_any_state(trial: bool) -> None:
    """reset() (a supervisor restarting the group): closed, count 0, no
    trial; the last failure is kept for statistics."""
    breaker = _half_open_with_trial() if trial else _opened()
    breaker.reset()
    stats = breaker.statistics(111.0)
    assert (stats.state, stats.consecutive_failures, stats.trial_taken) == (CLOSED, 0, False)
    assert stats.opened_at is None and str(stats.last_failure) == "down 1"
    assert not breaker.record_failure(OSError("one"), now=112.0)  # counts from zero
    assert breaker.record_failure(OSError("two"), now=113.0)


def test_configure_keeps_the_state() -> None:
    """New settings apply from the next failure (failures) or from when it
    opened (reset_timeout); bad ones are refused and change nothing."""
    breaker = _opened(2, 10)
    breaker.configure(reset_timeout=30)
    assert breaker.state(110.0) is OPEN and breaker.state(130.0) is HALF_OPEN
    breaker.record_success()
    breaker.configure(failures=1)
    assert breaker.record_failure(OSError("x"), now=200.0)
    with pytest.raises(ValueError, match="failures"):
        breaker.configure(failures=0, reset_timeout=5)
    assert (breaker.failures, breaker.reset_timeout) == (1, 30.0)


@pytest.mark.parametrize(
    ("failures", "reset_timeout"),
    [(0, 1.0), (True, 1.0), (1.5, 1.0), (1, -1.0), (1, float("nan"))],
)
def test_bad_settings_are_refused(failures: object, reset_timeout: object) -> None:
    """failures is a whole number of at least 1, reset_timeout seconds >= 0."""
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(failures, reset_timeout)  # type: ignore[arg-type]


def test_repr_shows_state_count_and_trial() -> None:
    """For logs and debuggers."""
    assert repr(_half_open_with_trial()) == "<CircuitBreaker 'db' half_open 2/2 trial>"


async def test_time_defaults_to_trios_clock(autojump_clock: trio.abc.Clock) -> None:
    """Without ``now`` the breaker reads trio.current_time()."""
    breaker = CircuitBreaker(1, 10, name="db")
    assert breaker.record_failure(OSError("down"))
    assert breaker.statistics().opened_at == trio.current_time()
    await trio.sleep(9)
    assert breaker.state() is OPEN and not breaker.try_take_trial()
    await trio.sleep(1)
    assert breaker.state() is HALF_OPEN and breaker.try_take_trial()
    assert breaker.end_trial(TrialOutcome.FAILED, OSError("again"))
    assert breaker.statistics().opened_at == trio.current_time()
