"""Checkpoint cost per store: the latency of one write, and what ``checkpoint:
message`` costs a busy actor against ``checkpoint: off`` in the same run."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio
from tests import postgres_session

import runtime
from runtime._checkpoint import open_store

from ._measure import percentile, repeat
from .bench_messaging import Msg, Ping

STORES = ["memory", "sqlite", "postgresql"]


def _url(kind: str, directory: Path) -> str:
    if kind == "postgresql":
        postgres_session.require()  # this session's own schema on the shared server
        return postgres_session.URL
    return "memory://" if kind == "memory" else f"sqlite:///{directory / 'bench.db'}"


@attrs.define
class TallyState:
    count: int = 0


class Tally(runtime.Actor[TallyState]):
    """Counts messages in checkpointed state: every message changes it."""

    @runtime.handler
    async def msg(self, msg: Msg) -> None:
        self.state.count += 1

    @runtime.handler
    async def ping(self, msg: Ping) -> int:
        return self.state.count


async def _writes(url: str, count: int) -> list[float]:
    async with trio_asyncio.open_loop():
        store = open_store(url)
        samples = []
        try:
            await store.delete("root/bench")
            version = 0
            for n in range(count):
                start = time.perf_counter()
                version = await store.save("root/bench", f'{{"count": {n}}}', version)
                samples.append(time.perf_counter() - start)
        finally:
            await store.aclose()
    return samples


async def _handled_per_second(url: str, policy: str, messages: int, actors: int = 1) -> float:
    """Messages per second, in total, handled by ``actors`` Tally actors, each
    sent ``messages`` tells by a task of its own (time until the last is handled)."""
    # Names of this run's own: the PostgreSQL schema outlives a run.
    run = secrets.token_hex(4)
    names = [f"t{i}_{run}" for i in range(actors)]
    spec = runtime.Topology(
        system="bench",
        supervisor=runtime.SupervisorSpec(
            name="root",
            children=[runtime.ChildSpec(name=n, actor=Tally, checkpoint=policy) for n in names],
        ),
    )
    async with runtime.open_system(spec, store=url) as system:
        refs = [system.ref(f"root/{name}") for name in names]

        async def send(ref: Any) -> None:
            for _ in range(messages):
                await ref.tell(Msg(1))
            await ref.ask(Ping(), timeout=600)  # behind every write of its stream

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for ref in refs:
                nursery.start_soon(send, ref)
        return actors * messages / (time.perf_counter() - start)


@pytest.mark.parametrize("kind", STORES)
def test_checkpoint_write_latency(bench: Any, quick: bool, kind: str) -> None:
    """p50 and p99 of one conditional write to the store: what every
    checkpointed message pays under ``checkpoint: message``."""
    count = 200 if quick else 5_000
    with tempfile.TemporaryDirectory() as directory:
        samples = trio.run(_writes, _url(kind, Path(directory)), count)
    for q in (50, 99):
        bench.record(
            f"checkpoint write p{q} ({kind})",
            percentile(samples, q),
            "s",
            higher_is_better=False,
        )


def _message_against_off(
    bench: Any, quick: bool, kind: str, name: str, *, messages: int, actors: int
) -> None:
    """Record ``_handled_per_second`` under ``message`` beside ``off``."""
    times = 1 if quick else 3

    def run(policy: str) -> float:
        with tempfile.TemporaryDirectory() as directory:
            return trio.run(
                _handled_per_second, _url(kind, Path(directory)), policy, messages, actors
            )

    saved, spread = repeat(lambda: run("message"), times)
    off, _ = repeat(lambda: run("off"), times)
    bench.record(
        name, saved, "msg/s", baseline=off, baseline_name="checkpoint: off", spread=spread
    )


@pytest.mark.parametrize("kind", STORES)
def test_checkpoint_message_throughput(bench: Any, quick: bool, kind: str) -> None:
    """Messages handled per second by an actor whose every message changes its
    state, with ``checkpoint: message`` against ``checkpoint: off``."""
    name = f"handled with checkpoint: message ({kind})"
    _message_against_off(bench, quick, kind, name, messages=500 if quick else 10_000, actors=1)


@pytest.mark.parametrize("kind", STORES)
def test_checkpoint_message_throughput_100_actors(bench: Any, quick: bool, kind: str) -> None:
    """Messages handled per second in total by 100 actors, each handling its
    own stream of state-changing messages under ``checkpoint: message``: the
    writes of actors waiting at once share a transaction (group commit).
    Against the same 100 actors with ``checkpoint: off``."""
    name = f"handled with checkpoint: message, 100 actors ({kind})"
    _message_against_off(bench, quick, kind, name, messages=10 if quick else 200, actors=100)
