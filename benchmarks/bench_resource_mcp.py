"""What the ``mcp`` resource costs a tool call: the latency (p50, p99) and
throughput of ``echo`` calls asked of the resource, against the same calls
made on a bare ``ClientSession`` over the SDK's own stdio transport, in the
same run.

Both sides talk to the same kind of server process (the tests' sample
server, a fresh one per side) with two calls in flight at a time, the
resource's default ``max_concurrency``. The resource's side adds an ask
(mailbox, reply), the limiter and its own stdio pumps; the server's side,
which dominates, is the same for both.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

import runtime
from runtime.resources.mcp import CallTool

from ._measure import percentile

SERVER = Path(__file__).parent.parent / "tests" / "mcp_servers" / "sample_server.py"
CONCURRENCY = 2


async def _drive(call: Callable[[int], Awaitable[Any]], calls: int) -> tuple[list[float], float]:
    """Make ``calls`` calls, CONCURRENCY at a time; their latencies and the
    calls per second over the whole run."""
    latencies: list[float] = []
    next_call = iter(range(calls))

    async def worker() -> None:
        for n in next_call:
            start = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
    return latencies, calls / (time.perf_counter() - start)


async def _through_resource(calls: int, warmup: int) -> tuple[list[float], float]:
    topology = runtime.Topology(
        system="bench",
        resources={
            "sample": runtime.ResourceSpec(
                kind="mcp", options={"command": [sys.executable, str(SERVER)]}
            )
        },
    )
    async with runtime.open_system(topology, store="memory://") as system:
        ref = system.resource("sample")

        async def call(n: int) -> Any:
            result = await ref.ask(CallTool("echo", {"text": f"call {n}"}))
            assert result.text == f"call {n}"
            return result

        await _drive(call, warmup)
        return await _drive(call, calls)


async def _bare_session(calls: int, warmup: int) -> tuple[list[float], float]:
    server = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(n: int) -> Any:
            result = await session.call_tool("echo", {"text": f"call {n}"})
            assert result.structured_content == {"result": f"call {n}"}
            return result

        await _drive(call, warmup)
        return await _drive(call, calls)


def test_mcp_tool_call_overhead(bench: Any, quick: bool) -> None:
    """Latency and throughput of an echo tool call through the resource,
    against the bare ClientSession; ratios above 1 are the resource's cost
    in latency, below 1 in throughput.

    The two sides take turns over several rounds (a new server process each
    time), so a slow spell of the machine falls on both; latencies are
    pooled over the rounds, throughput is the median round.
    """
    calls, warmup, rounds = (100, 20, 1) if quick else (2_000, 200, 3)
    sides = {"resource": _through_resource, "session": _bare_session}
    latencies: dict[str, list[float]] = {side: [] for side in sides}
    throughputs: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side, run in sides.items():
            samples, throughput = trio.run(run, calls, warmup)
            latencies[side] += samples
            throughputs[side].append(throughput)
    for q in (50, 99):
        bench.record(
            f"mcp tool call p{q} (concurrency {CONCURRENCY})",
            percentile(latencies["resource"], q),
            "s",
            baseline=percentile(latencies["session"], q),
            baseline_name="ClientSession",
            higher_is_better=False,
        )
    bench.record(
        f"mcp tool calls (concurrency {CONCURRENCY})",
        statistics.median(throughputs["resource"]),
        "msg/s",
        baseline=statistics.median(throughputs["session"]),
        baseline_name="ClientSession",
        spread=(min(throughputs["resource"]), max(throughputs["resource"])),
    )
