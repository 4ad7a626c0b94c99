"""The ``mcp`` resource kind: one MCP client session to one tool server.

The server is a subprocess spoken to over its stdin and stdout (``command``),
or an HTTP endpoint spoken to with MCP's streamable HTTP transport (``url``).
Each incarnation of the resource opens one session: it starts the process (or
connects), completes the ``initialize`` handshake and lists the tools, then
serves ``ListTools`` and ``CallTool`` requests under the limiter, two at a
time unless ``max_concurrency`` says otherwise (many servers do not survive
more).

The transport and the ``ClientSession`` are context managers with tasks of
their own, so one task, started in ``ctx.nursery`` by ``on_start``, enters
them and exits them: it lives exactly as long as the incarnation. When the
server process exits (or the HTTP connection fails) that task crashes the
resource with the reason, for example ``the server process (pid 4242) exited
with code 1``: requests in flight are answered with a ``ResourceError``
naming it, and the supervisor restarts the resource, which starts a new
process. A graceful stop closes the session, then the server's stdin, waits
``stop_timeout`` for the process to exit, then terminates its process group
(SIGTERM, then SIGKILL after another ``stop_timeout``).

Errors, as an asker sees them:

* a tool that reports a failure (``isError`` in its result) is an answer, not
  an exception: ``ToolResult.is_error`` is True and ``text`` says why, so an
  agent can hand it back to its model. ``CallTool(..., raise_on_error=True)``
  raises it instead, as a permanent ``ResourceError``.
* an error response to the request itself (an unknown method, invalid
  parameters, a server-side exception the SDK reports as JSON-RPC) is a
  permanent ``ResourceError`` carrying the JSON-RPC code.
* a server that went away is a transient ``ResourceError`` naming the reason;
  a call that ran past ``timeout`` is a ``TimeoutError`` (both are retried as
  ``retry`` allows; set ``retry: null`` for tools that must not run twice).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import Any, Literal, NoReturn, TypeVar

import anyio
import attrs
import httpx2
import mcp_types
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.session import ClientSession
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from .._actor import handler
from .._logging import get_logger
from .._resource import Resource
from .._specs import FieldError, Seconds, to_seconds
from ..errors import ResourceError

__all__ = ["MCP", "CallTool", "ListTools", "MCPOptions", "Tool", "ToolResult"]

T = TypeVar("T")

_STDERR_LINES = 20
"""How many of the server's last stderr lines are kept for error messages."""

_STDERR_IN_ERRORS = 3
"""How many of them an error message quotes."""

_DRAIN_STDERR = 0.5
"""Seconds to wait, once the process has exited, for the rest of its stderr."""

_REAP = 5.0
"""Seconds to wait for a process killed with SIGKILL to be reaped."""

_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
"""The HTTP client's timeouts: a response stream may stay open for long (the
limiter's ``timeout`` bounds each call)."""

logger = get_logger()


def _to_command(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise FieldError("command", f"expected a list of strings; got {value!r}")


def _str_dict(field: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise FieldError(field, f"expected a mapping of strings to strings; got {value!r}")
    return dict(value)


def _to_env(value: object) -> dict[str, str]:
    return _str_dict("env", value)


def _to_headers(value: object) -> dict[str, str]:
    return _str_dict("headers", value)


def _to_headers_from_env(value: object) -> dict[str, str]:
    return _str_dict("headers_from_env", value)


def _to_pass_env(value: object) -> list[str]:
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise FieldError("pass_env", f"expected a list of variable names; got {value!r}")


def _masked(values: dict[str, str]) -> str:
    """A repr that names the keys and hides the values (tokens, passwords)."""
    return "{" + ", ".join(f"{key!r}: '***'" for key in values) + "}"


def _read_env(variables: Mapping[str, str], option: str) -> dict[str, str]:
    """``{key: os.environ[name]}`` for each ``key: name`` of ``variables``.

    Raises:
        LookupError: some variables are not set; the message names them.
    """
    missing = [name for name in variables.values() if name not in os.environ]
    if missing:
        raise LookupError(f"{option}: environment variable(s) not set: {', '.join(missing)}")
    return {key: os.environ[name] for key, name in variables.items()}


@attrs.frozen
class MCPOptions:
    """The ``mcp`` kind's settings (YAML keys beside ``kind:``).

    Exactly one of ``command`` and ``url``.

    Attributes:
        command: the server's argv; it is started as a subprocess and spoken
            to over stdio. ``command[0]`` is looked up on the ``PATH`` of the
            server's environment (a name with a ``/`` is relative to ``cwd``);
            ``python`` or ``python3`` means the interpreter running the
            system, so ``[python, -m, package.server]`` finds a server
            installed beside the project.
        url: the endpoint of a server reached over streamable HTTP.
        env: variables set for the server, over a minimal inherited
            environment (``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``,
            ``USER``). Their values are hidden from the options' repr.
        pass_env: names of variables copied from the runtime's environment
            (tokens, so they need not appear in the topology); one that is
            not set fails the start.
        inherit_env: pass the runtime's whole environment instead of the
            minimal one (``pass_env`` and ``env`` still apply over it).
        cwd: the server's working directory (default: the runtime's).
        headers: HTTP headers for every request to ``url``; values hidden
            from the repr.
        headers_from_env: more headers, each read from the environment
            variable it names (``{Authorization: MCP_AUTH}``); one that is not
            set fails the start.
        startup_timeout: seconds from the start of the process (or the first
            connection) to the end of the handshake and the first tool
            listing; past it the start fails.
        stop_timeout: seconds a stopping server gets to exit after its stdin
            closes, and again after SIGTERM, before SIGKILL.
        stderr: the server's stderr: ``capture`` (keep the last lines, quoted
            when the process dies), ``log`` (also log each line as an
            ``mcp_server_stderr`` event) or ``inherit`` (the runtime's own).
    """

    command: list[str] | None = attrs.field(default=None, converter=_to_command)
    url: str | None = None
    env: dict[str, str] = attrs.field(factory=dict, converter=_to_env, repr=_masked)
    pass_env: list[str] = attrs.field(factory=list, converter=_to_pass_env)
    inherit_env: bool = False
    cwd: str | None = None
    headers: dict[str, str] = attrs.field(factory=dict, converter=_to_headers, repr=_masked)
    headers_from_env: dict[str, str] = attrs.field(factory=dict, converter=_to_headers_from_env)
    startup_timeout: Seconds = attrs.field(default=Seconds(10.0), converter=to_seconds)
    stop_timeout: Seconds = attrs.field(default=Seconds(2.0), converter=to_seconds)
    stderr: Literal["capture", "log", "inherit"] = "capture"

    def __attrs_post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise FieldError(
                "command",
                "give exactly one of command (a server started as a subprocess) "
                "and url (a server reached over streamable HTTP)",
            )
        if self.command is not None and not self.command:
            raise FieldError("command", "expected the server's command line; got an empty list")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise FieldError("url", f"expected an http:// or https:// URL; got {self.url!r}")
            for name in ("env", "pass_env", "inherit_env", "cwd"):
                if getattr(self, name):
                    raise FieldError(name, "applies to a server started with command, not url")
        else:
            for name in ("headers", "headers_from_env"):
                if getattr(self, name):
                    raise FieldError(name, "applies to a server reached by url, not command")
        if self.stderr not in ("capture", "log", "inherit"):
            raise FieldError("stderr", f"expected capture, log or inherit; got {self.stderr!r}")
        if self.startup_timeout <= 0:
            raise FieldError("startup_timeout", "expected a duration longer than zero")


# -- messages ------------------------------------------------------------------


@attrs.frozen
class ListTools:
    """Ask for the server's tools (every page). Answered with ``tuple[Tool, ...]``."""


@attrs.frozen
class CallTool:
    """Call the tool ``name`` with ``arguments``. Answered with a ``ToolResult``.

    Attributes:
        name: the tool's name, as ``ListTools`` gives it.
        arguments: the tool's arguments (JSON values), checked by the server
            against the tool's input schema.
        raise_on_error: raise a permanent ``ResourceError`` when the tool
            reports a failure, instead of answering with ``is_error`` set.
    """

    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    raise_on_error: bool = False


@attrs.frozen
class Tool:
    """One tool the server offers.

    Attributes:
        name: what ``CallTool`` names it by.
        description: what it does, for a model to read (may be None).
        input_schema: the JSON schema of its arguments.
        output_schema: the JSON schema of its structured result, if declared.
        title: a human-readable name, if given.
    """

    name: str
    description: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    title: str | None = None


@attrs.frozen
class ToolResult:
    """What a tool call returned.

    Attributes:
        text: the text blocks of its content, joined by newlines.
        structured: its structured content (a JSON object), if any.
        is_error: whether the tool reported a failure; ``text`` says why.
        content: every content block as JSON (text, images, resources...).
    """

    text: str
    structured: dict[str, Any] | None
    is_error: bool
    content: tuple[dict[str, Any], ...] = ()


def _tool(tool: mcp_types.Tool) -> Tool:
    return Tool(
        name=tool.name,
        description=tool.description,
        input_schema=dict(tool.input_schema),
        output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
        title=tool.title,
    )


def _result(result: mcp_types.CallToolResult) -> ToolResult:
    blocks = tuple(
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    )
    texts = [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]
    return ToolResult(
        text="\n".join(texts),
        structured=result.structured_content,
        is_error=bool(result.is_error),
        content=blocks,
    )


# -- the server process ----------------------------------------------------------


def _environment(options: MCPOptions) -> dict[str, str]:
    """The server's environment.

    Raises:
        LookupError: a ``pass_env`` variable is not set.
    """
    base = dict(os.environ) if options.inherit_env else get_default_environment()
    passed = _read_env({name: name for name in options.pass_env}, "pass_env")
    return base | passed | options.env


def _check_executable(command: str, env: Mapping[str, str], cwd: str | None) -> str | None:
    """Why ``command`` cannot be started, or None if it looks runnable.

    Checked before spawning, for a clear message (the spawn's own OSError
    is still reported if something else goes wrong).
    """
    if os.sep in command:
        path = os.path.join(cwd or os.curdir, command)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path!r} is not an executable file"
        return None
    search = env.get("PATH", os.defpath)
    if shutil.which(command, path=search) is None:
        return f"command {command!r} not found (PATH={search})"
    return None


def _describe_exit(pid: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the server process (pid {pid}) was killed by {name}"
    return f"the server process (pid {pid}) exited with code {code}"


async def _exited(process: trio.Process, within: float) -> bool:
    """Whether ``process`` has exited, waiting up to ``within`` seconds."""
    with trio.move_on_after(within):
        await process.wait()
    return process.returncode is not None


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _parse(line: bytes) -> SessionMessage | Exception:
    """One line of the server's stdout; a malformed one is handed to the
    session as the exception (it logs it and goes on)."""
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return exc


class _ServerProcess:
    """One server process and the pumps between its pipes and a session.

    ``lost`` is set when the connection ends from the server's side: its
    stdout reached end of file, its stdin broke, or the process exited.
    """

    def __init__(self, options: MCPOptions, log: Any) -> None:
        self.options = options
        self.log = log
        self.process: trio.Process | None = None
        self.lost = trio.Event()
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)
        self.stderr_done = trio.Event()

    async def spawn(self) -> trio.Process:
        """Start the process in a new session (its own process group).

        Raises:
            OSError: the command does not exist or cannot be run; the
                message says which and why.
            LookupError: a ``pass_env`` variable is not set.
        """
        options = self.options
        assert options.command is not None
        env = _environment(options)
        argv = list(options.command)
        if argv[0] in ("python", "python3"):
            # The interpreter running the system: its environment has the
            # packages the project installed (a server module among them).
            argv[0] = sys.executable
        problem = _check_executable(argv[0], env, options.cwd)
        if problem is not None:
            raise FileNotFoundError(problem)
        capture = options.stderr != "inherit"
        self.process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture else None,
            env=env,
            cwd=options.cwd,
            start_new_session=True,
        )
        if not capture:
            self.stderr_done.set()
        return self.process

    def connect(
        self, nursery: trio.Nursery
    ) -> tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]:
        """Start the pumps in ``nursery``; return the session's read and write streams."""
        read_in, read_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_in, write_out = anyio.create_memory_object_stream[SessionMessage](0)
        nursery.start_soon(self._pump_stdout, read_in)
        nursery.start_soon(self._pump_stdin, write_out)
        nursery.start_soon(self._watch)
        if self.options.stderr != "inherit":
            nursery.start_soon(self._pump_stderr)
        return read_out, write_in

    async def _watch(self) -> None:
        assert self.process is not None
        await self.process.wait()
        self.lost.set()

    async def _pump_stdout(self, sink: MemoryObjectSendStream[SessionMessage | Exception]) -> None:
        """Parse newline-delimited JSON-RPC from stdout into the session.

        Once the session has gone, the rest is read and dropped, so a server
        flushing its output on the way out never blocks on a full pipe.
        """
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        buffer = b""
        try:
            async with sink:
                async for chunk in stdout:
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            await sink.send(_parse(line))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            async for _ in stdout:
                pass
        finally:
            self.lost.set()

    async def _pump_stdin(self, source: MemoryObjectReceiveStream[SessionMessage]) -> None:
        assert self.process is not None and self.process.stdin is not None
        stdin = self.process.stdin
        async with source:
            try:
                async for message in source:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send_all(data.encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.lost.set()

    async def _pump_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        buffer = b""
        try:
            async for chunk in self.process.stderr:
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    self._stderr_line(line)
            self._stderr_line(buffer)
        finally:
            self.stderr_done.set()

    def _stderr_line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if not line:
            return
        self.stderr_tail.append(line)
        if self.options.stderr == "log":
            self.log.info("mcp_server_stderr", line=line)

    async def reason(self) -> str:
        """Why the connection ended: the exit status (waiting up to
        ``stop_timeout`` for it) and the last lines of stderr."""
        process = self.process
        assert process is not None
        if await _exited(process, self.options.stop_timeout):
            assert process.returncode is not None
            reason = _describe_exit(process.pid, process.returncode)
            with trio.move_on_after(_DRAIN_STDERR):
                await self.stderr_done.wait()
        else:
            reason = f"the server process (pid {process.pid}) closed its stdout"
        tail = list(self.stderr_tail)[-_STDERR_IN_ERRORS:]
        if tail:
            reason += "; its stderr ended with: " + " | ".join(tail)
        return reason

    async def stop(self) -> None:
        """End the process: close its stdin and wait ``stop_timeout``, then
        SIGTERM its process group and wait ``stop_timeout``, then SIGKILL.
        Members of its group left behind once it has exited get SIGTERM.

        Not cancellable (shielded); bounded by twice ``stop_timeout`` plus
        the wait for a killed process to be reaped.
        """
        process = self.process
        if process is None:
            return
        grace = self.options.stop_timeout
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await process.stdin.aclose()
            if not await _exited(process, grace):
                self.log.warning("mcp_server_terminated", pid=process.pid, signal="SIGTERM")
                _kill_group(process.pid, signal.SIGTERM)
                if not await _exited(process, grace):
                    self.log.warning("mcp_server_terminated", pid=process.pid, signal="SIGKILL")
                    _kill_group(process.pid, signal.SIGKILL)
                    await _exited(process, _REAP)
            _kill_group(process.pid, signal.SIGTERM)  # what it left behind, if anything

    async def close_pipes(self) -> None:
        """Close the pipes (once their pumps have ended)."""
        process = self.process
        if process is None:
            return
        with trio.CancelScope(shield=True):
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


# -- the resource ----------------------------------------------------------------


def _client_info() -> mcp_types.Implementation:
    try:
        version = metadata.version("trio-actor-runtime")
    except metadata.PackageNotFoundError:
        version = "0"
    return mcp_types.Implementation(name="trio-actor-runtime", version=version)


class MCP(Resource):
    """A session with one MCP server; see the module docstring.

    Handles ``ListTools`` and ``CallTool``.
    """

    Options = MCPOptions
    default_max_concurrency = 2

    def __init__(self) -> None:
        self._session: ClientSession | None = None
        self._server: _ServerProcess | None = None
        self._serving = trio.CancelScope()  # cancelled by on_stop: the session ends
        self._ended = trio.Event()
        self._tools: tuple[Tool, ...] | None = None
        self._started_at: float | None = None
        self._in_flight = 0
        self._tool_calls = 0
        self._tool_errors = 0
        self._request_errors = 0

    @property
    def _label(self) -> str:
        return f"mcp {self.name!r}"

    @classmethod
    def check_environment(cls, options: MCPOptions) -> list[tuple[str, str]]:
        """A ``command`` not found on the server's ``PATH`` (``python`` and
        ``python3`` are the interpreter running the system: always found),
        and ``pass_env`` or ``headers_from_env`` variables that are not set:
        each would fail the start."""
        problems = []
        for field, names in (
            ("pass_env", options.pass_env),
            ("headers_from_env", list(options.headers_from_env.values())),
        ):
            missing = [name for name in names if name not in os.environ]
            if missing:
                problems.append(
                    (
                        field,
                        f"environment variable(s) not set: {', '.join(missing)}, "
                        "so the resource cannot start",
                    )
                )
        if options.command is not None and options.command[0] not in ("python", "python3"):
            base = dict(os.environ) if options.inherit_env else get_default_environment()
            passed = {name: os.environ[name] for name in options.pass_env if name in os.environ}
            env = base | passed | options.env
            problem = _check_executable(options.command[0], env, options.cwd)
            if problem is not None:
                problems.append(("command", f"{problem}, so the resource cannot start"))
        return problems

    # -- lifetime ---------------------------------------------------------------

    async def on_start(self) -> None:
        self._session = await self.ctx.nursery.start(self._run_session)
        self._started_at = trio.current_time()

    async def on_stop(self) -> None:
        self._serving.cancel()
        # The session task's cleanup is shielded and bounded by stop_timeout.
        await self._ended.wait()

    async def _run_session(self, task_status: trio.TaskStatus[ClientSession]) -> None:
        """Own the transport and the session for this incarnation: enter
        them, serve until stopped or the server is lost, exit them."""
        try:
            if self.options.url is not None:
                await self._run_http(task_status)
            else:
                await self._run_stdio(task_status)
        finally:
            self._session = None
            self._ended.set()

    async def _run_stdio(self, task_status: trio.TaskStatus[ClientSession]) -> None:
        log = logger.bind(path=self.ctx.path)
        server = self._server = _ServerProcess(self.options, log)
        try:
            process = await server.spawn()
        except (OSError, LookupError) as exc:
            raise self._error(f"cannot start the server: {exc}") from exc
        log.info("mcp_server_started", pid=process.pid, command=self.options.command)
        try:
            async with trio.open_nursery() as pipes:
                try:
                    read, write = server.connect(pipes)
                    async with ClientSession(read, write, client_info=_client_info()) as session:
                        try:
                            await self._handshake(session)
                        except _ConnectionLost:
                            reason = await server.reason()
                            raise self._error(
                                f"the server failed during startup: {reason}", transient=True
                            ) from None
                        task_status.started(session)
                        with self._serving:
                            await server.lost.wait()
                        if not self._serving.cancelled_caught:
                            self._lose(await server.reason())
                finally:
                    await server.stop()
                    pipes.cancel_scope.cancel()
        finally:
            await server.close_pipes()
            log.info("mcp_server_stopped", pid=process.pid, returncode=process.returncode)

    async def _run_http(self, task_status: trio.TaskStatus[ClientSession]) -> None:
        url = self.options.url
        assert url is not None
        try:
            from_env = _read_env(self.options.headers_from_env, "headers_from_env")
        except LookupError as exc:
            raise self._error(f"cannot connect to the server: {exc}") from exc
        started = False
        try:
            async with (
                httpx2.AsyncClient(
                    headers=self.options.headers | from_env, timeout=_HTTP_TIMEOUT
                ) as http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write, client_info=_client_info()) as session,
            ):
                await self._handshake(session)
                task_status.started(session)
                started = True
                with self._serving:
                    await trio.sleep_forever()
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, ResourceError) and not started:
                raise cause from None
            if cause is None:
                reason = f"the connection to {url} closed"
            else:
                reason = f"the connection to {url} failed: {type(cause).__name__}: {cause}"
            if not started:
                raise self._error(reason, transient=True) from cause
            self._lose(reason)

    async def _handshake(self, session: ClientSession) -> None:
        """``initialize``, then the first tool listing, within ``startup_timeout``.

        Raises:
            ResourceError: the server refused, or was too slow.
            _ConnectionLost: the connection ended meanwhile.
        """
        timeout = self.options.startup_timeout
        with trio.move_on_after(timeout) as scope:
            info = await self._guard("initialize", session.initialize)
            tools = await self._guard("tools/list", self._list_tools, session)
        if scope.cancelled_caught:
            raise ResourceError(
                f"{self._label}: the server did not complete the handshake within {timeout:g}s",
                resource=self.name,
                transient=True,
            )
        logger.bind(path=self.ctx.path).info(
            "mcp_session_opened",
            server=info.server_info.name,
            server_version=info.server_info.version,
            protocol=info.protocol_version,
            tools=len(tools),
        )
        self._tools = tools

    def _lose(self, reason: str) -> None:
        """The server is gone: crash this incarnation with ``reason``.

        Askers in flight get a ``ResourceError`` reading
        ``resources/<name>: <reason>``.
        """
        self.fail(ResourceError(reason, resource=self.name, transient=True))

    def _error(self, message: str, *, transient: bool = False) -> ResourceError:
        return ResourceError(f"{self._label}: {message}", resource=self.name, transient=transient)

    # -- requests ---------------------------------------------------------------

    @handler
    async def list_tools(self, msg: ListTools) -> tuple[Tool, ...]:
        session = await self._current()
        tools: tuple[Tool, ...] = await self.call(
            self._guard, "tools/list", self._list_tools, session
        )
        self._tools = tools
        return tools

    @handler
    async def call_tool(self, msg: CallTool) -> ToolResult:
        session = await self._current()
        self._tool_calls += 1
        result = _result(
            await self.call(
                self._guard,
                f"tools/call {msg.name!r}",
                session.call_tool,
                msg.name,
                dict(msg.arguments),
            )
        )
        if result.is_error:
            self._tool_errors += 1
            if msg.raise_on_error:
                raise ResourceError(
                    f"{self._label}: tool {msg.name!r} failed: {result.text}", resource=self.name
                )
        return result

    async def _current(self) -> ClientSession:
        if self._session is None:  # only between a lost server and the crash
            await self._connection_lost("no session")
        return self._session

    async def _list_tools(self, session: ClientSession) -> tuple[Tool, ...]:
        tools: list[Tool] = []
        cursor: str | None = None
        while True:
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(_tool(tool) for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tuple(tools)

    async def _guard(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run one request on the session, counting it and turning the SDK's
        errors into ``ResourceError``.

        A closed connection means the session task is about to crash this
        incarnation with the reason (the exit code): the call waits to be
        cancelled by that crash, so its asker gets the reason, not a bare
        "connection closed".
        """
        self._in_flight += 1
        try:
            return await fn(*args)
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                await self._connection_lost(exc.message)
            self._request_errors += 1
            raise ResourceError(
                f"{self._label}: {what} failed: {exc.message} (code {exc.code})",
                resource=self.name,
            ) from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            await self._connection_lost(repr(exc))
        except ValidationError as exc:
            self._request_errors += 1
            raise ResourceError(
                f"{self._label}: the server's answer to {what} is malformed: {exc}",
                resource=self.name,
            ) from exc
        finally:
            self._in_flight -= 1

    async def _connection_lost(self, detail: str) -> NoReturn:
        """A request found the connection closed.

        Over HTTP one request's stream may break while the session lives on:
        the request fails (transient; a server that is really gone fails the
        next request's connection, and that crashes the session). Over stdio
        the session task is finding out why (the exit status) and then
        crashes this incarnation, which cancels this wait, so the asker gets
        that reason; the bound only guards against a crash that never comes.
        """
        if self._started_at is None:
            raise _ConnectionLost  # in the handshake: the session task says why
        if self.options.url is None:
            await trio.sleep(self.options.stop_timeout + _DRAIN_STDERR + 1)
            where = "the server"
        else:
            where = self.options.url
        raise self._error(f"the connection to {where} closed ({detail})", transient=True)

    def backend_statistics(self) -> dict[str, float]:
        """``requests_in_flight``, ``tool_calls``, ``tool_errors`` (results with
        ``is_error``), ``request_errors`` (error responses), ``tools`` (in
        the last listing), ``server_pid`` (0 for a URL or before the start)
        and ``uptime_seconds`` of this incarnation's session."""
        process = self._server.process if self._server is not None else None
        uptime = 0.0
        if self._started_at is not None and self._session is not None:
            uptime = trio.current_time() - self._started_at
        return {
            "requests_in_flight": self._in_flight,
            "tool_calls": self._tool_calls,
            "tool_errors": self._tool_errors,
            "request_errors": self._request_errors,
            "tools": len(self._tools) if self._tools is not None else 0,
            "server_pid": process.pid if process is not None else 0,
            "uptime_seconds": uptime,
        }


class _ConnectionLost(Exception):
    """The connection ended during the handshake (the session task reports why)."""


def _cause(exc: BaseException) -> BaseException | None:
    """The error that ended a transport: the first leaf of an exception group
    that is not the handshake's own report of the closed connection."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _cause(sub)
            if found is not None:
                return found
        return None
    return None if isinstance(exc, _ConnectionLost) else exc
