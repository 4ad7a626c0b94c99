"""The ``mcp`` resource kind, against real MCP server processes: the sample
server in ``tests/mcp_servers`` (over stdio and streamable HTTP) and the
published ``mcp-server-time``."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

import runtime
from runtime import ResourceSpec, SupervisorSpec, Topology, open_system
from runtime.errors import CircuitOpen, ResourceError, SupervisorGaveUp, TopologyError
from runtime.resources.mcp import MCP, CallTool, ListTools, MCPOptions, Tool, ToolResult

SAMPLE = [sys.executable, str(Path(__file__).parent / "mcp_servers" / "sample_server.py")]
TIME = [sys.executable, "-m", "mcp_server_time"]


def _topology(options: dict[str, Any], **fields: Any) -> Topology:
    return Topology(
        system="mcp",
        resources={"sample": ResourceSpec(kind="mcp", options=options, **fields)},
        supervisor=SupervisorSpec(name="root"),
    )


@contextlib.asynccontextmanager
async def _http_server() -> AsyncIterator[tuple[str, trio.Process]]:
    """The sample server serving streamable HTTP on a free port; killed afterwards."""
    process = await trio.lowlevel.open_process(
        [*SAMPLE, "--http"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive_some()
            assert chunk, "the sample server exited before it listened"
            line += chunk
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp", process
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            assert process.stdout is not None
            await process.stdout.aclose()


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_lists_and_calls_the_tools_of_a_server_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's tools come with their descriptions and schemas; a call
    answers with its text and structured content; the server sees ``env``
    and ``pass_env``, and the options' repr hides their values; a graceful
    stop ends the process, which exits on its own once its stdin closes."""
    monkeypatch.setenv("RUNTIME_TEST_MCP_TOKEN", "s3cret")
    monkeypatch.setenv("RUNTIME_TEST_MCP_OTHER", "not passed")
    options = {"command": SAMPLE, "env": {"MODE": "test"}, "pass_env": ["RUNTIME_TEST_MCP_TOKEN"]}
    topology = _topology(options)
    assert "s3cret" not in repr(topology) and "'MODE': '***'" in repr(topology)
    with capture_logs() as logs, trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            ref = system.resource("sample")
            tools = await ref.ask(ListTools())
            assert isinstance(tools, tuple) and all(isinstance(tool, Tool) for tool in tools)
            by_name = {tool.name: tool for tool in tools}
            assert {"echo", "add", "slow", "hold", "peak", "fail", "exit", "pid"} <= set(by_name)
            echo = by_name["echo"]
            assert echo.description == "Return the text unchanged."
            assert echo.input_schema["required"] == ["text"]
            assert echo.input_schema["properties"]["text"]["type"] == "string"

            assert await ref.ask(CallTool("echo", {"text": "hello"})) == ToolResult(
                text="hello",
                structured={"result": "hello"},
                is_error=False,
                content=({"type": "text", "text": "hello"},),
            )
            added = await ref.ask(CallTool("add", {"a": 2, "b": 40}))
            assert added.structured == {"sum": 42} and not added.is_error
            pid = (await ref.ask(CallTool("pid"))).structured["result"]
            for name, value in [
                ("MODE", "test"),
                ("RUNTIME_TEST_MCP_TOKEN", "s3cret"),
                ("RUNTIME_TEST_MCP_OTHER", ""),
            ]:
                assert (await ref.ask(CallTool("env", {"name": name}))).text == value

            backend = system.resource_statistics()["sample"].backend
            assert backend["server_pid"] == pid
            assert backend["tools"] == len(tools)
            assert backend["tool_calls"] == 6 and backend["requests_in_flight"] == 0
            assert backend["tool_errors"] == 0 and backend["uptime_seconds"] > 0
            assert system.resource_statistics()["sample"].limiter.max_concurrency == 2
    (stopped,) = _events(logs, "mcp_server_stopped")
    assert stopped["pid"] == pid and stopped["returncode"] == 0
    assert not _events(logs, "mcp_server_terminated")


async def test_max_concurrency_two_holds_at_the_server() -> None:
    """Ten callers at once: the server never runs more than two calls at a
    time, and does run two."""
    with trio.fail_after(10):
        async with open_system(_topology({"command": SAMPLE}), store="memory://") as system:
            ref = system.resource("sample")
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(ref.ask, CallTool("hold", {"seconds": 0.05}))
            peak = await ref.ask(CallTool("peak"))
            assert peak.structured == {"result": 2}
            assert system.resource_statistics()["sample"].limiter.admitted == 11


async def test_tool_errors_are_answers_unless_asked_to_raise() -> None:
    """A tool that reports a failure answers with ``is_error``; with
    ``raise_on_error`` the asker gets a permanent ResourceError. Neither
    trips the breaker or crashes the resource."""
    with trio.fail_after(10):
        async with open_system(_topology({"command": SAMPLE}), store="memory://") as system:
            ref = system.resource("sample")
            failed = await ref.ask(CallTool("fail", {"reason": "disk full"}))
            assert failed.is_error and "disk full" in failed.text and failed.structured is None
            with pytest.raises(ResourceError, match=r"mcp 'sample': tool 'fail' failed: .*disk"):
                await ref.ask(CallTool("fail", {"reason": "disk full"}, raise_on_error=True))
            unknown = await ref.ask(CallTool("no_such_tool"))
            assert unknown.is_error and "no_such_tool" in unknown.text
            stats = system.resource_statistics()["sample"]
            assert stats.backend["tool_errors"] == 3 and stats.limiter.breaker == "closed"
            assert ref.statistics().incarnation == 1


async def test_the_published_time_server() -> None:
    """``mcp-server-time``: its tools are listed, ``get_current_time``
    answers with structured content, and an error response (an unknown
    tool, which it refuses as invalid parameters) is a permanent
    ResourceError carrying the JSON-RPC code."""
    with trio.fail_after(10):
        async with open_system(_topology({"command": TIME}), store="memory://") as system:
            ref = system.resource("sample")
            tools = {tool.name: tool for tool in await ref.ask(ListTools())}
            assert set(tools) == {"get_current_time", "convert_time"}
            assert "timezone" in tools["get_current_time"].input_schema["properties"]

            now = await ref.ask(CallTool("get_current_time", {"timezone": "UTC"}))
            assert not now.is_error and now.structured is not None
            assert now.structured["timezone"] == "UTC"
            assert datetime.fromisoformat(now.structured["datetime"]).utcoffset() is not None

            refused = r"^mcp 'sample': tools/call 'nope' failed: Unknown tool: nope \(code -32602\)"
            with pytest.raises(ResourceError, match=refused) as info:
                await ref.ask(CallTool("nope", {}))
            assert not info.value.transient
            stats = system.resource_statistics()["sample"]
            assert stats.backend["request_errors"] == 1 and stats.limiter.breaker == "closed"


async def test_a_server_that_dies_mid_call_is_restarted() -> None:
    """The process exits while two calls are in flight: both callers get a
    ResourceError naming the exit code and the server's last stderr line;
    the resource restarts (incarnation 2) with a new process, and the next
    call works. With ``stderr: log`` the server's stderr lines are logged."""
    topology = _topology({"command": SAMPLE, "stderr": "log"})
    with capture_logs() as logs, trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            ref = system.resource("sample")
            first = (await ref.ask(CallTool("pid"))).structured["result"]
            errors: list[ResourceError] = []

            async def in_flight() -> None:
                with pytest.raises(ResourceError) as info:
                    await ref.ask(CallTool("slow", {"seconds": 60}))
                errors.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(in_flight)
                await trio.testing.wait_all_tasks_blocked()
                assert system.resource_statistics()["sample"].backend["requests_in_flight"] == 1
                with pytest.raises(ResourceError) as info:
                    await ref.ask(CallTool("exit", {"code": 3}))
            expected = (
                f"resources/sample: the server process (pid {first}) exited with code 3; "
                "its stderr ended with: sample server: exiting with code 3"
            )
            assert str(info.value) == expected and [str(error) for error in errors] == [expected]
            assert info.value.resource == "sample" and info.value.transient
            with pytest.raises(ProcessLookupError):
                os.kill(first, 0)  # exited and reaped

            second = (await ref.ask(CallTool("pid"))).structured["result"]
            assert second != first
            assert ref.statistics().incarnation == 2
            assert system.resource_statistics()["sample"].backend["server_pid"] == second
    lines = [entry["line"] for entry in _events(logs, "mcp_server_stderr")]
    assert lines == ["sample server: exiting with code 3"]


async def test_a_missing_command_fails_the_start_clearly() -> None:
    """The start fails before anything is spawned, naming the command; with
    ``circuit_breaker: {failures: 1}`` askers then fail fast."""
    topology = _topology(
        {"command": ["no-such-mcp-server", "--flag"]},
        circuit_breaker={"failures": 1, "reset_timeout": "1h"},
    )
    with capture_logs() as logs, trio.fail_after(5):
        async with open_system(topology, store="memory://") as system:
            with pytest.raises(CircuitOpen):
                await system.resource("sample").ask(ListTools())
            assert system.resource_statistics()["sample"].status == "circuit_open"
    (crash,) = _events(logs, "actor_crashed")
    assert crash["during"] == "start"
    assert str(crash["exc_info"]).startswith(
        "mcp 'sample': cannot start the server: command 'no-such-mcp-server' not found (PATH="
    )


async def test_a_missing_command_without_a_breaker_stops_the_system(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Without a breaker the resources' supervisor runs out of restarts and
    the system stops; the error raised out of ``open_system`` says why."""
    topology = _topology({"command": ["no-such-mcp-server"]}, circuit_breaker=None)
    with trio.fail_after(600), pytest.raises(SupervisorGaveUp) as info:
        async with open_system(topology, store="memory://"):
            await trio.sleep_forever()
    assert "command 'no-such-mcp-server' not found" in str(info.value)
    assert isinstance(info.value.__cause__, ResourceError)
    assert info.value.__cause__.resource == "sample"


UNSET = "RUNTIME_TEST_MCP_UNSET"  # never set


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"command": [sys.executable, "-c", "import sys; sys.exit('no config found')"]},
            r"^mcp 'sample': the server failed during startup: the server process \(pid \d+\) "
            r"exited with code 1; its stderr ended with: no config found$",
        ),
        (
            {
                "command": [sys.executable, "-c", "import time; time.sleep(60)"],
                "startup_timeout": "200ms",
                "stop_timeout": "100ms",
            },
            r"^mcp 'sample': the server did not complete the handshake within 0.2s$",
        ),
        (
            {"url": f"http://127.0.0.1:{_closed_port()}/mcp"},
            r"^mcp 'sample': the connection to http://127.0.0.1:\d+/mcp failed: ConnectError",
        ),
        (
            {"command": SAMPLE, "pass_env": [UNSET]},
            r"^mcp 'sample': cannot start the server: pass_env: environment variable\(s\) "
            r"not set: RUNTIME_TEST_MCP_UNSET$",
        ),
        (
            {
                "url": "http://127.0.0.1:1/mcp",
                "headers_from_env": {"X-Key": "RUNTIME_TEST_MCP_UNSET"},
            },
            r"^mcp 'sample': cannot connect to the server: headers_from_env: environment "
            r"variable\(s\) not set: RUNTIME_TEST_MCP_UNSET$",
        ),
    ],
    ids=["exits-at-start", "never-answers", "unreachable-url", "unset-pass-env", "unset-header"],
)
async def test_a_server_that_cannot_start_says_why(options: dict[str, Any], expected: str) -> None:
    """A server that exits before the handshake, one that never answers
    within ``startup_timeout``, and a URL nothing listens on: each fails the
    start with the reason."""
    topology = _topology(options, circuit_breaker={"failures": 1, "reset_timeout": "1h"})
    with capture_logs() as logs, trio.fail_after(5):
        async with open_system(topology, store="memory://") as system:
            with pytest.raises(CircuitOpen):
                await system.resource("sample").ask(ListTools())
    (crash,) = _events(logs, "actor_crashed")
    assert crash["during"] == "start"
    assert isinstance(crash["exc_info"], ResourceError)
    assert crash["exc_info"].resource == "sample"
    assert re.search(expected, str(crash["exc_info"])), str(crash["exc_info"])


async def test_a_server_that_lingers_is_terminated_on_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process still alive ``stop_timeout`` after its stdin closed gets
    SIGTERM (its whole process group) and is reaped. (This server also
    inherits the runtime's whole environment.)"""
    monkeypatch.setenv("RUNTIME_TEST_MCP_OTHER", "inherited")
    with capture_logs() as logs, trio.fail_after(10):
        options = {"command": SAMPLE, "stop_timeout": "200ms", "inherit_env": True}
        async with open_system(_topology(options), store="memory://") as system:
            ref = system.resource("sample")
            other = await ref.ask(CallTool("env", {"name": "RUNTIME_TEST_MCP_OTHER"}))
            assert other.text == "inherited"
            assert (await ref.ask(CallTool("linger"))).text == "lingering"
            pid = system.resource_statistics()["sample"].backend["server_pid"]
    (terminated,) = _events(logs, "mcp_server_terminated")
    assert terminated["signal"] == "SIGTERM" and terminated["pid"] == pid
    (stopped,) = _events(logs, "mcp_server_stopped")
    assert stopped["returncode"] == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


async def test_a_server_reached_by_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over streamable HTTP: tools are listed and called the same way, with
    the configured headers; once the server is gone, a call fails with a
    ResourceError naming the URL."""
    monkeypatch.setenv("RUNTIME_TEST_MCP_TOKEN", "Bearer s3cret")
    headers = {
        "headers": {"X-Team": "docs"},
        "headers_from_env": {"X-Auth": "RUNTIME_TEST_MCP_TOKEN"},
    }
    with trio.fail_after(10):
        async with (
            _http_server() as (url, server),
            open_system(_topology({"url": url, **headers}), store="memory://") as system,
        ):
            ref = system.resource("sample")
            assert "echo" in {tool.name for tool in await ref.ask(ListTools())}
            answer = await ref.ask(CallTool("echo", {"text": "over http"}))
            assert answer.text == "over http" and answer.structured == {"result": "over http"}
            assert system.resource_statistics()["sample"].backend["server_pid"] == 0
            for name, value in [("x-team", "docs"), ("x-auth", "Bearer s3cret")]:
                assert (await ref.ask(CallTool("header", {"name": name}))).text == value

            server.kill()
            await server.wait()
            with pytest.raises(ResourceError, match=f"the connection to {url}") as info:
                await ref.ask(CallTool("echo", {"text": "anyone?"}))
            assert info.value.transient


YAML = """\
system: tools
resources:
  git: {kind: mcp, command: [mcp-server-git, --repository, .], max_concurrency: 2}
  remote:
    kind: mcp
    url: https://tools.example.com/mcp
    headers: {Authorization: Bearer token}
    startup_timeout: 30s
    timeout: 2m
supervisor: {name: root}
"""


def test_options_from_yaml() -> None:
    """The kind's options sit beside the common fields; max_concurrency
    defaults to 2."""
    resources = runtime.parse_topology(YAML).resources
    git, remote = resources["git"], resources["remote"]
    assert git.kind is MCP and git.concurrency == 2
    assert git.options == MCPOptions(command=["mcp-server-git", "--repository", "."])
    assert git.options.startup_timeout == 10.0 and git.options.stop_timeout == 2.0
    assert git.options.stderr == "capture" and not git.options.inherit_env
    assert remote.concurrency == 2 and remote.timeout == 120.0
    assert remote.options.url == "https://tools.example.com/mcp"
    assert remote.options.headers == {"Authorization": "Bearer token"}
    assert remote.options.startup_timeout == 30.0 and remote.options.command is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{kind: mcp}", "t.yaml:3: resources.git.command: give exactly one of command"),
        (
            "{kind: mcp, command: [x], url: 'http://h/mcp'}",
            "resources.git.command: give exactly one of command",
        ),
        ("{kind: mcp, command: []}", "resources.git.command: expected the server's command"),
        ("{kind: mcp, url: 'ftp://h'}", "resources.git.url: expected an http:// or https:// URL"),
        ("{kind: mcp, url: 'http://h', cwd: /tmp}", "resources.git.cwd: applies to a server"),
        ("{kind: mcp, command: [x], headers: {a: b}}", "resources.git.headers: applies to"),
        ("{kind: mcp, url: 'http://h', pass_env: [A]}", "resources.git.pass_env: applies to"),
        (
            "{kind: mcp, command: [x], headers_from_env: {a: B}}",
            "resources.git.headers_from_env: applies to",
        ),
        ("{kind: mcp, command: [x], stderr: loud}", "resources.git.stderr: expected one of"),
        ("{kind: mcp, command: [x], startup_timeout: soon}", "resources.git.startup_timeout:"),
        ("{kind: mcp, command: [x], colour: red}", "resources.git.colour: unknown key 'colour'"),
    ],
    ids=[
        "neither",
        "both",
        "empty-command",
        "bad-url",
        "cwd-with-url",
        "headers-with-command",
        "pass-env-with-url",
        "headers-from-env-with-command",
        "bad-stderr",
        "bad-timeout",
        "unknown-key",
    ],
)
def test_bad_options_name_line_and_field(entry: str, expected: str) -> None:
    text = f"system: tools\nresources:\n  git: {entry}\nsupervisor: {{name: root}}\n"
    with pytest.raises(TopologyError) as info:
        runtime.parse_topology(text, "t.yaml")
    assert any(expected in error for error in info.value.errors), info.value.errors


def test_options_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="give exactly one of command"):
        ResourceSpec(kind="mcp", options={})
    spec = ResourceSpec(kind="mcp", options={"command": ("srv", "-v"), "env": {"A": "1"}})
    assert spec.options.command == ["srv", "-v"] and spec.options.env == {"A": "1"}


async def test_python_in_a_command_is_the_interpreter_running_the_system(
    tmp_path: Path,
) -> None:
    """``command: [python, ...]`` starts the server with this interpreter
    (sys.executable), whatever ``python`` the PATH would find: here a PATH
    whose only ``python`` exits at once."""
    decoy = tmp_path / "python"
    decoy.write_text("#!/bin/sh\nexit 3\n")
    decoy.chmod(0o755)
    options = {
        "command": ["python", SAMPLE[1]],
        "env": {"PATH": f"{tmp_path}:/usr/bin:/bin"},
    }
    with trio.fail_after(20):
        async with open_system(_topology(options), store="memory://") as system:
            tools = await system.resource("sample").ask(ListTools())
    assert "echo" in {tool.name for tool in tools}
