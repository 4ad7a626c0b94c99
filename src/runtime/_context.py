"""``self.ctx``: what a running incarnation of an actor sees of the system.

The context reaches its cell only through ``CellPort`` and the system only
through the cell's ``Host``: it imports neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVarTuple

import trio

from .errors import ActorStopped, UnknownMessage

if TYPE_CHECKING:
    from ._host import Host
    from ._locks import Lease
    from ._ref import ActorRef

__all__ = ["ActorContext", "CellPort", "TaskNursery"]

PosArgT = TypeVarTuple("PosArgT")


class CellPort(Protocol):
    """What a context needs of its actor's cell."""

    path: str
    host: Host
    ref: ActorRef[Any]
    incarnation: int
    task: trio.lowlevel.Task | None
    stop_requested: bool
    pending_tasks: int
    nursery_tasks_are_work: bool

    def check_type(self, msg: object) -> None: ...

    def handles(self, message_type: type) -> bool: ...

    async def deliver(self, msg: object) -> None: ...

    def request_stop(self, for_restart: bool = False) -> None: ...

    async def save(self, actor: Any) -> None: ...


class TaskNursery:
    """``ctx.nursery``: the incarnation's trio nursery, counting the tasks
    started in it.

    It has a ``trio.Nursery``'s API (``start_soon``, ``start``,
    ``cancel_scope``, ``child_tasks``, ``parent_task``) and passes every
    call on to it; a task started here counts as work in progress for
    ``ActorSystem.is_idle()`` until it returns. The runtime's own tasks
    (periodic checkpoints, the tasks behind timers) run in the same nursery
    without it. A resource's cell does not count its tasks: they are its
    connections and servers, there for its whole life.
    """

    __slots__ = ("_cell", "_nursery")

    def __init__(self, cell: CellPort, nursery: trio.Nursery) -> None:
        self._cell = cell
        self._nursery = nursery

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The nursery's cancel scope: cancelling it ends the incarnation."""
        return self._nursery.cancel_scope

    @property
    def child_tasks(self) -> frozenset[trio.lowlevel.Task]:
        """The tasks running in the nursery, the runtime's own included."""
        return self._nursery.child_tasks

    @property
    def parent_task(self) -> trio.lowlevel.Task:
        """The incarnation's task."""
        return self._nursery.parent_task

    def start_soon(
        self,
        async_fn: Callable[[*PosArgT], Awaitable[object]],
        *args: *PosArgT,
        name: object = None,
    ) -> None:
        """Start ``async_fn(*args)`` as a task of this incarnation, as
        ``trio.Nursery.start_soon``; it counts as work until it returns.

        Raises:
            RuntimeError: the incarnation has ended (the nursery is closed).
        """
        cell = self._cell
        if not cell.nursery_tasks_are_work:
            self._nursery.start_soon(async_fn, *args, name=name)
            return
        self._nursery.start_soon(
            _counted, cell, async_fn, *args, name=async_fn if name is None else name
        )
        # Counted from the call, not from the task's first step: no check of
        # is_idle() can fall in between.
        cell.pending_tasks += 1

    async def start(
        self, async_fn: Callable[..., Awaitable[object]], *args: object, name: object = None
    ) -> Any:
        """Start ``async_fn(*args, task_status=...)`` and wait until it calls
        ``task_status.started()``, as ``trio.Nursery.start``; returns the
        value it passed. It counts as work until it returns.

        Raises:
            RuntimeError: the incarnation has ended (the nursery is closed).
        """
        cell = self._cell
        if not cell.nursery_tasks_are_work:
            return await self._nursery.start(async_fn, *args, name=name)
        return await self._nursery.start(
            _counted_start, cell, async_fn, *args, name=async_fn if name is None else name
        )


async def _counted(
    cell: CellPort, async_fn: Callable[..., Awaitable[object]], *args: object
) -> None:
    try:
        await async_fn(*args)
    finally:
        cell.pending_tasks -= 1


async def _counted_start(
    cell: CellPort,
    async_fn: Callable[..., Awaitable[object]],
    *args: object,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    cell.pending_tasks += 1
    try:
        await async_fn(*args, task_status=task_status)
    finally:
        cell.pending_tasks -= 1


class ActorContext:
    """``self.ctx``: the running incarnation's view of the system.

    ``nursery`` lives exactly as long as this incarnation: tasks started in it
    are cancelled when the actor stops or crashes, and a task that raises
    crashes the actor.
    """

    # _nursery: the incarnation's trio nursery, until ``nursery`` is first
    # read; then its TaskNursery (made on use: most actors never start a task).
    __slots__ = ("_actor", "_cell", "_incarnation", "_nursery")

    def __init__(self, cell: CellPort, nursery: trio.Nursery, actor: Any) -> None:
        self._cell = cell
        self._actor = actor
        self._incarnation = cell.incarnation
        self._nursery: trio.Nursery | TaskNursery = nursery

    @property
    def nursery(self) -> TaskNursery:
        """A nursery that lives exactly as long as this incarnation, with a
        ``trio.Nursery``'s API. A task still running in it is work in
        progress: the system is not idle until it returns."""
        nursery = self._nursery
        if isinstance(nursery, TaskNursery):
            return nursery
        counting = self._nursery = TaskNursery(self._cell, nursery)
        return counting

    def _runtime_nursery(self) -> trio.Nursery:
        """The nursery itself, for the runtime's own tasks (not counted as the user's)."""
        nursery = self._nursery
        return nursery._nursery if isinstance(nursery, TaskNursery) else nursery

    @property
    def path(self) -> str:
        """This actor's path."""
        return self._cell.path

    @property
    def system(self) -> Any:
        """The ``ActorSystem`` this actor runs in."""
        return self._cell.host.system

    @property
    def self_ref(self) -> ActorRef[Any]:
        """A ref to this actor (valid across its restarts)."""
        return self._cell.ref

    def ref(self, path: str) -> ActorRef[Any]:
        """The ref of the actor at ``path``.

        Raises:
            ActorNotFound: nothing at that path.
        """
        return self._cell.host.ref(path)

    def find(self, tag: str) -> list[ActorRef[Any]]:
        """The refs of the running actors and pools tagged ``tag`` (as
        ``ActorSystem.find``), in the order they were made."""
        return self._cell.host.find(tag)

    def progress(self, *, total: int = 0, done: int = 0, retried: int = 0) -> None:
        """Count work items for the progress display and the run summary:
        ``total`` more items are expected, ``done`` more finished, ``retried``
        more tried again.

        Counts add up, across actors and across this actor's incarnations: a
        restarted actor that declares its ``total`` again in ``on_start``, or
        resumes from a checkpoint and counts what it had done, counts it
        twice. Use ``set_progress`` for counts that an incarnation declares
        afresh."""
        self._cell.host.count_progress(total, done, retried)

    def set_progress(
        self, *, total: int | None = None, done: int | None = None, retried: int | None = None
    ) -> None:
        """Set this actor's own counts of work items: ``total`` expected,
        ``done`` finished, ``retried`` tried again (None leaves one as it was).

        The counts are the actor's, kept by its path across restarts: an
        incarnation that sets them replaces what an earlier one set, so a
        restarted actor can declare them again from its state. The system's
        counts (``system.progress()``) are the sum of every actor's own counts
        and of everything added with ``progress``.

        Raises:
            ValueError: a count is negative.
        """
        for field, value in (("total", total), ("done", done), ("retried", retried)):
            if value is not None and value < 0:
                raise ValueError(f"{field} must be zero or more, got {value!r}")
        cell = self._cell
        cell.host.set_progress(cell.path, total, done, retried)

    def resource(self, name: str) -> ActorRef[Any]:
        """The ref of the resource ``name`` (declared under ``resources:``).

        Raises:
            ActorNotFound: the topology declares no resource of that name.
        """
        return self._cell.host.resource(name)

    def lock(
        self, name: str, ttl: float = 30.0, wait_timeout: float | None = None
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold the lock ``name`` for an ``async with`` block, against every
        holder using the system's lock backend (the topology's ``locks:``,
        by default the checkpoint store's): other actors, ``system.lock``,
        other processes.

        ``async with self.ctx.lock("deploy:prod", ttl=30) as lease:`` waits
        until the lock is free and takes it; ``lease.token`` is its fencing
        token, greater than every token granted for the name before. While
        the block runs the lease is renewed every ``ttl / 3``; if this process
        dies, the lock frees ``ttl`` seconds after its last renewal at most
        (on PostgreSQL, as soon as the server sees its connection end; on
        ``memory://`` the lease lasts exactly as long as the block). Leaving
        the block releases it (also when the block raises or is cancelled).
        Locks are not re-entrant: taking one already held by the same actor
        waits for itself.

        Args:
            name: the lock's name; the part before the first ``:`` is its
                ``prefix`` in the metrics.
            ttl: seconds the lease lasts without renewal.
            wait_timeout: seconds to wait for the lock; None waits for as
                long as it takes, 0 tries once.

        Raises:
            LockHeld: another holder kept it past ``wait_timeout``; the
                message names the holder (path, node, pid) and when its
                lease ends.
            LockLost: the lease could not be renewed before it expired (or
                was taken over): the block was cancelled, and this is raised
                out of it.
            StoreUnavailable: the lock backend could not be reached before
                ``wait_timeout``.
            ValueError: ``ttl`` is not positive or ``wait_timeout`` negative.
        """
        return self._cell.host.locks.lock(
            name, holder=self._cell.path, ttl=ttl, wait_timeout=wait_timeout
        )

    async def checkpoint(self) -> None:
        """Write this actor's state to the store now (if it changed).

        Waits for the write. On failure the previous checkpoint is intact and
        the error propagates: raised from a handler, it crashes the actor.

        Raises:
            StateError: checkpointing is off for this actor, or the state
                cannot be written as JSON.
            CheckpointConflict: another incarnation wrote this path meanwhile.
            ActorStopped: this incarnation has ended (a context kept past it).
        """
        cell = self._cell
        if cell.incarnation != self._incarnation or cell.task is None:
            raise ActorStopped(f"{cell.path}: incarnation {self._incarnation} has ended")
        await cell.save(self._actor)

    @property
    def stopping(self) -> bool:
        """Whether this incarnation has been asked to stop (a graceful stop
        of the system or of this actor, a restart of its group): a long
        handler can check it and wrap up before its ``shutdown_timeout``."""
        cell = self._cell
        return cell.stop_requested or cell.incarnation != self._incarnation

    def stop(self) -> None:
        """End this actor normally once the current message is handled.

        A ``transient`` or ``temporary`` child is then not restarted; a
        ``permanent`` one is. Callable from a handler, ``on_start`` or a task
        in ``nursery``; an idle actor stops at once.
        """
        self._cell.request_stop()

    def schedule(self, delay: float, msg: object) -> trio.CancelScope:
        """Send ``msg`` to this actor after ``delay`` seconds.

        Returns a cancel scope: ``.cancel()`` it to drop the timer. The timer
        dies with this incarnation.

        Raises:
            UnknownMessage: this actor has no handler for ``msg``.
        """
        cell = self._cell
        cell.check_type(msg)
        scope = trio.CancelScope()

        async def fire() -> None:
            try:
                with scope:
                    await trio.sleep(delay)
                    await cell.deliver(msg)
            finally:
                cell.pending_tasks -= 1

        self._runtime_nursery().start_soon(fire)
        # Pending from the call on, not from the task's first step.
        cell.pending_tasks += 1
        return scope

    def schedule_every(self, period: float, msg: object) -> trio.CancelScope:
        """Send ``msg`` to this actor every ``period`` seconds, the first after one period.

        Ticks keep a fixed rate; a tick that would fall behind because the
        mailbox was full is skipped. Returns a cancel scope to stop it.

        Raises:
            UnknownMessage: this actor has no handler for ``msg``.
            ValueError: ``period`` is not positive.
        """
        if period <= 0:
            raise ValueError(f"period must be positive, got {period!r}")
        cell = self._cell
        cell.check_type(msg)
        scope = trio.CancelScope()

        async def tick() -> None:
            with scope:
                deadline = trio.current_time() + period
                while True:
                    await trio.sleep_until(deadline)
                    await cell.deliver(msg)
                    deadline += period
                    now = trio.current_time()
                    if deadline <= now:
                        deadline += period * ((now - deadline) // period + 1)

        self._runtime_nursery().start_soon(tick)
        return scope

    def subscribe(self, topic: str, message_type: type) -> None:
        """Receive every event published on ``topic`` that is a ``message_type``.

        Events arrive through this actor's mailbox, so its capacity and
        overflow policy apply to them. The subscription survives restarts
        and ends when the actor stops for good.

        Raises:
            UnknownMessage: this actor has no handler for ``message_type``.
        """
        cell = self._cell
        if not cell.handles(message_type):
            raise UnknownMessage(
                f"{cell.path} cannot subscribe to {message_type.__qualname__}: no handler"
            )
        cell.host.subscribe(topic, cell, message_type)

    def unsubscribe(self, topic: str, message_type: type | None = None) -> None:
        """Stop receiving ``topic`` (only ``message_type`` events, if given)."""
        self._cell.host.unsubscribe(topic, self._cell, message_type)

    async def publish(self, topic: str, event: object) -> None:
        """Deliver ``event`` to every subscriber of ``topic`` whose type it matches.

        Waits while a subscriber's ``block`` mailbox is full (backpressure).
        A subscriber that refuses the event turns it into a dead letter; the
        publisher is never failed by a subscriber.
        """
        await self._cell.host.publish(topic, event)
