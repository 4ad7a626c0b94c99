"""Serving an actor's mailbox: the loops that take its messages and the
wrapper that handles each one with its correlation, trace span and timing.

The cell decides what handling a message means (``handle_item``: the handler,
the checkpoint, the reply); this module decides when messages are taken,
how many at once, and what is observed around each. It reaches the cell
through ``ServingCell`` and imports neither the cell nor the system.
"""

from __future__ import annotations

from collections.abc import Coroutine
from time import perf_counter
from typing import Any, Protocol

import trio

from ._correlation import CURRENT, CorrelationSlot, correlation_id
from ._durations import Durations
from ._host import RestartRecord
from ._mailbox import Ask, Envelope, Mailbox

__all__ = ["YIELD_EVERY", "ServingCell", "handle_traced", "serve", "serve_concurrently", "span"]

YIELD_EVERY = 64
"""An actor whose handlers never await, and a sender whose tells never wait,
yield to the scheduler at least once per this many messages, so neither can
starve the other tasks."""


class ServingCell(Protocol):
    """What the loops need of an actor's cell."""

    path: str
    mailbox: Mailbox
    durations: Durations | None
    tracer: Any
    stop_requested: bool
    waiting: bool
    in_flight: int
    slots: trio.CapacityLimiter | None

    async def handle_item(self, actor: Any, item: object) -> None: ...

    handled: int
    failed: int
    record: RestartRecord

    def told_handlers(self) -> dict[type, Any] | None:
        """The handlers a told message may go to straight from the loop,
        by message type, or None when every item goes through
        ``handle_item``. After each the loop counts it in ``handled`` (and
        calls ``recovered`` if ``record`` counts crashes in a row) or in
        ``failed``, as ``handle_item`` would."""
        ...

    def recovered(self) -> None: ...


def serve(cell: ServingCell, actor: Any) -> Coroutine[Any, Any, None]:
    """Handle ``cell``'s messages one at a time until it is asked to stop
    (a coroutine to await: the loop itself, with no frame around it).

    Waits for messages while the mailbox is empty (a checkpoint); a message
    woken for in the same round that the incarnation was cancelled stays
    queued for the next one. Yields to the scheduler at least every
    ``YIELD_EVERY`` messages. Correlation, tracing and the sampled handling
    time are applied here, around ``cell.handle_item``; without metrics
    and tracing, a told message goes straight to its handler when the cell
    allows (``told_handlers``).
    """
    if cell.durations is None and cell.tracer is None:
        return _serve(cell, actor, cell.told_handlers(), None)
    return _serve(cell, actor, None, _Observed(cell))


class _Observed:
    """Handling with metrics (sampled handling times) or tracing."""

    __slots__ = ("cell", "countdown", "weight")

    def __init__(self, cell: ServingCell) -> None:
        self.cell = cell
        # With metrics on: messages until the next timed one, and how many
        # messages that one stands for.
        self.countdown = self.weight = 1

    async def handle(self, actor: Any, item: object, trace: Any) -> None:
        cell = self.cell
        if cell.tracer is not None:
            await handle_traced(cell, actor, item, trace)
            return
        self.countdown -= 1
        if self.countdown:
            await cell.handle_item(actor, item)
            return
        durations = cell.durations
        assert durations is not None  # not traced: timed
        started = perf_counter()
        await cell.handle_item(actor, item)
        self.countdown = self.weight = durations.observe(perf_counter() - started, self.weight)


async def _serve(
    cell: ServingCell, actor: Any, told: dict[type, Any] | None, observed: _Observed | None
) -> None:
    """``serve``'s loop: ``told`` the handlers told messages go straight to
    (None: through ``handle_item``), ``observed`` the metrics or tracing."""
    mailbox = cell.mailbox
    get = mailbox.get_nowait
    handle = cell.handle_item
    record = cell.record
    slot: CorrelationSlot | None = None  # made at the first message: idle actors have none
    budget = YIELD_EVERY
    while not cell.stop_requested:
        item = get()
        if item is None:
            cell.waiting = True
            await trio.lowlevel.wait_task_rescheduled(mailbox.park_receiver())
            cell.waiting = False
            # Woken by a message in the same round that a background task
            # crashed: leave the message queued for the next incarnation.
            await trio.lowlevel.checkpoint_if_cancelled()
            budget = YIELD_EVERY
            continue
        # The message's chain (an ask's or an envelope's; 0: a new one).
        if slot is None:
            slot = CorrelationSlot()
            CURRENT.set(slot)
        kind = type(item)
        trace = None
        if kind is Envelope:
            slot.value = item.correlation  # type: ignore[attr-defined]
            trace = item.trace  # type: ignore[attr-defined]
            item = item.msg  # type: ignore[attr-defined]
        elif kind is Ask:
            slot.value = item.correlation  # type: ignore[attr-defined]
            trace = item.trace  # type: ignore[attr-defined]
        else:  # told from outside a handler
            slot.value = 0
        if observed is not None:
            await observed.handle(actor, item, trace)
        elif told is None or kind is Ask:
            await handle(actor, item)
        else:
            # Straight to its handler: one coroutine less per message.
            try:
                await told[type(item)](actor, item)
            except Exception:
                cell.failed += 1
                raise
            cell.handled += 1
            if record.consecutive_crashes:
                cell.recovered()
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()


async def serve_concurrently(cell: ServingCell, actor: Any, limit: int) -> None:
    """Handle up to ``limit`` of ``cell``'s messages at once, each in its own
    task, until it is asked to stop; returns once those running have ended.
    A handler that crashes cancels the others (their askers get
    ``ActorStopped``) and the messages still queued wait for the next
    incarnation."""
    # A CapacityLimiter, not a Semaphore: its total can change while it
    # serves (a resource's limits reloaded).
    slots = cell.slots = trio.CapacityLimiter(limit)
    mailbox = cell.mailbox

    durations = cell.durations

    async def handle_one(item: object, slot: object) -> None:
        # This message's chain, in its own task.
        carried = type(item) is Envelope or type(item) is Ask
        CURRENT.set(CorrelationSlot(item.correlation if carried else 0))  # type: ignore[attr-defined]
        trace = item.trace if carried else None  # type: ignore[attr-defined]
        if type(item) is Envelope:
            item = item.msg
        cell.in_flight += 1
        started = perf_counter()
        try:
            if cell.tracer is not None:
                await handle_traced(cell, actor, item, trace, timed=False)
            else:
                await cell.handle_item(actor, item)
        finally:
            cell.in_flight -= 1
            slots.release_on_behalf_of(slot)
            if durations is not None:
                durations.observe(perf_counter() - started)

    try:
        async with trio.open_nursery() as running:
            while True:
                slot = object()
                try:
                    slots.acquire_on_behalf_of_nowait(slot)
                except trio.WouldBlock:
                    await slots.acquire_on_behalf_of(slot)
                item = None
                while not cell.stop_requested:
                    # A handler that crashed has cancelled this nursery: a
                    # message taken now would be lost, not kept for the next
                    # incarnation.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    item = mailbox.get_nowait()
                    if item is not None:
                        break
                    cell.waiting = True
                    await mailbox.wait_nonempty()
                    cell.waiting = False
                if item is None:
                    slots.release_on_behalf_of(slot)
                    return
                running.start_soon(handle_one, item, slot)
    finally:
        cell.slots = None


def span(cell: ServingCell, msg: object, parent: Any = None) -> Any:
    """The OpenTelemetry span of handling ``msg`` (current while open),
    child of ``parent`` (the sender's context; None: the current one)."""
    name = type(msg).__qualname__
    return cell.tracer.start_as_current_span(
        f"handle {name}",
        context=parent,
        attributes={
            "runtime.actor": cell.path,
            "runtime.message": name,
            "runtime.correlation_id": correlation_id() or "",
        },
    )


async def handle_traced(
    cell: ServingCell, actor: Any, item: object, parent: Any, timed: bool = True
) -> None:
    """``handle_item`` in an OpenTelemetry span, child of the sender's."""
    started = perf_counter()
    with span(cell, item.msg if type(item) is Ask else item, parent):
        try:
            await cell.handle_item(actor, item)
        finally:
            if timed and cell.durations is not None:
                cell.durations.observe(perf_counter() - started)
