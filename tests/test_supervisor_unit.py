"""The supervisor and the cell alone, on a fake host (no ``open_system``),
and the restart-intensity window as a pure function (OTP's add_restart)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import runtime
from runtime import BackoffSpec, BreakerSpec, ChildSpec, SupervisorSpec
from runtime._cell import ActorCell
from runtime._supervisor import Supervisor, add_restart
from runtime.errors import ActorFailed, ActorStopped, SupervisorGaveUp
from tests.actorkit import Add, Counter, Crash, Get
from tests.fakehost import FakeHost, ScriptedChild

# -- add_restart ---------------------------------------------------------------


def test_add_restart_allows_up_to_max_restarts_in_the_window() -> None:
    """The (max_restarts + 1)-th restart inside ``within`` is refused."""
    times: tuple[float, ...] = ()
    for now in (0.0, 1.0, 2.0):
        allowed, times = add_restart(times, now, max_restarts=3, within=5.0)
        assert allowed
    assert times == (0.0, 1.0, 2.0)
    allowed, times = add_restart(times, 3.0, max_restarts=3, within=5.0)
    assert not allowed and times == (0.0, 1.0, 2.0, 3.0)


def test_add_restart_forgets_restarts_that_left_the_window() -> None:
    """A restart exactly ``within`` seconds old no longer counts."""
    allowed, times = add_restart((0.0, 1.0, 2.0), 5.0, max_restarts=3, within=5.0)
    assert allowed and times == (1.0, 2.0, 5.0)


def test_add_restart_with_zero_max_restarts_refuses_the_first() -> None:
    """``max_restarts: 0`` means any restart gives up, as in OTP."""
    allowed, times = add_restart((), 0.0, max_restarts=0, within=5.0)
    assert not allowed and times == (0.0,)


# -- the supervisor with scripted children ----------------------------------


def _supervisor(
    host: FakeHost, journal: list[str], names: list[str], **fields: object
) -> tuple[Supervisor, dict[str, ScriptedChild]]:
    children = {name: ScriptedChild(name, journal) for name in names}
    host.scripted.update(children)
    spec = SupervisorSpec(
        name="root",
        children=[ChildSpec(name=name, actor=Counter) for name in names],
        **fields,  # type: ignore[arg-type]
    )
    return Supervisor(spec, "root", host), children


@pytest.mark.parametrize(
    ("strategy", "expected", "restarts"),
    [
        (
            "one_for_all",
            ["stop b", "stop c", "stop a", "start a", "start b", "start c"],
            [1, 1, 1],
        ),
        ("rest_for_one", ["stop b", "stop c", "start b", "start c"], [0, 1, 1]),
        ("one_for_one", ["stop b", "start b"], [0, 1, 0]),
    ],
)
async def test_a_crash_restarts_the_strategys_group_in_order(
    strategy: str, expected: list[str], restarts: list[int]
) -> None:
    """A crash of b: one_for_all stops c, a (reverse order) then starts a, b,
    c; rest_for_one leaves a running; one_for_one restarts b alone. The
    crashed child's restart counts as a crash, the others' as the group's."""
    journal: list[str] = []
    supervisor, kids = _supervisor(FakeHost(), journal, ["a", "b", "c"], strategy=strategy)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run_incarnation)
            journal.clear()
            kids["b"].crash()
            await trio.testing.wait_all_tasks_blocked()
            assert journal == expected
            assert [kids[n].record.restarts for n in "abc"] == restarts
            assert kids["b"].record.reasons == {"crash": 1}
            if strategy == "one_for_all":
                assert kids["a"].record.reasons == {"group": 1}
            supervisor.request_stop()


async def test_intensity_exceeded_returns_supervisor_gave_up() -> None:
    """More than max_restarts within ``within``: the supervisor stops all its
    children and its incarnation ends with SupervisorGaveUp, caused by the crash."""
    journal: list[str] = []
    supervisor, kids = _supervisor(FakeHost(), journal, ["a"], max_restarts=1)
    errors: list[BaseException | None] = []

    async def run(task_status: trio.TaskStatus[None]) -> None:
        errors.append(await supervisor.run_incarnation(task_status))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            kids["a"].crash()
            await trio.testing.wait_all_tasks_blocked()
            kids["a"].crash(ValueError("again"))
    (error,) = errors
    assert isinstance(error, SupervisorGaveUp)
    assert isinstance(error.__cause__, ValueError)
    assert kids["a"].done.is_set()


async def test_backoff_delays_the_restart(autojump_clock: trio.testing.MockClock) -> None:
    """With backoff, the restart waits ``initial`` (jitter 0) on trio's clock."""
    journal: list[str] = []
    backoff = BackoffSpec(initial=2.0, max=10.0, jitter=0.0)
    supervisor, kids = _supervisor(FakeHost(), journal, ["a"], backoff=backoff)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run_incarnation)
            crashed_at = trio.current_time()
            kids["a"].crash()
            await trio.sleep(1.9)
            assert kids["a"].incarnation == 1  # still waiting for its backoff
            await trio.sleep(0.2)
            assert kids["a"].incarnation == 2
            assert 2.0 <= trio.current_time() - crashed_at <= 2.1
            supervisor.request_stop()


async def test_a_normal_exit_of_a_transient_child_is_not_restarted() -> None:
    """transient: a normal exit retires the child; nothing restarts."""
    journal: list[str] = []
    host = FakeHost()
    kid = ScriptedChild("a", journal, restart="transient")
    host.scripted["a"] = kid
    spec = SupervisorSpec(name="root", children=[ChildSpec(name="a", actor=Counter)])
    supervisor = Supervisor(spec, "root", host)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run_incarnation)
            kid.exit()
            await trio.testing.wait_all_tasks_blocked()
            assert kid.retired and kid.incarnation == 1
            supervisor.request_stop()


# -- a real cell on the fake host -------------------------------------------------


async def test_a_cell_serves_messages_on_a_fake_host() -> None:
    """A cell built and run without a system handles tells and asks."""
    host = FakeHost()
    cell = ActorCell(ChildSpec(name="c", actor=Counter), "root/c", host)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(cell.run_incarnation)
            await cell.ref.tell(Add(2))
            assert await cell.ref.ask(Get()) == 2
            cell.request_stop()
    assert cell.handled == 2 and cell.incarnation == 1


async def test_a_crashing_cell_returns_its_error_and_the_asker_gets_actor_failed() -> None:
    """run_incarnation returns the crash; the asker of the message gets ActorFailed."""
    host = FakeHost()
    cell = ActorCell(ChildSpec(name="c", actor=Counter), "root/c", host)
    results: list[BaseException | None] = []

    async def run(task_status: trio.TaskStatus[None]) -> None:
        results.append(await cell.run_incarnation(task_status))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            try:
                await cell.ref.ask(Crash("bad"))
            except ActorFailed as exc:
                assert isinstance(exc.__cause__, RuntimeError)
    (error,) = results
    assert isinstance(error, RuntimeError)
    assert cell.statistics().last_failure == repr(error)


async def test_a_retired_cell_turns_its_queue_into_dead_letters() -> None:
    """retire(): queued messages go to the host's dead letters; new ones are refused."""
    host = FakeHost()
    cell = ActorCell(ChildSpec(name="c", actor=Counter), "root/c", host)
    cell.ref.tell_nowait(Add(1))
    cell.retire("stopped")
    assert host.dead_letters == [("root/c", Add(1), "stopped")]
    try:
        cell.ref.tell_nowait(Add(2))
    except ActorStopped:
        pass
    else:
        raise AssertionError("a retired cell accepted a message")


async def test_a_cell_opens_its_circuit_after_its_failures() -> None:
    """open_circuit() opens only once the consecutive crashes reach ``failures``."""
    host = FakeHost()
    spec = ChildSpec(name="c", actor=Counter, circuit_breaker=BreakerSpec(failures=2))
    cell = ActorCell(spec, "root/c", host)
    cell.record.consecutive_crashes = 1
    assert cell.open_circuit(RuntimeError()) is None
    cell.record.consecutive_crashes = 2
    assert cell.open_circuit(RuntimeError()) == 60.0
    assert cell.statistics().breaker == "open"
    try:
        cell.ref.tell_nowait(Add(1))
    except runtime.errors.CircuitOpen:
        pass
    else:
        raise AssertionError("an open circuit accepted a message")
    assert cell.half_open() and cell.statistics().breaker == "half_open"


async def test_askers_queued_when_the_circuit_opens_get_its_cause() -> None:
    """A queued asker failed by the circuit opening gets the same CircuitOpen,
    naming the crash and caused by it, as a fresh asker."""
    host = FakeHost()
    spec = ChildSpec(name="c", actor=Counter, circuit_breaker=BreakerSpec(failures=1))
    cell = ActorCell(spec, "root/c", host)
    crash = RuntimeError("disk on fire")
    cell.last_crash = crash
    cell.record.consecutive_crashes = 1
    outcome: list[BaseException] = []

    async def ask() -> None:
        try:
            await cell.ref.ask(Get())
        except runtime.errors.CircuitOpen as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            cell.open_circuit(crash)
    (queued,) = outcome
    assert "disk on fire" in str(queued) and queued.__cause__ is crash
    try:
        cell.ref.tell_nowait(Get())
    except runtime.errors.CircuitOpen as fresh:
        assert str(fresh) == str(queued) and fresh.__cause__ is crash


def _half_open_full_cell(overflow: str) -> ActorCell:
    """A cell whose circuit is half-open with its trial free, and whose
    one-message mailbox (``overflow``) is full."""
    spec = ChildSpec(
        name="c",
        actor=Counter,
        mailbox=runtime.MailboxSpec(capacity=1, overflow=overflow),
        circuit_breaker=BreakerSpec(failures=1),
    )
    cell = ActorCell(spec, "root/c", FakeHost())
    cell.record.consecutive_crashes = 1
    assert cell.open_circuit(RuntimeError("crash")) is not None
    assert cell.half_open()
    cell.mailbox.put_nowait(Add(0), "normal")
    return cell


async def test_a_trial_message_that_is_not_queued_frees_the_trial() -> None:
    """Half-open: the message that took the trial but was refused by a full
    mailbox leaves the trial free; the next message takes it, and later ones
    are refused until its outcome (no wedged circuit)."""
    cell = _half_open_full_cell("reject")
    with pytest.raises(runtime.errors.MailboxFull):
        cell.ref.tell_nowait(Add(1))
    assert cell.mailbox.get_nowait() == Add(0)
    cell.ref.tell_nowait(Add(2))  # the trial, again free
    with pytest.raises(runtime.errors.CircuitOpen, match="half_open"):
        cell.ref.tell_nowait(Add(3))


async def test_a_trial_ask_that_times_out_waiting_for_room_frees_the_trial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Half-open, the trial ask waits for room in a full ``block`` mailbox
    and times out there: it was never queued, so the trial is free again."""
    cell = _half_open_full_cell("block")
    with trio.fail_after(60), pytest.raises(runtime.errors.AskTimeout):
        await cell.ref.ask(Get(), timeout=5)
    assert cell.mailbox.get_nowait() == Add(0)
    cell.ref.tell_nowait(Add(2))  # the trial, free again
    assert cell.mailbox.get_nowait() == Add(2)
