"""Idleness and progress: what keeps a system busy (``is_idle``,
``wait_until_idle``), counts set per actor (``ctx.set_progress``) against
counts added (``ctx.progress``), and how ``runtime start`` ends a run with
``--until-idle`` and ``--max-time`` (exit codes 0, 3 and 4).

The CLI's run is driven in-process through ``_start`` under virtual time;
one test runs the real command to check the exit code a shell sees.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing

import runtime
from runtime import BreakerSpec, ResourceSpec, Topology, open_system
from runtime._cli import RunEnd, _start, judge, main
from tests import idle_actors
from tests.actorkit import child, topology
from tests.clikit import run_cli
from tests.fakehost import FakeHost
from tests.idle_actors import Busy, Connected, Counting, Crash, Later, Work


@pytest.fixture(autouse=True)
def _clear_stopped() -> None:
    idle_actors.STOPPED.clear()


def _busy(**args: object) -> Topology:
    return topology(child("busy", Busy, args=args))


# -- what keeps a system busy -------------------------------------------------


async def test_a_task_in_ctx_nursery_keeps_the_system_busy(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A task started with ``ctx.nursery.start_soon`` is work in progress:
    the system is busy from the call until the task returns, then idle."""
    async with open_system(_busy(), store="memory://") as system:
        ref = system.ref("root/busy")
        with trio.fail_after(60):
            await system.wait_until_idle()
            assert system.is_idle()
            await ref.ask(Work(10))
            assert not system.is_idle()  # counted from the call on
            started = trio.current_time()
            await system.wait_until_idle()
        assert trio.current_time() - started >= 10
        assert system.is_idle()


async def test_a_task_started_with_nursery_start_keeps_the_system_busy(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``ctx.nursery.start`` counts too, until the task returns (not only
    until it calls ``task_status.started()``)."""
    async with open_system(_busy(), store="memory://") as system:
        with trio.fail_after(60):
            await system.ref("root/busy").ask(Work(5, start=True))
            await trio.sleep(1)
            assert not system.is_idle()
            await trio.sleep(5)
            assert system.is_idle()


async def test_ctx_nursery_keeps_the_trio_nursery_api(autojump_clock: trio.abc.Clock) -> None:
    """``ctx.nursery`` passes ``start``'s value back, exposes the cancel scope,
    child tasks and parent task, names tasks after their function, and a
    task that raises still crashes the actor."""
    seen: dict[str, object] = {}
    failed = trio.Event()

    class Probe(runtime.Actor[None]):
        async def on_start(self) -> None:
            nursery = self.ctx.nursery
            seen["value"] = await nursery.start(self.serve)
            seen["scope"] = nursery.cancel_scope
            seen["tasks"] = {task.name for task in nursery.child_tasks}
            seen["parent"] = nursery.parent_task
            seen["same"] = self.ctx.nursery is nursery
            nursery.start_soon(self.fail)

        async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started(42)
            await trio.sleep(1)

        async def fail(self) -> None:
            await failed.wait()
            if self.ctx.self_ref.statistics().incarnation == 1:
                raise RuntimeError("background task failed")

        @runtime.handler
        async def ping(self, msg: idle_actors.Ping) -> None:
            pass

    async with open_system(topology(child("probe", Probe)), store="memory://") as system:
        with trio.fail_after(10):
            assert seen["value"] == 42
            assert isinstance(seen["scope"], trio.CancelScope)
            assert any(name.endswith("Probe.serve") for name in seen["tasks"])  # type: ignore[attr-defined]
            assert isinstance(seen["parent"], trio.lowlevel.Task)
            assert seen["same"] is True
            failed.set()
            await system.wait_until_idle()
            assert system.ref("root/probe").statistics().restarts == 1


async def test_a_pending_one_shot_timer_keeps_the_system_busy(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A ``ctx.schedule`` timer not fired yet is pending work, from the call
    on; once it has fired and its message is handled, the system is idle."""
    async with open_system(_busy(), store="memory://") as system:
        ref = system.ref("root/busy")
        with trio.fail_after(60):
            await ref.ask(Later(30))
            assert not system.is_idle()
            await trio.sleep(29)
            assert not system.is_idle()
            await system.wait_until_idle()
        assert trio.current_time() >= 30


async def test_schedule_every_alone_leaves_the_system_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A heartbeat (``schedule_every``) is not work: between ticks the system
    is idle, and ``wait_until_idle`` returns while the timer keeps ticking."""
    async with open_system(_busy(heartbeat=1.0), store="memory://") as system:
        with trio.fail_after(60):
            await system.wait_until_idle()
            await trio.sleep(10.5)
            assert system.is_idle()


async def test_the_runtimes_own_tasks_do_not_count(autojump_clock: trio.abc.Clock) -> None:
    """Periodic checkpoints run in the actor's nursery without counting: an
    actor with ``checkpoint: 1s`` and nothing to do is idle."""
    spec = child("counter", checkpoint=1.0)
    async with open_system(topology(spec), store="memory://") as system:
        with trio.fail_after(60):
            await system.wait_until_idle()
            await trio.sleep(5)
            assert system.is_idle()


async def test_a_resources_tasks_do_not_count(autojump_clock: trio.abc.Clock) -> None:
    """A resource keeps its connections in its nursery for its whole life:
    they do not keep the system busy."""
    resources = {"conn": ResourceSpec(kind=Connected)}
    async with open_system(Topology(resources=resources), store="memory://") as system:
        with trio.fail_after(60):
            assert await system.resource("conn").ask(idle_actors.Ping()) == "pong"
            await system.wait_until_idle()
            assert system.is_idle()


async def test_an_open_circuit_counts_as_idle(autojump_clock: trio.abc.Clock) -> None:
    """An actor whose circuit is open does not keep the system busy until
    its half-open trial; its statistics say the breaker is open."""
    spec = child(
        "flaky",
        idle_actors.Flaky,
        circuit_breaker=BreakerSpec(failures=1, reset_timeout=3600),
    )
    async with open_system(topology(spec), store="memory://") as system:
        with trio.fail_after(60):
            await system.wait_until_idle()
        assert trio.current_time() < 3600
        assert system.ref("root/flaky").statistics().breaker == "open"


# -- progress ------------------------------------------------------------------


async def test_set_progress_after_a_restart_does_not_double(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An actor that sets its total in ``on_start`` counts it once, however
    often it is restarted: each incarnation replaces its counts."""
    spec = child("counting", Counting, args={"total": 30, "done": 24})
    async with open_system(topology(spec), store="memory://") as system:
        ref = system.ref("root/counting")
        with trio.fail_after(60):
            for _ in range(2):
                await ref.tell(Crash())
                await system.wait_until_idle()
        assert ref.statistics().incarnation == 3
        progress = system.progress()
        assert (progress.done, progress.total, progress.retried) == (24, 30, 0)


async def test_progress_still_adds_across_restarts(autojump_clock: trio.abc.Clock) -> None:
    """``ctx.progress`` adds, as it always did: a total declared again by a
    restarted incarnation counts twice."""
    spec = child("counting", Counting, args={"total": 30, "done": 1, "additive": True})
    async with open_system(topology(spec), store="memory://") as system:
        with trio.fail_after(60):
            await system.ref("root/counting").tell(Crash())
            await system.wait_until_idle()
        progress = system.progress()
        assert (progress.done, progress.total) == (2, 60)


async def test_set_and_added_counts_sum_per_system() -> None:
    """Each actor's own counts, and what ``progress`` added, sum up; a count
    left as None keeps its value; a negative one is refused."""
    calls: list[str] = []

    class Mixed(runtime.Actor[None]):
        def __init__(self, total: int) -> None:
            self.total = total

        async def on_start(self) -> None:
            self.ctx.set_progress(total=self.total, done=1)
            self.ctx.set_progress(done=2, retried=1)  # total kept
            self.ctx.progress(total=1, done=1, retried=1)
            try:
                self.ctx.set_progress(done=-1)
            except ValueError:
                calls.append("refused")

        @runtime.handler
        async def ping(self, msg: idle_actors.Ping) -> None:
            pass

    tree = topology(child("a", Mixed, args={"total": 10}), child("b", Mixed, args={"total": 5}))
    async with open_system(tree, store="memory://") as system:
        progress = system.progress()
    assert (progress.done, progress.total, progress.retried) == (6, 17, 4)
    assert calls == ["refused", "refused"]


async def test_a_fake_host_keeps_counts_by_path() -> None:
    """The Host protocol's ``set_progress``, as the test fake implements it:
    by path, None keeping the count."""
    host = FakeHost()
    host.set_progress("root/a", 10, 1, None)
    host.set_progress("root/a", None, 3, 2)
    host.count_progress(1, 1, 0)
    assert host.progress_by_path == {"root/a": (10, 3, 2)}
    assert host.progress == [1, 1, 0]


# -- runtime start: how a run ends ---------------------------------------------


def _write(tmp_path: Path, *children: str) -> str:
    path = tmp_path / "topology.yaml"
    body = "\n".join(textwrap.indent(c, "    ") for c in children)
    path.write_text(
        f"system: idle-test\nstore: memory://\nsupervisor:\n  name: root\n  children:\n{body}\n",
        encoding="utf-8",
    )
    return str(path)


async def _run_start(path: str, **options: object) -> int:
    with trio.fail_after(3600):
        return await _start(path, progress_interval=0, **options)  # type: ignore[arg-type]


async def test_until_idle_with_items_left_exits_3(
    tmp_path: Path, autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Idle with 24 of 30 items done is not success: exit 3, the summary and
    the reason on stderr, after a graceful stop."""
    path = _write(
        tmp_path,
        "- {name: counting, actor: tests.idle_actors:Counting, args: {total: 30, done: 24}}",
    )
    assert await _run_start(path, until_idle=True) == 3
    out, err = capsys.readouterr()
    assert "items: 24/30 done, 0 retried" in err
    assert err.splitlines()[-1] == "idle with 24/30 item(s) done: 6 item(s) were never finished"
    assert "summary: " not in out
    assert idle_actors.STOPPED == ["root/counting"]


async def test_until_idle_with_every_item_done_exits_0(
    tmp_path: Path, autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Idle with done >= total, and no circuit open: exit 0, summary on stdout."""
    path = _write(
        tmp_path,
        "- {name: counting, actor: tests.idle_actors:Counting, args: {total: 30, done: 30}}",
    )
    assert await _run_start(path, until_idle=True) == 0
    out, err = capsys.readouterr()
    assert "items: 30/30 done, 0 retried" in out
    assert "idle with" not in out + err


async def test_until_idle_waits_for_a_nursery_task(
    tmp_path: Path, autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--until-idle`` does not stop while a ``ctx.nursery`` task runs; with
    ``--max-time`` a task that never returns ends the run with exit 4, a
    graceful stop (``on_stop`` ran) and the progress on stderr."""
    path = _write(tmp_path, "- {name: forever, actor: tests.idle_actors:Forever}")
    assert await _run_start(path, until_idle=True, max_time=90.0) == 4
    assert trio.current_time() >= 90
    _, err = capsys.readouterr()
    assert "--max-time 90s passed: stopping gracefully" in err
    assert err.splitlines()[-1] == (
        "time ran out after 90s (--max-time) with 4/10 item(s) done: 6 item(s) were never finished"
    )
    assert idle_actors.STOPPED == ["root/forever"]


async def test_max_time_without_until_idle_exits_4(
    tmp_path: Path, autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--until-idle`` the run lasts until ``--max-time``, even when
    the system is idle and every item done: exit 4 after a graceful stop."""
    path = _write(
        tmp_path,
        "- {name: counting, actor: tests.idle_actors:Counting, args: {total: 3, done: 3}}",
    )
    assert await _run_start(path, until_idle=False, max_time=300.0) == 4
    assert trio.current_time() >= 300
    _, err = capsys.readouterr()
    assert err.splitlines()[-1] == "time ran out after 5m (--max-time) with 3/3 item(s) done"
    assert idle_actors.STOPPED == ["root/counting"]


async def test_until_idle_with_an_open_circuit_exits_3(
    tmp_path: Path, autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An open circuit counts as idle, so the run ends without waiting for
    the half-open trial, but it is not success: exit 3, naming the actor."""
    path = _write(
        tmp_path,
        "- name: flaky\n"
        "  actor: tests.idle_actors:Flaky\n"
        "  circuit_breaker: {failures: 1, reset_timeout: 1h}",
    )
    assert await _run_start(path, until_idle=True) == 3
    assert trio.current_time() < 3600
    _, err = capsys.readouterr()
    assert err.splitlines()[-1] == (
        "idle with 1 circuit(s) open: root/flaky (open); "
        "they refuse messages until a half-open trial succeeds"
    )


def test_judge_decides_the_exit_code() -> None:
    """The verdict alone: a signal is 0 whatever the progress; idle is 0 only
    with done >= total, no circuit open and no workflow run needing
    attention; the time up is always 4."""
    unfinished = runtime.Progress(done=24, total=30, retried=0, working=())
    finished = runtime.Progress(done=30, total=30, retried=2, working=())
    uncounted = runtime.Progress(done=0, total=0, retried=0, working=())
    assert judge(None, unfinished) == (0, [])
    assert judge(RunEnd("idle"), finished) == (0, [])
    assert judge(RunEnd("idle"), uncounted) == (0, [])
    assert judge(RunEnd("idle"), unfinished)[0] == 3
    code, lines = judge(RunEnd("idle", circuits=("root/a (half-open)",)), finished)
    assert code == 3
    assert lines[0].startswith("idle with 1 circuit(s) open: root/a (half-open); ")
    code, lines = judge(RunEnd("idle", attention=("pr/pr-3", "pr/pr-5")), finished)
    assert code == 3
    assert lines == [
        "idle with 2 workflow run(s) needing attention: pr/pr-3, pr/pr-5; "
        "run each again with its run id once fixed"
    ]
    assert judge(RunEnd("time", limit=1.5), uncounted) == (
        4,
        ["time ran out after 1.5s (--max-time)"],
    )
    assert judge(RunEnd("time", limit=7200), finished)[1] == [
        "time ran out after 2h (--max-time) with 30/30 item(s) done"
    ]


@pytest.mark.parametrize("value", ["soon", "0", "-5s"])
def test_a_bad_max_time_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--max-time`` takes a duration above zero; anything else exits 2."""
    with pytest.raises(SystemExit) as info:
        main(["start", "topology.yaml", "--max-time", value])
    assert info.value.code == 2
    assert "--max-time" in capsys.readouterr().err


def test_the_command_exits_3_when_idle_with_items_left(tmp_path: Path) -> None:
    """Through the real command: idle with items left is exit 3 for the shell."""
    path = _write(
        tmp_path,
        "- {name: counting, actor: tests.idle_actors:Counting, args: {total: 2, done: 1}}",
    )
    result = run_cli("start", path, "--until-idle")
    assert result.returncode == 3, result.stderr
    assert "idle with 1/2 item(s) done: 1 item(s) were never finished" in result.stderr
