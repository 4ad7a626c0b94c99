"""A small MCP server for the tests, written with the SDK's ``MCPServer``.

Run ``python -m tests.mcp_servers.sample_server`` to serve over stdio, or
``... --http`` to serve streamable HTTP on a free port of 127.0.0.1: it binds
and listens first, then prints ``PORT <n>`` on stdout, so a client connecting
after reading that line never races the server's start.

Tools:
    echo(text): returns ``text``.
    add(a, b): returns ``a + b`` as structured content.
    slow(seconds): sleeps, then returns ``"slept"``.
    hold(seconds): like slow, and counts how many calls are running at once.
    peak(): the most ``hold`` calls that ever ran at once in this process.
    fail(reason): a tool error (``is_error``) with ``reason``.
    exit(code): writes a line to stderr and ends the process at once, never
        answering.
    pid(): this process's id.
    env(name): the value of an environment variable ("" when unset).
    header(name): the value of a header of the HTTP request ("" over stdio).
    linger(): keeps the process alive after its stdin closes (a thread that
        is not a daemon), so only a signal ends it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("sample", version="1.0", log_level="WARNING", subscriptions=False)
_holding = {"running": 0, "peak": 0}


@server.tool(description="Return the text unchanged.")
def echo(text: str) -> str:
    return text


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


@server.tool(description="Sleep for a while.")
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "slept"


@server.tool(description="Sleep for a while, counting the calls running at once.")
async def hold(seconds: float) -> int:
    _holding["running"] += 1
    _holding["peak"] = max(_holding["peak"], _holding["running"])
    try:
        await anyio.sleep(seconds)
    finally:
        _holding["running"] -= 1
    return _holding["peak"]


@server.tool(description="The most hold calls that ever ran at once.")
def peak() -> int:
    return _holding["peak"]


@server.tool(description="Fail with a tool error.")
def fail(reason: str) -> str:
    raise ToolError(reason)


@server.tool(description="End the server process at once.")
def exit(code: int) -> str:
    sys.stderr.write(f"sample server: exiting with code {code}\n")
    sys.stderr.flush()
    os._exit(code)


@server.tool(description="This process's id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="An environment variable of this process.")
def env(name: str) -> str:
    return os.environ.get(name, "")


@server.tool(description="A header of the HTTP request.")
def header(name: str, ctx: Context) -> str:
    return (ctx.headers or {}).get(name, "")


@server.tool(description="Keep the process alive after stdin closes.")
def linger() -> str:
    threading.Thread(target=time.sleep, args=(60,)).start()
    return "lingering"


async def _serve_http() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    if "--http" in sys.argv[1:]:
        anyio.run(_serve_http)
    else:
        server.run("stdio")
