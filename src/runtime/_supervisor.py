"""Supervisors: OTP restart strategies, intensity, backoff and circuit breakers.

A supervisor incarnation is one trio task that owns a nursery. Each child
incarnation (an actor, or a nested supervisor) is a task in that nursery
inside its own cancel scope; its end (normal or a crash) is reported to the
supervisor's control loop as an event, never by an exception escaping the
nursery. The control loop applies the strategy. Structural changes (restarts,
spawn, stop) hold the supervisor's lock, so they never interleave.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import TYPE_CHECKING, Any, Union

import trio

from ._actor import _TRIAL, ActorCell, ActorStatistics
from ._logging import get_logger
from ._specs import ChildSpec, SupervisorSpec
from .errors import ActorNotFound, ActorStopped, CircuitOpen, SupervisorGaveUp

if TYPE_CHECKING:
    from ._system import ActorSystem

__all__ = ["Supervisor"]

logger = get_logger()

Child = Union[ActorCell, "Supervisor"]


class _Started:
    """The ``task_status`` of a child start: ``started()`` wakes the starter."""

    __slots__ = ("abandoned", "event", "running")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.running = False
        self.abandoned = False

    def started(self, value: None = None) -> None:
        self.event.set()


def _restarted(child: Child, reason: str) -> None:
    """Count one restart of ``child``, and why."""
    child.restarts += 1
    reasons = child.restart_reasons
    if reasons is None:
        reasons = child.restart_reasons = {}
    reasons[reason] = reasons.get(reason, 0) + 1


def _restart_wanted(restart: str, crashed: bool) -> bool:
    return restart == "permanent" or (restart == "transient" and crashed)


def _runs_inside(child: Child) -> bool:
    """Whether the calling task is the child's incarnation or one of its descendants."""
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None:
        if task is child.task:
            return True
        nursery = task.parent_nursery
        task = nursery.parent_task if nursery is not None else None
    return False


class Supervisor:
    """One supervisor of the tree, and the state that outlives its incarnations."""

    kind = "supervisor"
    restart = "permanent"
    shutdown_timeout = math.inf
    breaker = None
    consecutive_crashes = 0

    def __init__(self, spec: SupervisorSpec, path: str, system: ActorSystem) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path
        self.system = system
        self.log = logger.bind(path=path)
        self.children: list[Child] = [system._build(child, f"{path}/") for child in spec.children]
        self._by_name = {child.name: child for child in self.children}
        self.status = "starting"
        self.incarnation = 0
        self.restarts = 0
        self.restart_reasons: dict[str, int] | None = None
        self.pending_reason = "crash"  # why its pending restart happens
        self.stopping = False
        self.stopping_for_restart = False  # the parent restarts it: keep the mailboxes
        self.pending_restart = 0
        self.scope: trio.CancelScope | None = None
        self.task: trio.lowlevel.Task | None = None
        self.started_at = 0.0
        self.done = trio.Event()
        self.done.set()
        self._restart_times: deque[float] = deque()
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._starting: Child | None = None  # the child whose start holds the lock
        self._events_in: trio.MemorySendChannel[tuple[Any, ...]] | None = None
        self._random = random.Random()
        self._restart_seq = 0

    # -- lifecycle ----------------------------------------------------------

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> BaseException | None:
        """Start the children in order, supervise them until stopped or giving up.

        Returns None after a requested stop, or the ``SupervisorGaveUp`` error.
        ``task_status.started()`` is called once every child has started.
        """
        self.incarnation += 1
        self.status = "starting"
        self.stopping = False
        self.stopping_for_restart = False
        self._restart_times.clear()
        self.done = trio.Event()
        self.task = trio.lowlevel.current_task()
        self.started_at = trio.current_time()
        started = False
        send, receive = trio.open_memory_channel[tuple[Any, ...]](math.inf)
        self._events_in = send
        error: BaseException | None = None
        try:
            with trio.CancelScope() as self.scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        async with self._lock:
                            for child in self.children:
                                if self.stopping:
                                    break
                                if child.incarnation:  # this supervisor is restarting
                                    _restarted(child, "supervisor")
                                    if isinstance(child, ActorCell):
                                        child.reset_breaker()  # every child starts afresh
                                await self._start_child(child)
                        self.status = "running"
                        self.log.info("supervisor_started", incarnation=self.incarnation)
                        started = True
                        task_status.started()
                        await self._control_loop(receive)
                    except SupervisorGaveUp as exc:
                        error = exc
                    finally:
                        self.stopping = True
                        # Children that will run again (this supervisor is
                        # being restarted, or failed and may be) keep their
                        # mailboxes; retiring them is for a stop for good.
                        for_good = error is None and not self.stopping_for_restart
                        with trio.CancelScope(shield=True):
                            await self._stop_children(for_good)
                        nursery.cancel_scope.cancel()
        finally:
            # The parent sets the status it wants ("stopped", "restarting").
            self.scope = None
            self.task = None
            self._nursery = None
            self.done.set()
        if not started:
            task_status.started()
        return error

    def request_stop(self, for_restart: bool = False) -> None:
        """Ask this supervisor to stop its children in reverse order and end.

        A child still starting is asked to stop too, and cancelled once its
        ``shutdown_timeout`` has passed, so a hung ``on_start`` cannot hold
        the stop up. ``for_restart``: the children will be started again, so
        their queued messages are kept.
        """
        self.stopping = True
        self.stopping_for_restart = for_restart
        if self._events_in is not None:
            self._events_in.send_nowait(("stop",))
        self._bound_start(for_restart)

    def _bound_start(self, for_restart: bool) -> None:
        """Stop the child being started, cancelling it after its shutdown_timeout."""
        starting = self._starting
        if starting is None or self._nursery is None:
            return
        starting.request_stop(for_restart)
        self._nursery.start_soon(self._kill_start_after, starting, starting.incarnation)

    async def _kill_start_after(self, child: Child, incarnation: int) -> None:
        await trio.sleep(child.shutdown_timeout)
        if self._starting is child and child.incarnation == incarnation:
            if isinstance(child, ActorCell):
                child.killed = True
            if child.scope is not None:
                child.scope.cancel()

    async def _control_loop(self, events: trio.MemoryReceiveChannel[tuple[Any, ...]]) -> None:
        async for event in events:
            kind = event[0]
            if kind == "stop":
                return
            async with self._lock:
                if self.stopping:
                    return
                if kind == "exit":
                    await self._on_exit(event[1], event[2], event[3])
                elif kind == "restart":
                    await self._restart_group(event[1], event[2])
                elif kind == "half_open":
                    await self._half_open(event[1])

    async def _stop_children(self, for_good: bool) -> None:
        """Stop every running child in reverse start order; ``for_good``: retire them."""
        async with self._lock:
            for child in reversed(self.children):
                await self._stop_child(child, "stopped" if for_good else "restarting")
            if for_good:
                self.retire_children()

    def retire_children(self) -> None:
        """Mark every child stopped for good: queued messages become dead letters."""
        for child in self.children:
            self._retire(child, "stopped")

    # -- starting and stopping one child -------------------------------------

    async def _start_child(self, child: Child) -> None:
        """Start one incarnation of ``child`` and wait until its start is over.

        The incarnation runs in this supervisor's nursery from the first step
        (cheaper than ``nursery.start``'s hand-over). If the caller is
        cancelled meanwhile, the half-started incarnation is cancelled too.
        """
        assert self._nursery is not None
        started = _Started()
        self._starting = child
        try:
            self._nursery.start_soon(self._run_child, child, started)
            await started.event.wait()
        except BaseException:
            started.abandoned = True
            if started.running and child.scope is not None:
                child.scope.cancel()
            raise
        finally:
            self._starting = None

    def _refuse_from_starting_child(self, action: str) -> None:
        """Refuse ``action`` from inside the child this supervisor is starting:
        it would wait for the lock the start holds, which waits for the caller."""
        starting = self._starting
        if starting is not None and _runs_inside(starting):
            raise RuntimeError(
                f"{action} called while {self.path} is starting {starting.path} (from its "
                "on_start): that would wait for itself. Do it from a handler instead, e.g. "
                "send yourself a message in on_start."
            )

    async def _run_child(self, child: Child, started: _Started) -> None:
        if started.abandoned:
            return
        started.running = True
        incarnation = child.incarnation + 1
        error = await child.run_incarnation(started)
        if self._events_in is not None:
            self._events_in.send_nowait(("exit", child, incarnation, error))

    async def _stop_child(self, child: Child, status: str) -> None:
        """Stop ``child`` gracefully; cancel it once its ``shutdown_timeout`` has passed.

        ``status`` (``stopped`` or ``restarting``) is set first, so the exit
        this causes is not taken for a crash or a normal exit.
        """
        if child.status != "circuit_open":
            child.status = status
        if child.done.is_set():
            return
        child.request_stop(status == "restarting")
        with trio.move_on_after(child.shutdown_timeout):
            await child.done.wait()
        if not child.done.is_set():
            if child.scope is not None:
                if isinstance(child, ActorCell):
                    child.killed = True
                child.scope.cancel()
            await child.done.wait()
        self.log.info("child_stopped", child=child.path, incarnation=child.incarnation)

    def _retire(self, child: Child, reason: str) -> None:
        """Mark ``child`` stopped for good: queued messages become dead letters."""
        if isinstance(child, ActorCell):
            child.status = "stopped"
            child.reset_breaker()
            child.refusal = ActorStopped
            child.flush(reason, ActorStopped)
            self.system._unsubscribe_all(child)
        else:
            child.status = "stopped"
            child.retire_children()

    # -- reacting to a child's end -------------------------------------------

    async def _on_exit(self, child: Child, incarnation: int, error: BaseException | None) -> None:
        if child.incarnation != incarnation or not self._has(child):
            return
        if child.status not in ("starting", "running"):
            return  # an exit the supervisor caused itself
        crashed = error is not None
        if not _restart_wanted(child.restart, crashed):
            self.log.info("child_exited", child=child.path, crashed=crashed, restart=child.restart)
            self._retire(child, "stopped")
            if child.restart == "temporary":
                self._remove(child)
            return
        if crashed and self._count_crash(child):
            return  # its circuit opened: no restart
        self._count_restart(child, error)
        child.status = "restarting"
        group = await self._stop_group(child)
        if self.stopping:
            return  # a stop came while the group stopped: no restart now
        # A child already waiting for a restart joins this group, and its
        # earlier pending restart is void: the group restarts in start order.
        self._restart_seq += 1
        for member in group:
            member.pending_restart = self._restart_seq
            member.pending_reason = "group"
        child.pending_reason = "crash" if crashed else "normal_exit"
        delay = self._backoff(child)
        self.log.info(
            "child_restarting",
            child=child.path,
            reason="crash" if crashed else "normal_exit",
            strategy=self.spec.strategy,
            group=[c.name for c in group],
            delay=delay,
        )
        if delay > 0:
            assert self._nursery is not None
            self._nursery.start_soon(self._restart_later, delay, group, self._restart_seq)
        else:
            await self._restart_group(group, self._restart_seq)

    def _count_crash(self, child: Child) -> bool:
        """Count a consecutive crash; True when it opened the child's circuit."""
        if isinstance(child, Supervisor) and (
            trio.current_time() - child.started_at >= self.spec.within
        ):
            # A supervisor handles no messages to show it recovered: a run as
            # long as the intensity window counts as recovery.
            child.consecutive_crashes = 0
        child.consecutive_crashes += 1
        breaker = getattr(child.spec, "circuit_breaker", None)
        if breaker is not None and child.consecutive_crashes >= breaker.failures:
            self._open_circuit(child, breaker.reset_timeout)
            return True
        return False

    async def _stop_group(self, child: Child) -> list[Child]:
        """Stop the siblings the strategy restarts with ``child``, in reverse
        start order; temporary ones are retired. Returns the group to start."""
        group = self._restart_group_of(child)
        for sibling in reversed(group):
            if sibling is not child:
                await self._stop_child(sibling, "restarting")
        for sibling in group:
            if sibling is not child and sibling.restart == "temporary":
                self._retire(sibling, "stopped")
                self._remove(sibling)
        return [c for c in group if self._has(c)]

    def _count_restart(self, child: Child, error: BaseException | None) -> None:
        """Record one restart; more than ``max_restarts`` within ``within`` gives up."""
        now = trio.current_time()
        times = self._restart_times
        times.append(now)
        while times and times[0] <= now - self.spec.within:
            times.popleft()
        if len(times) > self.spec.max_restarts:
            message = (
                f"supervisor {self.path} gave up: more than {self.spec.max_restarts} "
                f"restart(s) within {self.spec.within:g}s; last: {child.path} "
                + (f"crashed with {error!r}" if error is not None else "exited")
            )
            self.log.error(
                "supervisor_gave_up", child=child.path, max_restarts=self.spec.max_restarts
            )
            gave_up = SupervisorGaveUp(message)
            gave_up.__cause__ = error
            raise gave_up

    def _restart_group_of(self, child: Child) -> list[Child]:
        strategy = self.spec.strategy
        if strategy == "one_for_one":
            return [child]
        start = 0 if strategy == "one_for_all" else self.children.index(child)
        return [
            c
            for c in self.children[start:]
            if c is child or c.status in ("starting", "running", "restarting")
        ]

    def _backoff(self, child: Child) -> float:
        backoff = self.spec.backoff
        if backoff is None:
            return 0.0
        attempt = max(child.consecutive_crashes, 1)
        return backoff.delay(attempt, self._random.random())

    async def _restart_later(self, delay: float, group: list[Child], seq: int) -> None:
        await trio.sleep(delay)
        if self._events_in is not None:
            self._events_in.send_nowait(("restart", group, seq))

    async def _restart_group(self, group: list[Child], seq: int) -> None:
        """Start the members of restart decision ``seq`` that still wait for it, in order."""
        for child in group:
            if self.stopping:
                return
            if self._has(child) and child.status == "restarting" and child.pending_restart == seq:
                _restarted(child, child.pending_reason)
                await self._start_child(child)

    # -- circuit breaker ------------------------------------------------------

    def _open_circuit(self, child: Child, reset_timeout: float) -> None:
        assert isinstance(child, ActorCell) and self._nursery is not None
        child.status = "circuit_open"
        child.breaker = "open"
        child.refusal = CircuitOpen
        child.flush("circuit_open", CircuitOpen)
        self.log.warning(
            "breaker_opened",
            child=child.path,
            failures=child.consecutive_crashes,
            reset_timeout=reset_timeout,
        )
        self._nursery.start_soon(self._half_open_later, reset_timeout, child, self.incarnation)

    async def _half_open_later(self, delay: float, child: Child, incarnation: int) -> None:
        await trio.sleep(delay)
        if self._events_in is not None and incarnation == self.incarnation:
            self._events_in.send_nowait(("half_open", child))

    async def _half_open(self, child: Child) -> None:
        if not isinstance(child, ActorCell) or child.status != "circuit_open":
            return
        if not self._has(child):
            return
        child.breaker = "half_open"
        child.refusal = _TRIAL
        _restarted(child, "half_open")
        self.log.info("breaker_half_open", child=child.path)
        await self._start_child(child)

    # -- dynamic children -----------------------------------------------------

    async def add_child(self, spec: ChildSpec | SupervisorSpec) -> Child:
        """Add and start a child after the existing ones (``system.spawn``).

        Raises:
            ValueError: a running child has that name already.
            ActorStopped: this supervisor is not running.
            RuntimeError: called from the on_start of a child being started.
        """
        self._refuse_from_starting_child("system.spawn()")
        try:
            self._lock.acquire_nowait()  # the usual case: no scheduling round
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            if self._nursery is None or self.stopping:
                raise ActorStopped(f"supervisor {self.path} is not running")
            existing = self._by_name.get(spec.name)
            if existing is not None:
                if existing.status != "stopped":
                    raise ValueError(f"{self.path} already has a child named {spec.name!r}")
                self._remove(existing)
            child = self.system._build(spec, f"{self.path}/")
            self.children.append(child)
            self._by_name[child.name] = child
            try:
                await self._start_child(child)
            except BaseException:
                # Cancelled while starting: leave nothing half-started behind.
                self._retire(child, "stopped")
                self._remove(child)
                raise
            return child
        finally:
            self._lock.release()

    async def terminate_child(self, name: str) -> None:
        """Stop the child ``name`` for good and forget it (OTP ``terminate_child``).

        The child takes no further message and is not restarted from the
        moment of the call; a start of it in progress is cancelled after its
        ``shutdown_timeout``. Waits for this supervisor's lock, then until the
        child has stopped (at most its ``shutdown_timeout``, then it is
        cancelled). Cancelling the caller does not interrupt the stop. Called
        from inside the child itself, it returns at once, and the child stops
        once its current message is handled.

        Raises:
            ActorNotFound: no such child, or this supervisor is not running.
            RuntimeError: called from the on_start of a child being started.
        """
        child = self._by_name.get(name)
        if child is None:
            raise ActorNotFound(f"{self.path} has no child named {name!r}")
        if self._nursery is None:
            raise ActorNotFound(f"supervisor {self.path} is not running")
        self._refuse_from_starting_child("system.stop()")
        # From now on its exit is not a crash and no pending restart applies.
        child.status = "stopped"
        child.request_stop()
        if self._starting is child:
            self._bound_start(for_restart=False)
        if _runs_inside(child):
            # Waiting here would wait for the caller itself to finish.
            self._nursery.start_soon(self._terminate, child)
            return
        with trio.CancelScope(shield=True):
            await self._terminate(child)

    async def _terminate(self, child: Child) -> None:
        async with self._lock:
            if not self._has(child):
                return
            await self._stop_child(child, "stopped")
            self._retire(child, "stopped")
            self._remove(child)

    def _remove(self, child: Child) -> None:
        if self._has(child):
            self.children.remove(child)
            del self._by_name[child.name]
        self.system._forget(child)

    def _has(self, child: Child) -> bool:
        return self._by_name.get(child.name) is child

    def statistics(self) -> ActorStatistics:
        """The supervisor's status and restart count, now."""
        return ActorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.restarts,
            mailbox_depth=0,
            mailbox_capacity=0,
            breaker=None,
            pending_asks=0,
        )

    def is_idle(self) -> bool:
        """True when no restart is pending below this supervisor."""
        return self.status in ("running", "stopped") and all(c.is_idle() for c in self.children)
