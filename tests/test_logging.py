"""Where the runtime's log events go.

A program that configures nothing gets nothing on stdout and warnings on
stderr (``logging.lastResort``); one that configures the standard library's
``logging`` or structlog gets the events with their key-values; the
``runtime start`` command renders them on stderr, a crash as one line on a
console. Host programs and the command run as real subprocesses: logging
configuration is per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog
import trio
from structlog.testing import capture_logs

import runtime
from runtime import _logging
from runtime._logging import Event, host_configured

SRC = Path(__file__).resolve().parent.parent / "src"
TIMEOUT = 60.0

# A host program: opens a system, spawns an actor whose mailbox drops a
# message (dead_letter, a warning) and which crashes once (actor_crashed, an
# error, then restarted), and prints its own line. {setup} configures logging.
HOST = """
import sys

import attrs
import trio

import runtime

{setup}


@attrs.frozen
class Boom:
    pass


class Worker(runtime.Actor[None]):
    @runtime.handler
    async def boom(self, msg: Boom) -> None:
        raise ValueError("boom")


async def main() -> None:
    async with runtime.open_system() as system:
        mailbox = runtime.MailboxSpec(capacity=1, overflow="drop_newest")
        worker = await system.spawn(Worker, name="worker", mailbox=mailbox)
        worker.tell_nowait(Boom())
        worker.tell_nowait(Boom())  # the mailbox is full: a dead letter
        await system.wait_until_idle()
        print("the program's own line", flush=True)


trio.run(main)
"""

OWN_OUTPUT = "the program's own line\n"


def run_python(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with this worktree's ``runtime`` importable."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def run_host(tmp_path: Path, setup: str = "") -> subprocess.CompletedProcess[str]:
    program = tmp_path / "host.py"
    program.write_text(HOST.format(setup=textwrap.dedent(setup)), encoding="utf-8")
    return run_python(str(program), cwd=tmp_path)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# -- a library in a host program ----------------------------------------------


def test_unconfigured_host_gets_nothing_on_stdout_and_warnings_on_stderr(
    tmp_path: Path,
) -> None:
    """With no logging configured, stdout is the program's own output only;
    warnings and errors reach stderr through ``logging.lastResort`` (the
    crash with its traceback), info events go nowhere."""
    result = run_host(tmp_path)
    assert result.stdout == OWN_OUTPUT
    assert "dead_letter path=root/worker message_type=Boom reason=mailbox_full\n" in result.stderr
    assert "actor_crashed path=root/worker incarnation=1 during=running" in result.stderr
    assert "\nValueError: boom\n" in result.stderr
    assert "actor_started" not in result.stderr


def test_capture_logs_leaves_an_unconfigured_host_unconfigured(tmp_path: Path) -> None:
    """``capture_logs`` makes ``structlog.is_configured()`` true for good, yet
    after it the runtime still logs through ``logging``: nothing on stdout."""
    result = run_host(
        tmp_path,
        """
        import structlog.testing

        with structlog.testing.capture_logs():
            pass
        assert structlog.is_configured()
        """,
    )
    assert result.stdout == OWN_OUTPUT
    assert "actor_crashed path=root/worker" in result.stderr


def test_basic_config_host_receives_info_events_with_key_values(tmp_path: Path) -> None:
    """A host's ``logging.basicConfig`` gets the runtime's info events from
    the logger ``runtime``, key-values in the message, the crash's traceback
    below it."""
    result = run_host(
        tmp_path,
        """
        import logging

        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
        """,
    )
    assert result.stdout == OWN_OUTPUT
    lines = result.stderr.splitlines()
    assert "INFO:runtime:actor_started path=root/worker incarnation=1" in lines
    assert "INFO:runtime:actor_started path=root/worker incarnation=2" in lines
    assert "INFO:runtime:system_started system=runtime" in lines
    crashed = [line for line in lines if line.startswith("ERROR:runtime:actor_crashed ")]
    assert len(crashed) == 1
    assert crashed[0].startswith(
        "ERROR:runtime:actor_crashed path=root/worker incarnation=1 during=running"
    )
    assert "ValueError: boom" in lines


def test_key_values_are_record_attributes(tmp_path: Path) -> None:
    """A host's handler reads an event's key-values as attributes of the
    stdlib record (``extra``) and the exception as its ``exc_info``."""
    result = run_host(
        tmp_path,
        """
        import json
        import logging


        class Collect(logging.Handler):
            def emit(self, record):
                seen = {"event": record.event, "path": getattr(record, "path", None)}
                if record.exc_info:
                    seen["exc"] = repr(record.exc_info[1])
                print(json.dumps(seen), file=sys.stderr)


        logging.getLogger("runtime").addHandler(Collect())
        logging.getLogger("runtime").setLevel(logging.INFO)
        """,
    )
    assert result.stdout == OWN_OUTPUT
    events = json_lines(result.stderr)
    assert {"event": "actor_started", "path": "root/worker"} in events
    assert {"event": "system_started", "path": None} in events
    assert {
        "event": "actor_crashed",
        "path": "root/worker",
        "exc": "ValueError('boom')",
    } in events


PROCESSOR_FORMATTER = """
import logging

import structlog

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(
    structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    )
)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
"""

STRUCTLOG_TO_STDLIB = """
structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
)
"""


@pytest.mark.parametrize("configured", [True, False], ids=["structlog-configured", "stdlib-only"])
def test_processor_formatter_host_gets_json_with_path(tmp_path: Path, configured: bool) -> None:
    """A host rendering with structlog's ``ProcessorFormatter`` gets one JSON
    object per event with ``path`` and the other key-values, whether it also
    configured structlog to log through the standard library or not."""
    setup = PROCESSOR_FORMATTER + (STRUCTLOG_TO_STDLIB if configured else "")
    result = run_host(tmp_path, setup)
    assert result.stdout == OWN_OUTPUT
    events = json_lines(result.stderr)
    assert len(events) == len(result.stderr.splitlines()), result.stderr
    started = [e for e in events if e["event"] == "actor_started"]
    assert [(e["path"], e["incarnation"], e["logger"]) for e in started] == [
        ("root/worker", 1, "runtime"),
        ("root/worker", 2, "runtime"),
    ]
    (crashed,) = [e for e in events if e["event"] == "actor_crashed"]
    assert crashed["path"] == "root/worker"
    assert crashed["level"] == "error"
    assert str(crashed["exception"]).endswith("ValueError: boom")


def test_importing_runtime_changes_no_global_state() -> None:
    """``import runtime`` configures neither structlog nor ``logging``."""
    run_python(
        "-c",
        textwrap.dedent(
            """
            import logging

            import structlog

            def state():
                runtime_logger = logging.getLogger("runtime")
                return (
                    structlog.is_configured(),
                    structlog.get_config(),
                    list(logging.root.handlers),
                    logging.root.level,
                    list(runtime_logger.handlers),
                    runtime_logger.level,
                    runtime_logger.propagate,
                )

            before = state()
            import runtime
            import runtime.resources.llm
            import runtime.resources.mcp

            assert state() == before, (before, state())
            """
        ),
    )


# -- structlog's configuration in this process ----------------------------------


@pytest.fixture
def structlog_defaults() -> Iterator[None]:
    """structlog as a program that never configured it has it (restored after)."""
    old = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**old)


@pytest.mark.usefixtures("structlog_defaults")
def test_capture_logs_counts_as_configured_only_while_it_captures() -> None:
    """The routing rule: structlog's global configuration while
    ``capture_logs`` captures or a program configured structlog; the
    ``runtime`` stdlib logger before and after ``capture_logs`` (which leaves
    ``is_configured()`` true with the builtin configuration)."""
    assert not host_configured()
    with capture_logs():
        assert host_configured()
    assert structlog.is_configured()
    assert not host_configured()  # needs structlog's private _BUILTIN_DEFAULT_* names
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    assert host_configured()


@attrs.frozen
class Boom:
    pass


@attrs.frozen
class Add:
    n: int


class Worker(runtime.Actor[None]):
    @runtime.handler
    async def boom(self, msg: Boom) -> None:
        raise ValueError("boom")

    @runtime.handler
    async def add(self, msg: Add) -> int:
        return msg.n + 1


async def test_capture_logs_sees_events_of_loggers_bound_before_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A supervisor binds its logger when it is built; entering
    ``capture_logs`` later still captures its events, and an actor's crash
    arrives with its path and exception."""
    with trio.fail_after(10):
        async with runtime.open_system() as system:
            with capture_logs() as logs:
                worker = await system.spawn(Worker, name="worker")
                await worker.tell(Boom())
                await system.wait_until_idle()
    crashed = [e for e in logs if e["event"] == "actor_crashed"]
    assert len(crashed) == 1
    assert crashed[0]["path"] == "root/worker"
    assert repr(crashed[0]["exc_info"]) == "ValueError('boom')"
    restarting = [e for e in logs if e["event"] == "child_restarting"]
    assert [(e["path"], e["child"]) for e in restarting] == [("root", "root/worker")]


async def test_handling_messages_logs_nothing(autojump_clock: trio.abc.Clock) -> None:
    """The message path logs no event: a thousand tells and asks to a running
    actor, none logged (only lifecycle steps are)."""
    with trio.fail_after(10):
        async with runtime.open_system() as system:
            worker = await system.spawn(Worker, name="worker")
            with capture_logs() as logs:
                for n in range(1000):
                    await worker.tell(Add(n))
                assert await worker.ask(Add(1)) == 2
                await system.wait_until_idle()
    assert logs == []


def test_event_reads_as_event_then_key_values() -> None:
    """A record's message, as a plain ``logging.Formatter`` prints it: the
    event, then its key-values in order; strings with spaces or quotes
    quoted, other values as repr; ``exc_info`` and ``_`` keys left out."""
    event = Event(
        event="actor_crashed",
        path="root/worker",
        incarnation=2,
        error="ValueError('boom')",
        note="two words",
        group=["a", "b"],
        exc_info=(ValueError, ValueError("boom"), None),
        _record=None,
    )
    assert str(event) == (
        "actor_crashed path=root/worker incarnation=2 "
        "error=\"ValueError('boom')\" note=\"two words\" group=['a', 'b']"
    )
    assert dict(event)["incarnation"] == 2


# -- the runtime start command ---------------------------------------------------------

CRASH_ONCE = """
import structlog

import runtime

log = structlog.get_logger("crash_once")
starts = 0


class CrashOnce(runtime.Actor[None]):
    async def on_start(self) -> None:
        global starts
        starts += 1
        log.info("crash_once_starting", attempt=starts)
        if starts == 1:
            raise ValueError("boom")
"""

TOPOLOGY = """
system: crashing
store: memory://
supervisor:
  name: root
  children:
    - {name: worker, actor: "crash_once:CrashOnce"}
"""


def start(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``runtime start --until-idle`` on a topology whose actor crashes once."""
    (tmp_path / "crash_once.py").write_text(CRASH_ONCE, encoding="utf-8")
    (tmp_path / "topology.yaml").write_text(TOPOLOGY, encoding="utf-8")
    result = run_python(
        "-m", "runtime", "start", "topology.yaml", "--until-idle", *options, cwd=tmp_path
    )
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["started", "summary:"]
    return result


def test_start_console_shows_a_crash_as_one_line(tmp_path: Path) -> None:
    """On a console, a crash is one line naming the actor and the exception,
    without a traceback; the actors' own structlog events are there too."""
    result = start(tmp_path, "--log-format", "console")
    lines = result.stderr.splitlines()
    crashed = [line for line in lines if "actor_crashed" in line]
    assert len(crashed) == 1
    assert crashed[0].endswith(
        "path=root/worker incarnation=1 during=start error=\"ValueError('boom')\""
    )
    assert "[error    ]" in crashed[0]
    assert "Traceback" not in result.stderr
    assert any("crash_once_starting" in line and "attempt=2" in line for line in lines)
    assert any("actor_started" in line and "incarnation=2" in line for line in lines)


def test_start_console_at_debug_shows_the_traceback(tmp_path: Path) -> None:
    """``--log-level debug`` keeps the traceback below the crash line."""
    result = start(tmp_path, "--log-format", "console", "--log-level", "debug")
    assert "Traceback (most recent call last)" in result.stderr
    assert "\nValueError: boom\n" in result.stderr


def test_start_json_has_the_traceback_as_data(tmp_path: Path) -> None:
    """JSON lines on stderr: the crash with its exception as structured
    frames; every line is an event."""
    result = start(tmp_path, "--log-format", "json")
    events = json_lines(result.stderr)
    assert len(events) == len(result.stderr.splitlines()), result.stderr
    (crashed,) = [e for e in events if e["event"] == "actor_crashed"]
    assert crashed["path"] == "root/worker"
    assert crashed["level"] == "error"
    assert isinstance(crashed["timestamp"], str)
    (exception,) = crashed["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["exc_value"] == "boom"
    assert exception["frames"][-1]["name"] == "on_start"
    assert "locals" not in exception["frames"][-1]
    assert {"event": "crash_once_starting", "attempt": 2}.items() <= next(
        e for e in events if e.get("attempt") == 2
    ).items()


def test_start_at_warning_drops_info_events(tmp_path: Path) -> None:
    """``--log-level warning`` writes the crash and no info event."""
    result = start(tmp_path, "--log-format", "json", "--log-level", "warning")
    assert [e["event"] for e in json_lines(result.stderr)] == ["actor_crashed"]


def test_configure_logging_replaces_its_handler() -> None:
    """A second ``configure_logging`` replaces the handler of the first."""
    import io
    import logging

    old = structlog.get_config()
    root = logging.getLogger()
    level = root.level
    try:
        first = _logging.configure_logging(io.StringIO(), fmt="json")
        second = _logging.configure_logging(io.StringIO(), fmt="console")
        assert second in root.handlers
        assert first not in root.handlers
    finally:
        root.removeHandler(second)
        root.setLevel(level)
        structlog.configure(**old)
