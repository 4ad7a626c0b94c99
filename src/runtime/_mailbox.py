"""The bounded, three-priority mailbox every actor owns.

A mailbox outlives the incarnations of its actor: messages queued when an
actor crashes are handled by the next incarnation, in order. Items are the
message itself for ``tell`` (no envelope is allocated) or an ``Ask`` for
``ask``; the consumer tells them apart by type.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import outcome
import trio

from ._priority import PRIORITIES, PRIORITY_INDEX
from .errors import MailboxFull

__all__ = ["Ask", "Envelope", "Mailbox", "MailboxStatistics", "unwrap"]


class Ask:
    """A message that wants a reply, and the task waiting for it.

    ``waiter`` is the asking task while it waits, None once it has been
    answered or has left (timed out or cancelled): the actor answers at most
    once, and never a task that is no longer waiting.
    """

    __slots__ = ("correlation", "msg", "priority", "trace", "waiter")

    def __init__(
        self, msg: object, waiter: Any, priority: str = "normal", correlation: int | str = 0
    ) -> None:
        self.msg = msg
        self.waiter = waiter
        self.priority = priority
        self.correlation = correlation  # the asker's chain; 0: a new one
        self.trace: Any = None  # the asker's OpenTelemetry context, when tracing

    def reply(self, value: object) -> None:
        """Wake the asker with ``value``, if it is still waiting."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter, outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        """Wake the asker with ``error`` raised, if it is still waiting."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter, outcome.Error(error))


class Envelope:
    """A told message sent from inside a handler, with that handler's
    correlation id (a message told from outside travels bare, unless
    tracing is on)."""

    __slots__ = ("correlation", "msg", "trace")

    def __init__(self, msg: object, correlation: int | str, trace: Any = None) -> None:
        self.msg = msg
        self.correlation = correlation
        self.trace = trace  # the sender's OpenTelemetry context, when tracing


def unwrap(item: object) -> object:
    """The message of a mailbox item (an ``Ask``, an ``Envelope`` or bare)."""
    return item.msg if type(item) is Ask or type(item) is Envelope else item


@attrs.frozen
class MailboxStatistics:
    """A snapshot of a mailbox."""

    depth: int
    capacity: int
    overflow: str
    by_priority: dict[str, int]
    blocked_senders: int


_NO_QUEUES: tuple[None, None, None] = (None, None, None)


class EvictionOwner(Protocol):
    """Who hears of the items a drop policy evicts."""

    def evicted(self, item: object) -> None: ...


class Mailbox:
    """A bounded queue with three strict priorities, FIFO within each.

    Nothing here takes a lock: trio runs one task at a time and no method
    awaits between reading and changing the queues, so each ``put_nowait`` /
    ``get_nowait`` is atomic. Only ``wait_not_full`` and ``wait_nonempty``
    wait. One task consumes (the actor's loop); any number may send.

    A queue per priority is made on its first use, and the parking lot of
    waiting senders when a sender first has to wait: an idle actor's mailbox
    stays small.

    Args:
        capacity: the most messages it holds, over all priorities.
        overflow: ``block``, ``reject``, ``drop_oldest`` or ``drop_newest``.
        owner: whose ``evicted(item)`` is called with each item evicted by a
            drop policy (an object, not a callback: an idle actor's mailbox
            then holds no bound method of its own).
    """

    __slots__ = (
        "_owner",
        "_queues",
        "_receiver",
        "_senders",
        "capacity",
        "overflow",
        "size",
    )

    def __init__(self, capacity: int, overflow: str, owner: EvictionOwner) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self.size = 0
        # One queue per priority, made at its first message; until the first
        # message at all, a shared placeholder (an idle actor's mailbox holds
        # no list of its own).
        self._queues: list[deque[object] | None] | tuple[None, None, None] = _NO_QUEUES
        self._owner = owner
        self._receiver: trio.lowlevel.Task | None = None  # the consumer, while it waits
        self._senders: trio.lowlevel.ParkingLot | None = None

    def put_nowait(self, item: object, priority: str) -> bool:
        """Queue ``item`` at ``priority`` without waiting.

        Returns False when the mailbox is full under ``block`` (the caller
        decides whether to wait). Under ``drop_oldest`` / ``drop_newest`` a
        full mailbox evicts one item through ``on_evict``; when the item to
        drop is the new one and it is an ``Ask``, ``MailboxFull`` is raised to
        its asker instead (the asking task is running, not waiting).

        Raises:
            MailboxFull: full under ``reject``, or a new ``Ask`` is dropped.
            KeyError: ``priority`` is not high, normal or low.
        """
        index = PRIORITY_INDEX[priority]
        if self.size >= self.capacity and not self._make_room(item, index):
            return self.overflow != "block"
        queue = self._queues[index]
        if queue is None:
            queue = self._new_queue(index)
        queue.append(item)
        self.size += 1
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver)
        return True

    def _new_queue(self, index: int) -> deque[object]:
        """The queue of priority ``index``, made at its first message."""
        queues = self._queues
        if isinstance(queues, tuple):
            queues = self._queues = [None, None, None]
        queue: deque[object] = deque()
        queues[index] = queue
        return queue

    def _make_room(self, item: object, index: int) -> bool:
        """Apply the overflow policy to a full mailbox; True if ``item`` may be queued."""
        overflow = self.overflow
        if overflow == "block":
            return False
        if overflow == "reject":
            raise MailboxFull(f"mailbox full ({self.capacity} messages)")
        victim = None
        if overflow == "drop_oldest":
            # The oldest at or below the new message's priority; if all that
            # is queued outranks it, the new message is the one to lose,
            # since it would be handled last.
            victim = next((q for q in reversed(self._queues[index:]) if q), None)
        if victim is None:
            if type(item) is Ask:
                raise MailboxFull(f"mailbox full ({self.capacity} messages); ask dropped")
            self._owner.evicted(item)
            return False
        self._owner.evicted(victim.popleft())
        self.size -= 1
        return True

    async def wait_not_full(self) -> None:
        """Wait until an item is taken (or the mailbox drained); the caller retries."""
        if self._senders is None:
            self._senders = trio.lowlevel.ParkingLot()
        await self._senders.park()

    def get_nowait(self) -> object | None:
        """Take the next item (highest priority first), or None when empty."""
        if not self.size:
            return None
        high, normal, low = self._queues
        item = (
            high.popleft() if high else normal.popleft() if normal else low.popleft()  # type: ignore[union-attr]
        )
        self.size -= 1
        if self._senders:
            self._senders.unpark()
        return item

    async def wait_nonempty(self) -> None:
        """Wait until an item is queued or ``wake()`` is called (a checkpoint)."""
        await trio.lowlevel.wait_task_rescheduled(self.park_receiver())

    def park_receiver(self) -> Callable[[Any], trio.lowlevel.Abort]:
        """Register the calling task as the waiting consumer; returns the abort
        function for ``trio.lowlevel.wait_task_rescheduled``.

        ``wait_nonempty`` without its own coroutine: an idle actor's loop
        parks on this directly, so a parked actor holds fewer objects."""
        self._receiver = trio.lowlevel.current_task()
        return self._abort_receive

    def _abort_receive(self, _: object) -> trio.lowlevel.Abort:
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        """Wake the consumer waiting in ``wait_nonempty`` (for example to stop)."""
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver)

    def drain(self) -> list[object]:
        """Remove and return every queued item, in the order they would be handled."""
        items: list[object] = []
        for queue in self._queues:
            if queue:
                items.extend(queue)
                queue.clear()
        self.size = 0
        if self._senders:
            self._senders.unpark_all()
        return items

    def statistics(self) -> MailboxStatistics:
        """Depth, capacity and waiting senders, now."""
        return MailboxStatistics(
            depth=self.size,
            capacity=self.capacity,
            overflow=self.overflow,
            by_priority={
                p: len(q) if q else 0 for p, q in zip(PRIORITIES, self._queues, strict=True)
            },
            blocked_senders=len(self._senders) if self._senders else 0,
        )
