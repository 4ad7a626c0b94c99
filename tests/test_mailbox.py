"""Bounded mailboxes: capacity, the four overflow policies, priorities, dead letters."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import runtime
from runtime.errors import MailboxFull
from tests.actorkit import Get, Hang, Record, Recorder, child, topology


def box(capacity: int, overflow: str) -> runtime.MailboxSpec:
    return runtime.MailboxSpec(capacity=capacity, overflow=overflow)


class Gate(Recorder):
    """A recorder whose first Hang blocks until the test releases it."""

    release = trio.Event()

    @runtime.handler
    async def hang(self, msg: Hang) -> None:
        await self.release.wait()


async def blocked(system: runtime.ActorSystem, path: str) -> runtime.ActorRef:
    """Park the actor in a handler so its mailbox only fills."""
    ref = system.ref(path)
    Gate.release = trio.Event()
    await ref.tell(Hang())
    await trio.testing.wait_all_tasks_blocked()
    return ref


async def test_priorities_are_strict_and_fifo_within_one() -> None:
    """high before normal before low; FIFO inside each priority."""
    seen: list[object] = []
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("g", Gate, args={"seen": seen}))) as system:
            ref = await blocked(system, "root/g")
            for item, priority in [
                ("low1", "low"),
                ("n1", "normal"),
                ("high1", "high"),
                ("low2", "low"),
                ("n2", "normal"),
                ("high2", "high"),
            ]:
                ref.tell_nowait(Record(item), priority=priority)
            Gate.release.set()
            assert await ref.ask(Get(), priority="low") == [
                "high1",
                "high2",
                "n1",
                "n2",
                "low1",
                "low2",
            ]


async def test_block_makes_tell_wait_and_tell_nowait_raise() -> None:
    """Under block a full mailbox makes tell wait (backpressure) and
    tell_nowait raise MailboxFull; nothing is lost."""
    seen: list[object] = []
    spec = topology(child("g", Gate, args={"seen": seen}, mailbox=box(2, "block")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            ref.tell_nowait(Record(1))
            ref.tell_nowait(Record(2))
            with pytest.raises(MailboxFull):
                ref.tell_nowait(Record(3))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ref.tell, Record(3))
                await trio.testing.wait_all_tasks_blocked()
                assert ref.statistics().mailbox_depth == 2  # the sender is still waiting
                Gate.release.set()
            assert await ref.ask(Get()) == [1, 2, 3]
            assert list(system.dead_letters) == []


async def test_reject_raises_at_once() -> None:
    """Under reject both tell and ask raise MailboxFull when full."""
    spec = topology(child("g", Gate, args={"seen": []}, mailbox=box(1, "reject")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            await ref.tell(Record(1))
            with pytest.raises(MailboxFull):
                await ref.tell(Record(2))
            with pytest.raises(MailboxFull):
                await ref.ask(Get())
            Gate.release.set()


async def test_drop_oldest_evicts_the_oldest_into_dead_letters() -> None:
    """drop_oldest keeps the newest messages; the evicted one is a dead letter."""
    seen: list[object] = []
    spec = topology(child("g", Gate, args={"seen": seen}, mailbox=box(2, "drop_oldest")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            for n in range(1, 5):
                await ref.tell(Record(n))
            Gate.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [3, 4]
            assert [(d.message, d.reason) for d in system.dead_letters] == [
                (Record(1), "mailbox_full"),
                (Record(2), "mailbox_full"),
            ]


async def test_drop_oldest_spares_higher_priorities() -> None:
    """drop_oldest evicts from the lowest priority at or below the new message's;
    a new message outranked by everything queued is itself dropped."""
    seen: list[object] = []
    spec = topology(child("g", Gate, args={"seen": seen}, mailbox=box(2, "drop_oldest")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            ref.tell_nowait(Record("h1"), priority="high")
            ref.tell_nowait(Record("low"), priority="low")
            ref.tell_nowait(Record("h2"), priority="high")  # evicts "low"
            ref.tell_nowait(Record("n"), priority="normal")  # outranked: dropped
            Gate.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["h1", "h2"]
            assert [d.message for d in system.dead_letters] == [Record("low"), Record("n")]


async def test_drop_newest_drops_the_incoming_message() -> None:
    """drop_newest keeps what is queued; the new message is a dead letter."""
    seen: list[object] = []
    spec = topology(child("g", Gate, args={"seen": seen}, mailbox=box(2, "drop_newest")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            for n in range(1, 5):
                ref.tell_nowait(Record(n))
            Gate.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [1, 2]
            assert [d.message for d in system.dead_letters] == [Record(3), Record(4)]


async def test_an_evicted_ask_fails_its_asker_at_once() -> None:
    """An ask dropped by a full mailbox raises MailboxFull instead of timing out."""
    spec = topology(child("g", Gate, args={"seen": []}, mailbox=box(1, "drop_oldest")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            errors: list[BaseException] = []

            async def ask() -> None:
                try:
                    await ref.ask(Get())
                except MailboxFull as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                await ref.tell(Record(1))  # evicts the queued ask
            assert len(errors) == 1
            assert ref.statistics().pending_asks == 0
            Gate.release.set()


async def test_invalid_priority_is_a_value_error() -> None:
    """A priority other than high, normal or low is refused."""
    with trio.fail_after(5):
        async with runtime.open_system(topology(child("r", Recorder, args={"seen": []}))) as system:
            ref = system.ref("root/r")
            with pytest.raises(ValueError, match="priority"):
                await ref.tell(Record(1), priority="urgent")
            with pytest.raises(ValueError, match="priority"):
                await ref.ask(Get(), priority="urgent")


async def test_statistics_report_depth_and_capacity() -> None:
    """mailbox_depth and mailbox_capacity follow what is queued."""
    spec = topology(child("g", Gate, args={"seen": []}, mailbox=box(5, "block")))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            ref.tell_nowait(Record(1))
            ref.tell_nowait(Record(2))
            stats = ref.statistics()
            assert (stats.mailbox_depth, stats.mailbox_capacity) == (2, 5)
            Gate.release.set()


@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
async def test_an_ask_dropped_on_arrival_raises_mailbox_full(overflow: str) -> None:
    """An ask that is itself the message a full mailbox drops fails at once
    with MailboxFull (for drop_oldest: when everything queued outranks it)."""
    spec = topology(child("g", Gate, args={"seen": []}, mailbox=box(1, overflow)))
    with trio.fail_after(5):
        async with runtime.open_system(spec) as system:
            ref = await blocked(system, "root/g")
            ref.tell_nowait(Record(1), priority="high")
            with pytest.raises(MailboxFull):
                await ref.ask(Get(), priority="low", timeout=0)
            assert ref.statistics().pending_asks == 0
            assert list(system.dead_letters) == []
            Gate.release.set()
