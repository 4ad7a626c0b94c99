"""Locks in process (``memory://``) on the virtual clock, and the API around
them: ``ctx.lock`` in an actor, ``system.lock``, ``is_locked``,
``lock_statistics``, the metrics, the topology's ``locks:`` field."""

from __future__ import annotations

import os
import socket

import attrs
import pytest
import trio
from prometheus_client import CollectorRegistry

import runtime
from runtime import ChildSpec, SupervisorSpec, Topology, open_system, parse_topology
from runtime._backends import BackendUnavailable
from runtime._lock_backends import MemoryLocks
from runtime._locks import PREFIXES_KEPT, LockCounters, prefix_of
from runtime.errors import LockHeld, LockLost, StoreUnavailable, TopologyError


@attrs.frozen
class Deploy:
    env: str
    seconds: float


class Deployer(runtime.Actor[None]):
    """Holds the environment's lock for a while; answers its token and holder."""

    @runtime.handler
    async def deploy(self, msg: Deploy) -> tuple[int, str]:
        async with self.ctx.lock(f"deploy:{msg.env}", ttl=3.0) as lease:
            await trio.sleep(msg.seconds)
            return lease.token, lease.holder


def deployers(count: int = 2) -> Topology:
    children: list[ChildSpec | SupervisorSpec] = [
        ChildSpec(name=f"d{n}", actor=Deployer, concurrency=2) for n in range(count)
    ]
    return Topology(system="locks", supervisor=SupervisorSpec(name="root", children=children))


async def test_ctx_lock_serializes_actors_and_tokens_grow(autojump_clock: object) -> None:
    """Two actors deploying to one environment at once hold its lock one
    after the other; the second is woken by the release itself (it gets
    the lock at the same virtual instant), and its token is greater."""
    results: list[tuple[float, tuple[int, str]]] = []
    with trio.fail_after(60):
        async with open_system(deployers(), store="memory://") as system:

            async def deploy(path: str) -> None:
                answer = await system.ref(path).ask(Deploy("prod", 10.0))
                results.append((trio.current_time(), answer))

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(deploy, "root/d0")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(deploy, "root/d1")
            stats = system.lock_statistics()
    (first_at, (first, first_holder)), (second_at, (second, second_holder)) = results
    assert (first_holder, second_holder) == ("root/d0", "root/d1")
    assert first_at - start == pytest.approx(10.0)
    assert second_at - start == pytest.approx(20.0)  # no polling delay after the release
    assert second > first
    assert (stats.acquired, stats.contentions, stats.held) == (2, 1, ())
    assert stats.wait_seconds == pytest.approx(10.0)


async def test_try_once_names_the_holder(autojump_clock: object) -> None:
    """wait_timeout=0 tries once: LockHeld names the holder's path, node and
    pid and when its lease ends, in its message and its attributes."""
    async with open_system(deployers(1), store="memory://") as system:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(system.ref("root/d0").ask, Deploy("staging", 5.0))
            await trio.sleep(1.0)
            assert await system.is_locked("deploy:staging")
            with pytest.raises(LockHeld) as info:
                async with system.lock("deploy:staging", wait_timeout=0):
                    pytest.fail("granted while held")
        assert not await system.is_locked("deploy:staging")
        stats = system.lock_statistics()
    error = info.value
    assert (error.name, error.holder, error.pid) == ("deploy:staging", "root/d0", os.getpid())
    assert error.node == socket.gethostname()
    assert error.expires_in is not None and 0 < error.expires_in <= 3.0
    message = str(error)
    assert f"held by root/d0 (node {socket.gethostname()}, pid {os.getpid()})" in message
    assert "lease ends in" in message and "tried once" in message
    assert (stats.tried, stats.timeouts, stats.contentions) == (1, 0, 1)


async def test_waiting_past_wait_timeout_raises_lock_held(autojump_clock: object) -> None:
    """A waiter gives up after wait_timeout (virtual seconds) with LockHeld."""
    async with open_system(store="memory://") as system, system.lock("job:a", ttl=2.0):
        start = trio.current_time()
        with pytest.raises(LockHeld, match=r"held by runtime .* \(waited 5 s\)"):
            async with system.lock("job:a", wait_timeout=5.0):
                pass
        assert trio.current_time() - start == pytest.approx(5.0)
        assert system.lock_statistics().timeouts == 1


async def test_renewal_keeps_a_long_holder(autojump_clock: object) -> None:
    """A holder keeps its lock for 30 ttls: every try of another fails, and
    the lease's expiry keeps moving ahead."""
    async with open_system(store="memory://") as system:
        async with system.lock("long", ttl=1.0) as lease:
            for _ in range(30):
                await trio.sleep(1.0)
                assert lease.held and lease.expires_in > 0.5
                with pytest.raises(LockHeld):
                    async with system.lock("long", wait_timeout=0):
                        pass
        assert not lease.held and lease.expires_in == 0.0
        async with system.lock("long", wait_timeout=0) as again:
            assert again.token > lease.token


class Renewed(MemoryLocks):
    """Leases in process renewed as a remote engine's are (a task renews
    them every ttl/3): the renewal logic on the virtual clock."""

    in_process = False


async def test_an_in_process_lease_lasts_while_its_block_runs(autojump_clock: object) -> None:
    """memory://: the holder is in process, so nothing renews or expires its
    lease: held for 100 ttls, its end stays ttl ahead; no task is started."""
    async with open_system(store="memory://") as system:
        async with system.lock("long", ttl=1.0) as lease:
            tasks = len(trio.lowlevel.current_task().parent_nursery.child_tasks)  # type: ignore[union-attr]
            await trio.sleep(100.0)
            assert lease.held and lease.expires_in == pytest.approx(1.0)
            assert await system.is_locked("long")
            assert len(trio.lowlevel.current_task().parent_nursery.child_tasks) == tasks  # type: ignore[union-attr]
        assert not lease.held and lease.expires_in == 0.0
        assert system.lock_statistics().lost == 0


async def test_a_stolen_lease_cancels_the_body_with_lock_lost(autojump_clock: object) -> None:
    """When the lease is taken from under its holder (removed on the backend
    here), the next renewal finds it gone: the body is cancelled and
    LockLost is raised out of the block; the lock is counted as lost."""
    async with open_system(store="memory://") as system:
        backend = system.lock_manager.backend = Renewed()
        reached = False
        start = trio.current_time()
        with pytest.raises(LockLost, match="taken over or removed") as info:
            async with system.lock("victim:x", ttl=3.0) as lease:
                del backend.leases["victim:x"]
                await trio.sleep(100)
                reached = True
        assert not reached and not lease.held
        assert trio.current_time() - start == pytest.approx(1.0)  # the first renewal, ttl/3
        assert info.value.token == lease.token
        assert system.lock_statistics().lost == 1


class Unreachable(Renewed):
    """Leases in process whose renewals fail as an unreachable engine's do."""

    async def renew(self, *args: object) -> int | None:
        raise BackendUnavailable("down")


async def test_renewal_failing_until_expiry_loses_the_lock(autojump_clock: object) -> None:
    """Renewals that keep failing (the backend unreachable) end the hold when
    the lease expires, not later: the body is cancelled at ttl."""
    async with open_system(store="memory://") as system:
        system.lock_manager.backend = Unreachable()
        start = trio.current_time()
        with pytest.raises(LockLost, match="expired before it could be renewed"):
            async with system.lock("flaky", ttl=3.0):
                await trio.sleep(100)
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_backend_unreachable_while_acquiring(autojump_clock: object) -> None:
    """An acquisition that cannot reach the backend before wait_timeout
    raises StoreUnavailable and counts an error."""

    class Down(Renewed):
        async def try_acquire(self, *args: object) -> None:
            raise BackendUnavailable("refused")

    async with open_system(store="memory://") as system:
        system.lock_manager.backend = Down()
        with pytest.raises(StoreUnavailable, match="could not be reached"):
            async with system.lock("x", wait_timeout=1.0):
                pass
        assert system.lock_statistics().errors == 1


async def test_a_cancelled_holder_releases(autojump_clock: object) -> None:
    """A holder cancelled from outside releases the lock on its way out."""
    async with open_system(store="memory://") as system:
        with trio.move_on_after(2.0):
            async with system.lock("c"):
                await trio.sleep_forever()
        assert not await system.is_locked("c")


async def test_bad_arguments_are_refused() -> None:
    async with open_system(store="memory://") as system:
        for kwargs in ({"ttl": 0}, {"ttl": float("inf")}, {"wait_timeout": -1}):
            with pytest.raises(ValueError):
                async with system.lock("x", **kwargs):  # type: ignore[arg-type]
                    pass


def test_prefix_labels_are_bounded() -> None:
    """The prefix is the name's part before ':'; past 100 prefixes, 'other'."""
    assert prefix_of("deploy:prod:eu") == "deploy"
    assert prefix_of("plain") == "plain"
    assert prefix_of("x" * 100 + ":y") == "x" * 64
    counters = LockCounters()
    for n in range(PREFIXES_KEPT):
        counters.count(counters.label(f"p{n}:x"), "acquired")
    assert counters.label("p1:z") == "p1"
    assert counters.label("new:z") == "other"


async def test_metrics_and_status() -> None:
    """The lock metrics, labelled by prefix; held locks in /status."""
    registry = CollectorRegistry()
    topology = Topology(system="m", metrics={"listen": "127.0.0.1:0"})
    async with open_system(topology, store="memory://", registry=registry) as system:
        async with system.lock("deploy:prod", ttl=5.0):
            with pytest.raises(LockHeld):
                async with system.lock("deploy:prod", wait_timeout=0):
                    pass
            sample = registry.get_sample_value
            assert sample("runtime_locks_held", {"prefix": "deploy"}) == 1.0
            import httpx

            async with httpx.AsyncClient() as client:
                status = (await client.get(f"{system.endpoint_url}/status")).json()
        assert status["locks"]["held"][0]["name"] == "deploy:prod"
        assert status["locks"]["backend"] == "memory"
        labels = {"prefix": "deploy"}
        assert sample("runtime_lock_acquisitions_total", {**labels, "outcome": "acquired"}) == 1
        assert sample("runtime_lock_acquisitions_total", {**labels, "outcome": "tried"}) == 1
        assert sample("runtime_lock_contentions_total", labels) == 1
        assert sample("runtime_lock_wait_seconds_count", labels) == 2
        assert sample("runtime_locks_held", labels) == 0.0
        assert sample("runtime_locks_waiting", labels) == 0.0


def test_topology_locks_field(tmp_path: object) -> None:
    """locks: is read from YAML; a bad URL is reported at its line."""
    topology = parse_topology("system: s\nlocks: nats://127.0.0.1:4222\n")
    assert topology.locks == "nats://127.0.0.1:4222"
    with pytest.raises(TopologyError) as info:
        parse_topology("system: s\nlocks: redis://x\n", "t.yaml")
    assert info.value.errors[0].startswith("t.yaml:2: locks: ")
    with pytest.raises(TopologyError, match=r"t.yaml:3: locks: .*name a file"):
        parse_topology("system: s\n\nlocks: sqlite:///\n", "t.yaml")


async def test_the_default_backend_is_the_store(tmp_path: object) -> None:
    """Without locks:, locks live where checkpoints do; postgresql and nats
    locks need the asyncio loop."""
    async with open_system(store="memory://") as system:
        assert system.locks_url == "memory://"
        assert system.lock_statistics().backend == "memory"
        assert not system.uses_asyncio()
    url = f"sqlite:///{tmp_path}/c.db"
    async with open_system(store=url) as system:
        assert system.lock_statistics().backend == "sqlite"
        assert system.lock_statistics().url == url
    for url in ("nats://127.0.0.1:1", "postgresql://127.0.0.1:1/x"):
        assert runtime.ActorSystem(Topology(locks=url), "memory://").uses_asyncio()
