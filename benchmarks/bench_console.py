"""What the console's viewers cost a busy system: messages handled per
second by 1,000 actors kept busy by 100 senders, with 5 viewers watching
``/ui/events`` against none, in the same run (interleaved windows), and the
time one snapshot of that system takes (what each interval costs while
anyone watches, however many they are).

The viewers are another process (5 streaming connections), as browsers
would be: their reading costs this process nothing but the serving.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import trio

import runtime
from runtime._console import Console

from .bench_messaging import Msg, Sink

ACTORS = 1_000
SENDERS = 100
VIEWERS = 5

# Each viewer reads the stream as fast as it comes and counts the snapshots.
_VIEWER = textwrap.dedent(
    """
    import sys, threading, http.client, urllib.parse
    url = urllib.parse.urlsplit(sys.argv[1])
    counts = [0] * int(sys.argv[2])
    def watch(i):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        connection.request("GET", "/ui/events")
        response = connection.getresponse()
        for line in response:
            if line.startswith(b"event: snapshot"):
                counts[i] += 1
                print("snapshot", flush=True)
    for i in range(len(counts)):
        threading.Thread(target=watch, args=(i,), daemon=True).start()
    sys.stdin.read()
    """
)


async def _window(system: runtime.ActorSystem, seconds: float) -> float:
    """Messages handled per second over the next ``seconds``."""
    cells = system.cells()
    before = sum(cell.handled for cell in cells)
    start = time.perf_counter()
    await trio.sleep(seconds)
    return (sum(cell.handled for cell in cells) - before) / (time.perf_counter() - start)


async def _measure(windows: int, seconds: float) -> dict[str, Any]:
    topology = runtime.Topology(
        system="bench-console", metrics=runtime.MetricsSpec(listen="127.0.0.1:0")
    )
    idle: list[float] = []
    watched: list[float] = []
    async with runtime.open_system(topology) as system, trio.open_nursery() as nursery:
        refs = [await system.spawn(Sink, name=f"sink{n}") for n in range(ACTORS)]
        msg = Msg(1)

        async def send(first: int) -> None:
            mine = refs[first::SENDERS]
            while True:
                for ref in mine:
                    await ref.tell(msg)

        for first in range(SENDERS):
            nursery.start_soon(send, first)
        url = f"{system.endpoint_url}/ui/events"
        for _ in range(windows):
            idle.append(await _window(system, seconds))
            viewers = await trio.lowlevel.open_process(
                [sys.executable, "-c", _VIEWER, url, str(VIEWERS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert viewers.stdout is not None
            # Once every viewer has its first snapshot, all five are connected.
            seen = b""
            while seen.count(b"snapshot\n") < VIEWERS:
                seen += await viewers.stdout.receive_some()
            watched.append(await _window(system, seconds))
            viewers.kill()
            await viewers.wait()
        console = Console(system, token=None)
        start = time.perf_counter()
        snapshots = 5
        for _ in range(snapshots):
            body = console.publish()
        snapshot_seconds = (time.perf_counter() - start) / snapshots
        nursery.cancel_scope.cancel()
    return {
        "idle": idle,
        "watched": watched,
        "snapshot_seconds": snapshot_seconds,
        "snapshot_bytes": len(body),
    }


def test_viewers_cost_on_a_busy_system(bench: Any, quick: bool) -> None:
    """Target: 5 viewers cost at most 5% of the messages handled per second."""
    found = trio.run(_measure, 2 if quick else 5, 1.0 if quick else 3.0)
    idle, watched = found["idle"], found["watched"]
    with_viewers, without = statistics.median(watched), statistics.median(idle)
    bench.record(
        f"{ACTORS} busy actors, handled/s with {VIEWERS} console viewers",
        with_viewers,
        "msg/s",
        baseline=without,
        baseline_name="no viewer",
        spread=(min(watched), max(watched)),
        target="cost <= 5%",
        met=with_viewers >= 0.95 * without,
    )
    bench.record(
        f"one console snapshot of {ACTORS} actors",
        found["snapshot_seconds"],
        "s",
        higher_is_better=False,
        bytes=found["snapshot_bytes"],
    )
