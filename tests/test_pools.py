"""Pools: each routing policy's distribution, crash isolation between
workers, fail-fast with every circuit open, resizing under load without
losing a message, consistent hashing across a resize, reload, statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

import runtime
from runtime import ChildSpec, PoolSpec, SupervisorSpec, Topology, open_system
from runtime._endpoint import status_document
from runtime._status import format_status
from runtime.errors import ActorFailed, CircuitOpen, TopologyError, UnknownMessage

GUARD = 600.0  # virtual seconds: a hang fails the test instead of stalling it


@attrs.frozen
class Job:
    n: int
    key: str = ""
    hold: bool = False  # wait for the gate before finishing
    crash: bool = False
    work: float = 0.0  # virtual seconds of work


class Gate:
    """Lets held jobs finish when opened."""

    event = trio.Event()


HANDLED: list[tuple[str, int]] = []  # (worker path, job number), in handling order


class Worker(runtime.Actor[None]):
    @runtime.handler
    async def job(self, msg: Job) -> str:
        if msg.crash:
            raise RuntimeError(f"job {msg.n} crashes its worker")
        if msg.hold:
            await Gate.event.wait()
        if msg.work:
            await trio.sleep(msg.work)
        HANDLED.append((self.ctx.path, msg.n))
        return self.ctx.path


@pytest.fixture(autouse=True)
def fresh() -> None:
    HANDLED.clear()
    Gate.event = trio.Event()


def pool_topology(
    size: int, routing: str = "round_robin", hash_key: str | None = None, **fields: object
) -> Topology:
    pool = ChildSpec(name="pool", actor=Worker, pool=PoolSpec(size, routing, hash_key), **fields)  # type: ignore[arg-type]
    return Topology(supervisor=SupervisorSpec(name="root", max_restarts=100, children=[pool]))


def counts() -> Counter[str]:
    return Counter(path for path, _ in HANDLED)


async def test_round_robin_spreads_evenly(autojump_clock: trio.abc.Clock) -> None:
    """400 tells to a pool of 4: exactly 100 per worker, in turn."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(4)) as system:
            pool = system.ref("root/pool")
            for n in range(400):
                await pool.tell(Job(n))
            await system.wait_until_idle()
    assert counts() == {f"root/pool/{i}": 100 for i in range(4)}
    first = [path for path, n in sorted(HANDLED, key=lambda item: item[1])[:4]]
    assert first == [f"root/pool/{i}" for i in range(4)]


async def test_least_busy_picks_the_shortest_mailbox_then_fewest_in_hand(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Worker 0 has three queued, worker 1 one in hand and none queued,
    worker 2 is idle: the next goes to 2, then (2 now has one queued) to 1,
    then to 2 again (one queued, none in hand, beats one queued and one in hand)."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(3, "least_busy")) as system:
            pool = system.ref("root/pool")
            for n in range(3):
                await system.ref("root/pool/0").tell(Job(n, hold=True))
            await system.ref("root/pool/1").tell(Job(3, hold=True))
            await trio.testing.wait_all_tasks_blocked()  # 0 and 1 hold a job each
            assert system.ref("root/pool/0").statistics().mailbox_depth == 2
            for n in (10, 11, 12):
                await pool.tell(Job(n))
            Gate.event.set()
            await system.wait_until_idle()
    by_job = {n: path for path, n in HANDLED}
    assert [by_job[10], by_job[11], by_job[12]] == ["root/pool/2", "root/pool/1", "root/pool/2"]


async def test_least_busy_spreads_a_burst_evenly(autojump_clock: trio.abc.Clock) -> None:
    """A burst of 300 tells with no yield in between: least_busy sees each
    mailbox grow and spreads them 100 each."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(3, "least_busy")) as system:
            pool = system.ref("root/pool")
            for n in range(300):
                pool.tell_nowait(Job(n))
            await system.wait_until_idle()
    assert counts() == {f"root/pool/{i}": 100 for i in range(3)}


async def test_random_is_roughly_uniform(autojump_clock: trio.abc.Clock) -> None:
    """8,000 tells over 4 workers at random: each gets 2,000 +- 300 (more
    than 11 standard deviations: this cannot flake), and every worker some."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(4, "random")) as system:
            pool = system.ref("root/pool")
            for n in range(8_000):
                await pool.tell(Job(n))
            await system.wait_until_idle()
    found = counts()
    assert len(found) == 4
    assert all(abs(count - 2_000) <= 300 for count in found.values()), found


async def test_consistent_hash_sends_one_key_to_one_worker(autojump_clock: trio.abc.Clock) -> None:
    """200 keys, each told three times: every key is handled by one worker
    only, and the keys spread over all four."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(4, "consistent_hash", "key")) as system:
            pool = system.ref("root/pool")
            for round_ in range(3):
                for key in range(200):
                    await pool.tell(Job(round_ * 1000 + key, key=f"repo-{key}"))
            await system.wait_until_idle()
            with pytest.raises(UnknownMessage, match="has no attribute 'key'"):
                await pool.tell(Other())
    workers_of: dict[int, set[str]] = {}
    for path, n in HANDLED:
        workers_of.setdefault(n % 1000, set()).add(path)
    assert all(len(paths) == 1 for paths in workers_of.values())
    assert len(counts()) == 4


@attrs.frozen
class Other:
    pass


async def test_broadcast_reaches_every_worker_and_refuses_ask(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A broadcast tell reaches each of the 3 workers once; ask is refused
    at once with a message that says what to do instead."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(3, "broadcast")) as system:
            pool = system.ref("root/pool")
            await pool.tell(Job(1))
            pool.tell_nowait(Job(2))
            await system.wait_until_idle()
            with pytest.raises(UnknownMessage, match="broadcast pool: ask is refused"):
                await pool.ask(Job(3))
            with pytest.raises(TypeError):
                await pool.ask(Job(3))
            assert system.pool_statistics()["root/pool"].routed == 6
    assert sorted(HANDLED) == sorted((f"root/pool/{i}", n) for i in range(3) for n in (1, 2))


async def test_a_crash_in_one_worker_leaves_the_others_messages_alone(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Worker 0 handles a long ask while worker 1 crashes: the ask is
    answered; worker 1's queued messages are handled by its next incarnation."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(2)) as system:
            pool = system.ref("root/pool")
            async with trio.open_nursery() as nursery:
                answers: list[str] = []

                async def long_ask() -> None:
                    answers.append(await pool.ask(Job(1, work=5.0)))

                nursery.start_soon(long_ask)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(ActorFailed):
                    await pool.ask(Job(2, crash=True))  # worker 1
                await system.ref("root/pool/1").tell(Job(3))
            await system.wait_until_idle()
            assert answers == ["root/pool/0"]
            assert system.ref("root/pool/0").statistics().incarnation == 1
            assert system.ref("root/pool/1").statistics().incarnation == 2
            assert system.pool_statistics()["root/pool"].restarts == 1
    assert ("root/pool/1", 3) in HANDLED


@pytest.mark.parametrize("routing", ["round_robin", "least_busy", "random"])
async def test_all_circuits_open_fails_fast(autojump_clock: trio.abc.Clock, routing: str) -> None:
    """Once every worker's circuit is open, ask and tell raise CircuitOpen
    at once (no virtual time passes); while one is open, routing skips it
    (each policy: their tell paths differ)."""
    topology = pool_topology(2, routing, circuit_breaker={"failures": 1, "reset_timeout": 60})
    with trio.fail_after(GUARD):
        async with open_system(topology) as system:
            pool = system.ref("root/pool")
            with pytest.raises(ActorFailed):
                await pool.ask(Job(1, crash=True))  # its worker's circuit opens
            await trio.testing.wait_all_tasks_blocked()
            closed = [
                path
                for path in ("root/pool/0", "root/pool/1")
                if system.ref(path).statistics().breaker == "closed"
            ]
            assert len(closed) == 1  # round_robin: worker 1
            assert [await pool.ask(Job(n)) for n in range(3)] == closed * 3
            for n in range(10, 16):
                await pool.tell(Job(n))
            await system.wait_until_idle()
            assert {path for path, n in HANDLED if n >= 10} == set(closed)
            with pytest.raises(ActorFailed):
                await pool.ask(Job(2, crash=True))  # worker 1 too
            await trio.testing.wait_all_tasks_blocked()
            before = trio.current_time()
            with pytest.raises(CircuitOpen, match="no worker can take a message now"):
                await pool.ask(Job(3), timeout=30)
            with pytest.raises(CircuitOpen):
                await pool.tell(Job(4))
            with pytest.raises(CircuitOpen):
                pool.tell_nowait(Job(5))
            assert trio.current_time() - before < 0.01  # no wait: 30 s was the timeout
            stats = system.pool_statistics()["root/pool"]
            assert (stats.available, stats.refused) == (0, 3)
            await trio.sleep(61)  # reset_timeout: a half-open trial each
            assert await pool.ask(Job(6)) in ("root/pool/0", "root/pool/1")


async def test_resize_up_and_down_under_load_loses_no_message(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Six senders tell and ask 1,800 jobs through small blocking mailboxes
    while the pool is resized 4 -> 8 -> 2 -> 5 -> 1 -> 3: every job is
    handled exactly once and nothing becomes a dead letter."""
    topology = pool_topology(4, mailbox={"capacity": 4})
    sent: list[int] = []
    with trio.fail_after(GUARD):
        async with open_system(topology) as system:
            pool = system.ref("root/pool")

            async def sender(first: int) -> None:
                for n in range(first, first + 300):
                    sent.append(n)
                    if n % 5:
                        await pool.tell(Job(n, work=0.001))
                    else:
                        await pool.ask(Job(n, work=0.001))

            async with trio.open_nursery() as nursery:
                for index in range(6):
                    nursery.start_soon(sender, index * 1000)
                for size in (8, 2, 5, 1, 3):
                    await trio.sleep(0.05)
                    await system.resize("root/pool", size)
                    assert system.pool_statistics()["root/pool"].size == size
            await system.wait_until_idle()
            stats = system.pool_statistics()["root/pool"]
            assert system.dead_letter_count == 0
            assert (stats.size, stats.draining) == (3, 0)
            assert stats.handled == len(sent)
    handled = Counter(n for _, n in HANDLED)
    assert len(sent) == 1800
    assert set(handled) == set(sent)
    assert set(handled.values()) == {1}
    assert len({path for path, _ in HANDLED}) == 8  # workers 0..7 all took part


async def test_shrinking_drains_a_removed_workers_queue(autojump_clock: trio.abc.Clock) -> None:
    """Worker 1 holds a job and has three queued when the pool shrinks to
    one: routes go to worker 0 at once, worker 1 handles its queue, then
    stops and leaves the tree."""
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(2)) as system:
            pool = system.ref("root/pool")
            for n in range(4):
                await system.ref("root/pool/1").tell(Job(n, hold=n == 0))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(system.resize, "root/pool", 1)
                await trio.testing.wait_all_tasks_blocked()
                assert system.pool_statistics()["root/pool"].draining == 1
                await pool.tell(Job(10))
                await pool.tell(Job(11))
                Gate.event.set()
            assert [n for path, n in HANDLED if path == "root/pool/1"] == [0, 1, 2, 3]
            assert [n for path, n in HANDLED if path == "root/pool/0"] == [10, 11]
            assert [node.path for node in system.tree().children[0].children] == ["root/pool/0"]
            with pytest.raises(runtime.errors.ActorNotFound):
                system.ref("root/pool/1")


async def test_consistent_hash_keeps_keys_across_a_resize(autojump_clock: trio.abc.Clock) -> None:
    """Growing from 4 to 5 workers moves only keys to the new worker, about
    1/5 of them; shrinking back moves exactly those keys back."""
    keys = [f"user-{k}" for k in range(1_000)]

    async def owners(system: runtime.ActorSystem) -> dict[str, str]:
        pool = system.ref("root/pool")
        return {key: await pool.ask(Job(0, key=key)) for key in keys}

    with trio.fail_after(GUARD):
        async with open_system(pool_topology(4, "consistent_hash", "key")) as system:
            four = await owners(system)
            await system.resize("root/pool", 5)
            five = await owners(system)
            await system.resize("root/pool", 4)
            back = await owners(system)
    moved = [key for key in keys if four[key] != five[key]]
    assert {five[key] for key in moved} == {"root/pool/4"}
    assert abs(len(moved) / len(keys) - 1 / 5) < 0.05, len(moved)
    assert back == four


async def test_reload_applies_a_new_size_live(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """reload() with a pool's size changed says so and resizes it in the
    background; the tree's other settings are not reported as changed."""
    text = """
    supervisor:
      name: root
      children:
        - name: pool
          actor: tests.test_pools:Worker
          pool: {{size: {size}, routing: least_busy}}
    """
    path = tmp_path / "pool.yaml"
    path.write_text(text.format(size=2))
    with trio.fail_after(GUARD):
        async with open_system(path) as system:
            path.write_text(text.format(size=5))
            changes = system.reload(path)
            assert changes == ["root/pool: pool size 2 -> 5: resizing"]
            await system.wait_until_idle()
            assert system.pool_statistics()["root/pool"].size == 5
            assert system.reload(path) == []
            path.write_text(text.format(size=1))
            assert system.reload(path) == ["root/pool: pool size 5 -> 1: resizing"]
            await system.wait_until_idle()
            assert system.pool_statistics()["root/pool"].size == 1
            assert system.topology.supervisor.children[0].pool == PoolSpec(1, "least_busy")


async def test_pool_statistics_in_the_tree_status_and_metrics(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The tree's pool node sums its workers' mailboxes and carries the
    pool's figures; /status and ``runtime status`` show it as a pool; the
    metrics have its size, availability and routed messages."""
    registry = CollectorRegistry()
    with trio.fail_after(GUARD):
        async with open_system(pool_topology(3, "least_busy"), registry=registry) as system:
            pool = system.ref("root/pool")
            await system.ref("root/pool/0").tell(Job(0, hold=True))
            await trio.testing.wait_all_tasks_blocked()
            for n in range(1, 5):
                await system.ref("root/pool/0").tell(Job(n))
            await pool.tell(Job(9))
            node = system.tree().children[0]
            assert node.kind == "supervisor"
            assert node.pool is not None
            assert (node.pool.routing, node.pool.size, node.pool.routed) == ("least_busy", 3, 1)
            assert node.stats.mailbox_depth == 5 == pool.statistics().mailbox_depth
            assert node.stats.mailbox_capacity == 300
            assert [w.path for w in node.pool.workers] == [f"root/pool/{i}" for i in range(3)]
            document = status_document(system)
            assert document["tree"]["children"][0]["pool"]["size"] == 3
            text = format_status(document)
            assert "root/pool" in text
            assert "pool (least_busy 3/3)" in text
            value = registry.get_sample_value
            assert value("runtime_pool_size", {"pool": "root/pool"}) == 3
            assert value("runtime_pool_available_workers", {"pool": "root/pool"}) == 3
            assert value("runtime_pool_routed_total", {"pool": "root/pool"}) == 1
            assert value("runtime_pool_refused_total", {"pool": "root/pool"}) == 0
            assert value("runtime_pool_mailbox_depth", {"pool": "root/pool"}) == 5
            Gate.event.set()


@pytest.mark.parametrize(
    ("pool", "line", "message"),
    [
        (
            "{size: 3, routing: consistent_hash}",
            "pool.hash_key: routing: consistent_hash needs hash_key",
            "",
        ),
        (
            "{size: 3, routing: least_bussy}",
            "pool.routing: expected one of round_robin, least_busy, random, "
            "consistent_hash, broadcast; got 'least_bussy' (did you mean 'least_busy'?)",
            "",
        ),
        ("{size: 0}", "pool.size: expected a whole number of at least 1; got 0", ""),
        ("{size: 2, rooting: random}", "pool.rooting: unknown key 'rooting'", "routing"),
        ("{size: 2, hash_key: repo}", "pool.hash_key: hash_key is read by routing", ""),
    ],
)
def test_pool_errors_name_file_line_and_field(pool: str, line: str, message: str) -> None:
    """A bad ``pool:`` is a TopologyError on the pool's line, with the field."""
    text = f"""supervisor:
  name: root
  children:
    - name: reviewers
      actor: tests.test_pools:Worker
      pool: {pool}
"""
    with pytest.raises(TopologyError) as caught:
        runtime.parse_topology(text, "pools.yaml")
    assert f"pools.yaml:6: supervisor.children[0].{line}" in str(caught.value)
    assert message in str(caught.value)


def test_tags_must_be_a_list_of_names() -> None:
    """``tags: review`` (not a list) and a tag with a slash are refused."""
    text = """supervisor:
  name: root
  children:
    - {{name: a, actor: "tests.test_pools:Worker", tags: {tags}}}
"""
    with pytest.raises(
        TopologyError, match=r"t.yaml:4: supervisor.children\[0\].tags: expected a list"
    ):
        runtime.parse_topology(text.format(tags="review"), "t.yaml")
    with pytest.raises(TopologyError, match="a tag is letters, digits"):
        runtime.parse_topology(text.format(tags="[a/b]"), "t.yaml")
    topology = runtime.parse_topology(text.format(tags="[review, fast]"), "t.yaml")
    assert topology.supervisor.children[0].tags == ("review", "fast")  # type: ignore[union-attr]
