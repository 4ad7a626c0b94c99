"""Pools: identical workers behind one path, and the ref that routes to them.

A child spec with ``pool: {size: N}`` becomes a ``PoolSupervisor`` at its
path (``one_for_one``, with its parent's ``max_restarts``, ``within`` and
``backoff``) whose children are N full actors named ``0`` .. ``N-1``: each
has its own mailbox, incarnation and circuit breaker, so one worker's crash
never touches another's messages. ``PoolRef``, the ref of the pool's path,
puts each message straight into the mailbox of the worker its routing picks
(``_routing`` decides), skipping workers that are not running (starting,
restarting, stopped) or whose circuit is open; with none left it raises
``CircuitOpen`` at once.

Resizing down drains: a removed worker takes no new route at once, handles
what is queued in its mailbox (and what senders blocked on it were about to
queue), then stops. No message routed to it is lost or handled twice.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import sys
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._cell import ActorCell
from ._logging import get_logger
from ._mailbox import Mailbox
from ._ref import ActorRef, ActorStatistics
from ._routing import key_hash, next_usable, rendezvous, worker_salt
from ._specs import ChildSpec, SupervisorSpec, renamed
from ._supervisor import Supervisor
from .errors import ActorNotFound, ActorStopped, CircuitOpen, UnknownMessage

if TYPE_CHECKING:
    from ._host import Host

__all__ = ["PoolRef", "PoolStatistics", "PoolSupervisor"]

logger = get_logger()

DRAIN_POLL = 0.01
"""Seconds between two looks at a draining worker (is its mailbox empty yet?)."""

_UNREAD = sys.maxsize  # least_busy: more than any mailbox or messages in hand
_DRAWS = 1024  # random: workers drawn at once, taken one per message


@attrs.frozen
class PoolStatistics:
    """A snapshot of one pool: its routing, its workers and their sums.

    Attributes:
        path: the pool's path.
        routing: ``round_robin``, ``least_busy``, ``random``,
            ``consistent_hash`` or ``broadcast``.
        size: workers that take routes.
        available: of them, those running with their circuit closed (or
            half-open with its trial free).
        draining: workers a resize removed, still handling their queue.
        routed: messages routed to a worker (a broadcast counts each worker).
        refused: messages refused with ``CircuitOpen``: no worker available.
        handled: messages the workers handled (their sum, including
            workers a resize has removed).
        failed: messages whose handler raised (the same sum).
        restarts: the workers' restarts (the same sum).
        mailbox_depth, mailbox_capacity, pending_asks: the workers' sums.
        workers: each worker's own statistics, in index order.
    """

    path: str
    routing: str
    size: int
    available: int
    draining: int
    routed: int
    refused: int
    handled: int
    failed: int
    restarts: int
    mailbox_depth: int
    mailbox_capacity: int
    pending_asks: int
    workers: tuple[ActorStatistics, ...]


class PoolRef(ActorRef[Any]):
    """The ref of a pool's path: each ``tell`` or ``ask`` goes to one worker.

    A message goes into the picked worker's mailbox as a tell or ask to that
    worker would (the same waits, errors and timeouts), with no task or copy
    in between. ``broadcast`` tells every available worker and refuses
    ``ask``.
    """

    __slots__ = (
        "_key",
        "_pool",
        "_random",
        "_rotations",
        "_salts",
        "_turns",
        "broadcast",
        "refused",
        "routed",
        "routing",
        "workers",
    )

    def __init__(self, pool: PoolSupervisor, routing: str, hash_key: str | None) -> None:
        self._pool = pool
        self.routing = routing
        self.broadcast = routing == "broadcast"
        self._key = hash_key
        self.workers: list[ActorCell] = []  # those taking routes, in index order
        self._salts: list[int] = []
        # round_robin: the workers in turn, endlessly; random: the next ones
        # drawn (a block of ``_DRAWS``, drawn again once used up).
        self._turns: Iterator[ActorCell] | None = None
        # least_busy: each rotation of the workers in turn (ties go to the
        # first in the rotation, so ties are taken in turn).
        self._rotations: Iterator[list[tuple[ActorCell, Mailbox]]] | None = None
        self._random = random.Random()
        self.routed = 0
        self.refused = 0

    def set_workers(self, workers: list[ActorCell]) -> None:
        """Route to ``workers`` from now on (a new list: a route in progress
        keeps the one it read)."""
        self.workers = workers
        self._salts = [worker_salt(int(cell.name)) for cell in workers]
        routing = self.routing
        if routing == "round_robin":
            self._turns = itertools.cycle(workers) if workers else None
        elif routing == "random":
            self._turns = iter(()) if workers else None  # drawn at the first message
        elif routing == "least_busy":
            pairs = [(cell, cell.mailbox) for cell in workers]
            rotations = [pairs[index:] + pairs[:index] for index in range(len(pairs))]
            self._rotations = itertools.cycle(rotations) if rotations else None

    @property
    def path(self) -> str:
        return self._pool.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolRef) and other._pool is self._pool

    def __hash__(self) -> int:
        return hash(self._pool)

    # -- picking a worker ------------------------------------------------------

    def _pick(self, msg: object) -> ActorCell:
        """The worker ``msg`` goes to. Round robin's fast path reads two
        attributes of the next worker and allocates nothing.

        Raises:
            CircuitOpen: no worker can take it now.
            ActorStopped: the pool has stopped for good.
        """
        workers = self.workers
        routing = self.routing
        if routing == "round_robin":
            cycle = self._turns
            if cycle is not None:
                for _ in range(len(workers)):
                    turn = next(cycle)
                    if turn.routable():
                        self.routed += 1
                        return turn
            raise self._none_available()
        if routing == "least_busy":
            cell = self._least_busy()
            if cell is None:
                raise self._none_available()
            self.routed += 1
            return cell
        if routing == "random":
            turns = self._turns
            if turns is not None:
                cell = next(turns, None)
                if cell is None:
                    cell = self._draw()
                if cell.refusal is None and cell.status == "running":
                    self.routed += 1
                    return cell
            index = int(self._random.random() * len(workers))
            found = next_usable(len(workers), index, self._usable)
        else:
            found = rendezvous(key_hash(self._key_of(msg)), self._salts, self._usable)
        if found is None:
            raise self._none_available()
        self.routed += 1
        return workers[found]

    def _draw(self) -> ActorCell:
        """random: the next worker drawn, drawing a new block when the last
        one is used up (one call per ``_DRAWS`` messages, each worker equally
        likely at each draw)."""
        turns = self._turns = iter(self._random.choices(self.workers, k=_DRAWS))
        return next(turns)

    def _least_busy(self) -> ActorCell | None:
        """``least_busy`` of ``_routing``, read inline (a call per worker
        would cost more than the pick): the routable worker with the shortest
        mailbox, then the fewest messages in hand; ties go to the first from
        this message's turn on (so they are taken in turn). Exact for every
        pool size: each mailbox's size is read (an attribute), a worker's
        other fields only when its mailbox could still win; an idle worker
        with an empty mailbox ends the scan."""
        rotations = self._rotations
        if rotations is None:
            return None
        best = None
        best_size = best_busy = _UNREAD
        for cell, mailbox in next(rotations):
            size = mailbox.size
            if size >= best_size and (size > best_size or not best_busy):
                continue  # cannot beat the best so far: nothing else to read
            closed = cell.refusal is None and cell.status == "running"  # the common case
            if not closed and not cell.routable():
                continue
            busy = cell.in_flight or (0 if cell.waiting else 1)
            if size < best_size or busy < best_busy:
                if not size and not busy:
                    return cell
                best, best_size, best_busy = cell, size, busy
        return best

    def _usable(self, index: int) -> bool:
        return self.workers[index].routable()

    def _key_of(self, msg: object) -> object:
        try:
            return getattr(msg, self._key)  # type: ignore[arg-type]
        except AttributeError:
            raise UnknownMessage(
                f"{self.path} routes by consistent_hash on {self._key!r}: "
                f"{type(msg).__qualname__} has no attribute {self._key!r}"
            ) from None

    def _none_available(self) -> Exception:
        pool = self._pool
        if pool.status == "stopped":
            return ActorStopped(f"pool {pool.path} has stopped")
        self.refused += 1
        states = ", ".join(f"{cell.name}: {_state(cell)}" for cell in self.workers) or "none"
        return CircuitOpen(f"pool {pool.path}: no worker can take a message now ({states})")

    # -- sending ---------------------------------------------------------------

    def tell(self, msg: object, *, priority: str = "normal") -> Coroutine[Any, Any, None]:
        """``ActorRef.tell`` to the worker the routing picks (``broadcast``:
        to every available worker, in index order): the worker's own
        ``tell``, awaited by the caller with no frame of the pool's between.

        Raises:
            CircuitOpen: no worker can take it (raised when awaited).
            UnknownMessage, MailboxFull, ActorStopped, ValueError: as
                ``ActorRef.tell`` of the worker.
        """
        turns = self._turns
        if turns is not None:  # round_robin's and random's fast path: one C call picks
            cell = next(turns, None)
            if cell is None:
                cell = self._draw()
            if cell.refusal is None and cell.status == "running":
                self.routed += 1
                return cell.ref.tell(msg, priority=priority)
        elif self._rotations is not None:
            found = self._least_busy()
            if found is not None:
                self.routed += 1
                return found.ref.tell(msg, priority=priority)
        if self.broadcast:
            return self._tell_all(msg, priority)
        try:
            cell = self._pick(msg)
        except Exception as exc:
            return _raise(exc)
        return cell.ref.tell(msg, priority=priority)

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell_nowait`` to the worker the routing picks
        (``broadcast``: to every available worker; if some refuse, the
        others still have it and the first refusal is raised)."""
        if not self.broadcast:
            self._pick(msg).ref.tell_nowait(msg, priority=priority)
            return
        refusal: Exception | None = None
        for cell in self._broadcast_targets():
            try:
                cell.ref.tell_nowait(msg, priority=priority)
            except Exception as exc:
                refusal = refusal or exc
        if refusal is not None:
            raise refusal

    async def _tell_all(self, msg: object, priority: str) -> None:
        for cell in self._broadcast_targets():
            await cell.ref.tell(msg, priority=priority)

    def _broadcast_targets(self) -> list[ActorCell]:
        targets = [cell for cell in self.workers if cell.routable()]
        if not targets:
            raise self._none_available()
        self.routed += len(targets)
        return targets

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        """``ActorRef.ask`` of the worker the routing picks.

        Raises:
            CircuitOpen: no worker can take it (at once, never after waiting).
            UnknownMessage: a ``broadcast`` pool refuses ask (there is no one
                reply); also as ``ActorRef.ask``.
            AskTimeout, ActorFailed, ActorStopped, MailboxFull, ValueError:
                as ``ActorRef.ask``.
        """
        if self.broadcast:
            raise UnknownMessage(
                f"{self.path} is a broadcast pool: ask is refused (every worker would "
                "reply); tell it, or ask one worker, e.g. "
                f"system.ref({self.path + '/0'!r})"
            )
        return await self._pick(msg).ref.ask(msg, timeout=timeout, priority=priority)

    def statistics(self) -> ActorStatistics:
        """The pool's status and its workers' summed mailboxes and asks."""
        return self._pool.statistics()


async def _raise(error: Exception) -> None:
    """A refusal raised where the caller awaits, as an ``async def tell`` raises."""
    await trio.lowlevel.checkpoint_if_cancelled()
    raise error


def _state(cell: ActorCell) -> str:
    breaker = cell.breaker
    return f"circuit {breaker}" if breaker not in (None, "closed") else cell.status


class PoolSupervisor(Supervisor):
    """The supervisor of a pool's workers (``one_for_one``), and its resizing."""

    def __init__(
        self, spec: ChildSpec, path: str, host: Host, parent: SupervisorSpec | None
    ) -> None:
        pool = spec.pool
        assert pool is not None
        self.worker_spec = attrs.evolve(spec, pool=None, tags=())
        policy = parent if parent is not None else SupervisorSpec(name=spec.name)
        supervisor = SupervisorSpec(
            name=spec.name,
            strategy="one_for_one",
            max_restarts=policy.max_restarts,
            within=policy.within,
            backoff=policy.backoff,
            children=[renamed(self.worker_spec, str(index)) for index in range(pool.size)],
        )
        super().__init__(supervisor, path, host)
        self.child_spec = spec
        self.ref = PoolRef(self, pool.routing, pool.hash_key)
        self.ref.set_workers([_cell(child) for child in self.children])
        self.draining: list[ActorCell] = []
        self._resizing = trio.Lock()
        # What the workers a resize removed had handled, failed and restarted.
        self._retired = (0, 0, 0)

    @property
    def tags(self) -> tuple[str, ...]:
        return self.child_spec.tags

    @property
    def size(self) -> int:
        """Workers taking routes (a stopped worker still counts until a resize)."""
        return len(self.ref.workers)

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, *, begun: bool = False
    ) -> BaseException | None:
        """As ``Supervisor.run_incarnation``; workers a resize was draining
        when this supervisor stopped are not started again."""
        for cell in self.draining:
            cell.retire("stopped")
            self._remove(cell)
        self.draining = []
        return await super().run_incarnation(task_status, begun=begun)

    # -- resizing ----------------------------------------------------------------

    async def resize(self, size: int) -> None:
        """Grow or shrink the pool to ``size`` workers; returns once done.

        Growing starts the new workers (routes reach each once it runs).
        Shrinking removes the highest-numbered workers from routing at once,
        lets each handle what is queued in its mailbox, then stops it: no
        message routed to it is lost. Resizes run one at a time.

        Raises:
            ValueError: ``size`` is less than 1.
            ActorStopped: the pool is not running.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"a pool's size is a whole number of at least 1; got {size!r}")
        async with self._resizing:
            workers = [cell for cell in self.ref.workers if cell.status != "stopped"]
            if len(workers) != len(self.ref.workers):
                self.ref.set_workers(workers)
            if size > len(workers):
                await self._grow(size - len(workers))
            elif size < len(workers):
                await self._shrink(workers[:size], workers[size:])
            self.log.info("pool_resized", size=size)

    def request_resize(self, size: int) -> None:
        """Start ``resize(size)`` in the background (``reload``); a failure is logged."""
        if self._nursery is None or self.stopping:
            raise ActorStopped(f"pool {self.path} is not running")
        self._nursery.start_soon(self._resize_logged, size)

    async def _resize_logged(self, size: int) -> None:
        try:
            await self.resize(size)
        except Exception as exc:
            self.log.warning("pool_resize_failed", size=size, error=repr(exc))

    async def _grow(self, count: int) -> None:
        taken = {child.name for child in self.children if child.status != "stopped"}
        index = 0
        for _ in range(count):
            while str(index) in taken:
                index += 1
            taken.add(str(index))
            child = _cell(await self.add_child(renamed(self.worker_spec, str(index))))
            workers = sorted([*self.ref.workers, child], key=lambda cell: int(cell.name))
            self.ref.set_workers(workers)

    async def _shrink(self, keep: list[ActorCell], removed: list[ActorCell]) -> None:
        self.ref.set_workers(keep)  # no new route reaches the removed from now on
        self.draining.extend(removed)
        async with trio.open_nursery() as nursery:
            for cell in removed:
                nursery.start_soon(self._retire_when_drained, cell)

    async def _retire_when_drained(self, cell: ActorCell) -> None:
        """Wait until ``cell`` has handled its queue, then stop it for good."""
        while not self.stopping:
            if _drained(cell):
                # A sender woken by room in the mailbox, not yet run, queues
                # in the next scheduling rounds: look again after them.
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
                if _drained(cell):
                    break
            else:
                await trio.sleep(DRAIN_POLL)
        else:
            return  # the pool stops: its stop (or restart) handles the worker
        cell.close_to_senders()  # in the same step as the last look
        with contextlib.suppress(ActorNotFound):  # stopped meanwhile (system.stop)
            await self.terminate_child(cell.name)
        if cell in self.draining:
            self.draining.remove(cell)
        handled, failed, restarts = self._retired
        self._retired = (
            handled + cell.handled,
            failed + cell.failed,
            restarts + cell.record.restarts,
        )

    # -- observation ---------------------------------------------------------------

    def pool_statistics(self) -> PoolStatistics:
        """The pool's routing, its workers' statistics and their sums, now."""
        ref = self.ref
        workers = tuple(cell.statistics() for cell in ref.workers)
        draining = self.draining
        every = [*ref.workers, *draining]
        handled, failed, restarts = self._retired
        return PoolStatistics(
            path=self.path,
            routing=ref.routing,
            size=len(ref.workers),
            available=sum(1 for cell in ref.workers if cell.routable()),
            draining=len(draining),
            routed=ref.routed,
            refused=ref.refused,
            handled=handled + sum(cell.handled for cell in every),
            failed=failed + sum(cell.failed for cell in every),
            restarts=restarts + sum(cell.record.restarts for cell in every),
            mailbox_depth=sum(cell.mailbox.size for cell in every),
            mailbox_capacity=sum(stats.mailbox_capacity for stats in workers),
            pending_asks=sum(cell.pending_asks for cell in every),
            workers=workers,
        )

    def statistics(self) -> ActorStatistics:
        """The pool supervisor's status and restarts, with its workers'
        mailboxes and pending asks summed."""
        every = [*self.ref.workers, *self.draining]
        return ActorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.record.restarts,
            mailbox_depth=sum(cell.mailbox.size for cell in every),
            mailbox_capacity=sum(cell.mailbox.capacity for cell in self.ref.workers),
            breaker=None,
            pending_asks=sum(cell.pending_asks for cell in every),
        )


def _cell(child: object) -> ActorCell:
    assert isinstance(child, ActorCell)  # a pool's children are actors
    return child


def _drained(cell: ActorCell) -> bool:
    """Whether ``cell`` has nothing queued, nothing in hand, and no sender
    waiting for room in its mailbox."""
    return (
        not cell.mailbox.size
        and not cell.in_flight
        and (cell.waiting or cell.status != "running")
        and not cell.mailbox.statistics().blocked_senders
    )
