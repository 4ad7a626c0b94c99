"""Peers: Pykka and Thespian on the messaging workloads, beside the runtime.

Each peer figure is recorded with the runtime's figure for the same workload,
measured in the same test, as its baseline: the ratio is peer / runtime, so
above 1 means the peer is faster for throughput and slower for latency.

The peers are optional (``pip install -e '.[bench]'``); a test whose peer is
absent is skipped. Pykka runs each actor on its own thread, so a tell is a
queue put and an ask a hand-off between two threads under the GIL. Thespian
runs on ``simpleSystemBase``, its single-threaded base: ``tell`` and ``ask``
deliver the message by calling the handler in the caller's thread before they
return, so it measures Thespian's dispatch bookkeeping with no concurrency at
all (its process-based bases add pickling and sockets on top).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from types import ModuleType
from typing import Any

import attrs
import pytest
import trio

from ._measure import percentile, repeat
from .bench_messaging import Msg, Ping, _actor_asks, _actor_tell

pytestmark = pytest.mark.peer

_THREAD_JOIN_TIMEOUT = 10.0


def _import(peer: Peer) -> ModuleType:
    """The peer's module, or a skip saying how to install it."""
    module: ModuleType = pytest.importorskip(
        peer.module,
        reason=f"{peer.name} is not installed: pip install -e '.[bench]' to compare with it",
    )
    return module


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Stop any Pykka actor a test left running, then fail the test if any
    thread it started is still alive, so no thread competes for the GIL with
    the next benchmark."""
    before = set(threading.enumerate())
    yield
    if "pykka" in sys.modules:
        sys.modules["pykka"].ActorRegistry.stop_all()
    started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(_THREAD_JOIN_TIMEOUT)
    alive = [thread.name for thread in started if thread.is_alive()]
    assert not alive, f"threads still running after the test: {alive}"


# -- Pykka ------------------------------------------------------------------------


@cache
def _pykka_sink(pykka: ModuleType) -> type[Any]:
    """The Pykka twin of bench_messaging's ``Sink``, built once the module is
    known to be importable."""

    class PykkaSink(pykka.ThreadingActor):  # type: ignore[misc,name-defined]
        """A trivial handler: answers ``Ping`` with 1 and drops anything else."""

        def on_receive(self, message: Any) -> Any:
            return 1 if type(message) is Ping else None

    return PykkaSink


def _pykka_tell(pykka: ModuleType, messages: int) -> float:
    ref = _pykka_sink(pykka).start()
    try:
        msg = Msg(1)
        start = time.perf_counter()
        for _ in range(messages):
            ref.tell(msg)
        ref.ask(Ping())  # every message before it has been handled
        return messages / (time.perf_counter() - start)
    finally:
        ref.stop()


def _pykka_asks(pykka: ModuleType, count: int) -> list[float]:
    ref = _pykka_sink(pykka).start()
    try:
        msg = Ping()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            ref.ask(msg)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        ref.stop()


# -- Thespian ----------------------------------------------------------------------


@cache
def _thespian_sink(actors: ModuleType) -> type[Any]:
    """The Thespian twin of bench_messaging's ``Sink``."""

    class ThespianSink(actors.Actor):  # type: ignore[misc,name-defined]
        """A trivial handler: answers ``Ping`` with 1 and drops anything else."""

        def receiveMessage(self, message: Any, sender: Any) -> None:
            if type(message) is Ping:
                self.send(sender, 1)

    return ThespianSink


def _thespian_system(actors: ModuleType) -> Any:
    # A fresh system each time (not the process-wide singleton), and
    # logDefs=False so Thespian leaves the logging configuration alone.
    return actors.ActorSystem("simpleSystemBase", logDefs=False, transientUnique=True)


def _thespian_tell(actors: ModuleType, messages: int) -> float:
    system = _thespian_system(actors)
    try:
        address = system.createActor(_thespian_sink(actors))
        msg = Msg(1)
        start = time.perf_counter()
        for _ in range(messages):
            system.tell(address, msg)
        system.ask(address, Ping())  # every message before it has been handled
        return messages / (time.perf_counter() - start)
    finally:
        system.shutdown()


def _thespian_asks(actors: ModuleType, count: int) -> list[float]:
    system = _thespian_system(actors)
    try:
        address = system.createActor(_thespian_sink(actors))
        msg = Ping()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            system.ask(address, msg)
            samples.append(time.perf_counter() - start)
        return samples
    finally:
        system.shutdown()


# -- the benchmarks ----------------------------------------------------------------


@attrs.frozen
class Peer:
    """A peer framework: the module to import and its two workloads."""

    name: str
    module: str
    tell: Callable[[ModuleType, int], float]
    asks: Callable[[ModuleType, int], list[float]]


PEERS = [
    Peer("pykka", "pykka", _pykka_tell, _pykka_asks),
    Peer("thespian", "thespian.actors", _thespian_tell, _thespian_asks),
]


@pytest.mark.parametrize("peer", PEERS, ids=lambda peer: peer.name)
def test_peer_tell_throughput(bench: Any, quick: bool, peer: Peer) -> None:
    """Messages per second from one sender to one actor with a trivial
    handler, from the first tell until the actor has handled the last (an
    ask after the tells), against the runtime on the same workload: what a
    user gives up or gains in raw messaging by choosing the runtime."""
    module = _import(peer)
    messages = 20_000 if quick else 400_000
    times = 1 if quick else 5
    figure, spread = repeat(lambda: peer.tell(module, messages), times)
    ours, _ = repeat(lambda: trio.run(_actor_tell, messages, 1), times)
    bench.record(
        f"{peer.name} tell throughput 1->1",
        figure,
        "msg/s",
        baseline=ours,
        baseline_name="runtime",
        spread=spread,
        messages=messages,
    )


@pytest.mark.parametrize("peer", PEERS, ids=lambda peer: peer.name)
def test_peer_ask_latency(bench: Any, quick: bool, peer: Peer) -> None:
    """Sequential ask round trip p50 and p99, each ask timed on its own,
    against the runtime's ask on the same workload: the latency a
    request/response conversation between agents pays per step."""
    module = _import(peer)
    count = 2_000 if quick else 50_000
    samples = peer.asks(module, count)
    ours = trio.run(_actor_asks, count, 1)
    for q in (50, 99):
        bench.record(
            f"{peer.name} ask p{q} (sequential)",
            percentile(samples, q),
            "s",
            baseline=percentile(ours, q),
            baseline_name="runtime",
            higher_is_better=False,
            asks=count,
        )
