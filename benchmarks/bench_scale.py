"""Scale: 100,000 idle actors under one supervisor, against 100,000 parked raw tasks.

Each measurement runs in a fresh interpreter so that resident memory grows
from a clean start. The garbage collector is disabled during the bulk spawn,
for the actors and the raw tasks alike: with it on, both spend most of their
time in repeated full collections of a heap that only grows. A second
benchmark keeps it on, as users do, and measures how spawn time grows from
1,000 to 10,000 actors.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio
import trio.testing

import runtime

from ._measure import rss_bytes

REPO = Path(__file__).resolve().parent.parent


@attrs.frozen
class Nudge:
    pass


class Idle(runtime.Actor[None]):
    @runtime.handler
    async def nudge(self, msg: Nudge) -> None:
        pass


async def _raw(count: int) -> dict[str, float]:
    """``count`` tasks, each parked on its own memory channel."""
    senders = []

    async def park(receive: trio.MemoryReceiveChannel[object]) -> None:
        async for _ in receive:
            pass

    async with trio.open_nursery() as nursery:
        before = rss_bytes()
        start = time.perf_counter()
        for _ in range(count):
            send, receive = trio.open_memory_channel[object](100)
            senders.append(send)
            nursery.start_soon(park, receive)
        await trio.testing.wait_all_tasks_blocked()
        spawn = time.perf_counter() - start
        memory = (rss_bytes() - before) / count
        start = time.perf_counter()
        nursery.cancel_scope.cancel()
    return {"spawn": spawn, "memory": memory, "stop": time.perf_counter() - start}


async def _actors(count: int) -> dict[str, float]:
    """``count`` idle actors spawned one by one under the root supervisor."""
    start_stop = 0.0
    async with runtime.open_system() as system:
        before = rss_bytes()
        start = time.perf_counter()
        for index in range(count):
            await system.spawn(Idle, name=f"idle{index}")
        await trio.testing.wait_all_tasks_blocked()
        spawn = time.perf_counter() - start
        memory = (rss_bytes() - before) / count
        start_stop = time.perf_counter()
    return {"spawn": spawn, "memory": memory, "stop": time.perf_counter() - start_stop}


def _measure_in_subprocess(kind: str, count: int, *, collector: bool = False) -> dict[str, float]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_scale",
            kind,
            str(count),
            *(["--collector"] if collector else []),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def test_idle_actors_at_scale(bench: Any, quick: bool) -> None:
    """Spawn time, resident memory per actor and time to stop them all, for
    100,000 idle actors against 100,000 raw tasks parked on their own channel:
    what an agent system with many mostly-idle agents costs. Medians of three
    fresh-interpreter runs of each (one in quick mode)."""
    count = 10_000 if quick else 100_000
    times = 1 if quick else 3
    runs = [
        (_measure_in_subprocess("actors", count), _measure_in_subprocess("raw", count))
        for _ in range(times)
    ]
    label = f"{count:,} idle actors"
    for key, name, baseline_name in (
        ("spawn", "spawn", "raw parked tasks"),
        ("memory", "memory each", "raw parked tasks"),
        ("stop", "stop all", "raw cancel"),
    ):
        actor_figures = [actors[key] for actors, _ in runs]
        bench.record(
            f"{label}: {name}",
            statistics.median(actor_figures),
            "B" if key == "memory" else "s",
            baseline=statistics.median(raw[key] for _, raw in runs),
            baseline_name=baseline_name,
            higher_is_better=False,
            spread=(min(actor_figures), max(actor_figures)),
        )


def test_spawn_with_the_collector_on(bench: Any, quick: bool) -> None:
    """Spawn time of 10,000 idle actors over that of 1,000, with the garbage
    collector on, as a user runs it: linear growth is 10. Each idle actor's
    objects tracked by the collector make the full collections that repeat
    over the growing heap longer; too many per actor and spawning turns
    superlinear. Baseline: the same ratio for raw parked tasks. Each size is
    timed in five fresh interpreters (one in quick mode), interleaved, and
    the ratio is of the medians: a 1,000-actor spawn takes tens of
    milliseconds, so single ratios swing widely."""
    small, large = (200, 2_000) if quick else (1_000, 10_000)
    times = 1 if quick else 5
    spawns: dict[tuple[str, int], list[float]] = {}
    for _ in range(times):
        for kind in ("actors", "raw"):
            for count in (small, large):
                figures = _measure_in_subprocess(kind, count, collector=True)
                spawns.setdefault((kind, count), []).append(figures["spawn"])

    def ratio(kind: str) -> float:
        median = statistics.median
        return median(spawns[kind, large]) / median(spawns[kind, small])

    bench.record(
        f"spawn with the collector on: {large:,} / {small:,} actors",
        ratio("actors"),
        "x",
        baseline=ratio("raw"),
        baseline_name="raw parked tasks, same ratio",
        higher_is_better=False,
    )


def main() -> None:
    """``python -m benchmarks.bench_scale actors|raw COUNT [--collector]``: prints
    the figures as JSON (the collector is off during the spawn unless asked)."""
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    kind, count = sys.argv[1], int(sys.argv[2])
    if "--collector" not in sys.argv[3:]:
        gc.disable()
    figures = trio.run(_actors if kind == "actors" else _raw, count)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
