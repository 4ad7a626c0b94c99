"""Supervisors: OTP restart strategies, intensity, backoff and circuit breakers.

A supervisor incarnation is one trio task that owns a nursery. Each child
incarnation (an actor, or a nested supervisor) is a task in that nursery
inside its own cancel scope; its end (normal or a crash) is reported to the
supervisor's control loop as an event, never by an exception escaping the
nursery. The control loop applies the strategy. Structural changes (restarts,
spawn, stop) hold the supervisor's lock, so they never interleave.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import TYPE_CHECKING

import attrs
import trio

from ._host import Child, RestartRecord
from ._logging import get_logger
from ._outage import is_outage
from ._ref import ActorStatistics
from ._specs import BackoffSpec
from .errors import ActorNotFound, ActorStopped, StartFailed, SupervisorGaveUp

if TYPE_CHECKING:
    from ._host import Host
    from ._specs import ChildSpec, SupervisorSpec

__all__ = ["Supervisor", "add_restart"]

logger = get_logger()

OUTAGE_BACKOFF = BackoffSpec(initial=0.5, max=30.0)
"""The restart delay after an outage when the supervisor has no ``backoff``."""

OUTAGE_START_DEADLINE = 60.0
"""Seconds a first start failed by an outage is retried before the start fails."""


def add_restart(
    times: tuple[float, ...], now: float, max_restarts: int, within: float
) -> tuple[bool, tuple[float, ...]]:
    """Record a restart at ``now`` in the intensity window (OTP's ``add_restart``).

    Returns whether the restart is allowed, and the restart times still inside
    the window ``(now - within, now]``: more than ``max_restarts`` of them means
    the supervisor gives up. ``times`` are in order (each call appends the
    latest), so the ones that left the window are found by bisection and the
    rest is copied in one slice.
    """
    kept = (*times[bisect.bisect_right(times, now - within) :], now)
    return len(kept) <= max_restarts, kept


# -- the events of a supervisor's control loop -------------------------------


@attrs.frozen
class ChildExited:
    """An incarnation of ``child`` ended: ``error`` None after a stop, else its crash."""

    child: Child
    incarnation: int
    error: BaseException | None


@attrs.frozen
class RestartDue:
    """A delayed restart of ``group`` (restart decision ``seq``) is due."""

    group: tuple[Child, ...]
    seq: int


@attrs.frozen
class HalfOpenDue:
    """``child``'s circuit has been open for its ``reset_timeout``."""

    child: Child


@attrs.frozen
class StopRequested:
    """The supervisor is asked to stop."""


Event = ChildExited | RestartDue | HalfOpenDue | StopRequested


class _Started:
    """The ``task_status`` of a child start: ``started()`` wakes the starter.

    A one-shot event without an ``Event``: it reschedules the one waiting
    task itself (a start is the hot path of spawning many actors)."""

    __slots__ = ("abandoned", "done", "failed", "running", "waiter")

    def __init__(self) -> None:
        self.done = False
        self.waiter: trio.lowlevel.Task | None = None  # the starter, while it waits
        self.running = False
        self.abandoned = False
        self.failed: BaseException | None = None  # the error of a start that failed

    def started(self, value: None = None) -> None:
        """The start is over (it ran, failed or was cut short): wake the starter."""
        if self.done:
            return
        self.done = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    async def wait(self) -> None:
        """Wait until ``started()``; a checkpoint. Cancellation leaves no waiter."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


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

    def __init__(self, spec: SupervisorSpec, path: str, host: Host) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path
        self.host = host
        self.log = logger.bind(path=path)
        self.children: list[Child] = [host.build(child, f"{path}/") for child in spec.children]
        self._by_name = {child.name: child for child in self.children}
        self.status = "starting"
        self.incarnation = 0
        self.record = RestartRecord()
        self.stopping = False
        self.stopping_for_restart = False  # the parent restarts it: keep the mailboxes
        self.scope: trio.CancelScope | None = None
        self.task: trio.lowlevel.Task | None = None
        self.started_at = 0.0
        self.done = trio.Event()
        self.done.set()
        self._restart_times: tuple[float, ...] = ()
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._starting: Child | None = None  # the child whose start holds the lock
        self._start_backoff: trio.CancelScope | None = None  # a failed first start's wait
        self.strict_start = True
        # Whether a crash caused by an outage is spared the restart intensity.
        # Not for the resources' supervisor: a resource is the dependency, and
        # its own breaker and intensity are what bound its crash loops.
        self.forgives_outages = True
        self._events_in: trio.MemorySendChannel[Event] | None = None
        self._random = random.Random()
        self._restart_seq = 0

    # -- lifecycle ----------------------------------------------------------

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, *, begun: bool = False
    ) -> BaseException | None:
        """Start the children in order, supervise them until stopped or giving up.

        Returns None after a requested stop, or the ``SupervisorGaveUp`` or
        ``StartFailed`` error. ``task_status.started()`` is called once every
        child has started; a start that fails returns its error without it.

        A child whose first start fails is restarted under the restart policy
        (intensity, backoff, breaker) until it runs, unless the supervisor
        tolerates failed starts (``strict_start`` false: the resources'
        supervisor, whose resources may come up later): then the start goes
        on with the next child and the failed one is restarted in the
        background.
        """
        self.incarnation += 1
        self.status = "starting"
        self.stopping = False
        self.stopping_for_restart = False
        self._restart_times = ()
        self.done = trio.Event()
        self.task = trio.lowlevel.current_task()
        self.started_at = trio.current_time()
        # Bounded by the children: each posts at most one event per incarnation.
        send, receive = trio.open_memory_channel[Event](math.inf)  # runtime: ignore[RT202]
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
                                    child.record.count("supervisor")
                                    child.reset_breaker()  # every child starts afresh
                                await self._start_until_up(child)
                        self.status = "running"
                        self.log.info("supervisor_started", incarnation=self.incarnation)
                        task_status.started()
                        await self._control_loop(receive)
                    except (SupervisorGaveUp, StartFailed) as exc:
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
        if self._start_backoff is not None:
            self._start_backoff.cancel()
        if self._events_in is not None:
            self._events_in.send_nowait(StopRequested())
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
            child.kill()

    async def _control_loop(self, events: trio.MemoryReceiveChannel[Event]) -> None:
        async for event in events:
            if isinstance(event, StopRequested):
                return
            async with self._lock:
                if self.stopping:
                    return
                match event:
                    case ChildExited(child, incarnation, error):
                        await self._on_exit(child, incarnation, error)
                    case RestartDue(group, seq):
                        await self._restart_group(group, seq)
                    case HalfOpenDue(child):
                        await self._half_open(child)

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
            child.retire("stopped")

    # -- starting and stopping one child -------------------------------------

    async def _start_until_up(self, child: Child) -> None:
        """Start ``child``; a start that fails goes through the restart policy,
        as a crash does, until the child runs. Starts failed by an outage
        (an unreachable store, a failing resource) are retried with backoff
        without counting toward the intensity, for ``OUTAGE_START_DEADLINE``
        seconds from the first of them; then the start fails.

        A child whose circuit opens meanwhile is left open (it refuses
        messages with ``CircuitOpen`` until its half-open trial), and the
        start goes on with the next child.

        Raises:
            SupervisorGaveUp: the failed starts exceeded the restart intensity.
            StartFailed: the child is ``temporary`` (it is never restarted), or
                an outage outlasted ``OUTAGE_START_DEADLINE``.
        """
        outage_since: float | None = None
        while True:
            error = await self._start_child(child)
            if error is None or not self.strict_start or self.stopping:
                return
            if not _restart_wanted(child.restart, crashed=True):
                raise StartFailed(f"{child.path} failed to start: {error!r}") from error
            if self._count_crash(child, error):
                return  # its circuit opened: it fails fast until a trial starts it
            outage = self.forgives_outages and is_outage(error)
            if outage:
                now = trio.current_time()
                outage_since = now if outage_since is None else outage_since
                if now - outage_since >= OUTAGE_START_DEADLINE:
                    raise StartFailed(
                        f"{child.path} could not start for {now - outage_since:g}s "
                        f"of outage: {error!r}"
                    ) from error
            else:
                self._count_restart(child, error)
            delay = self._backoff(child, outage)
            reason = "outage" if outage else "crash"
            self.log.info("child_restarting", child=child.path, reason=reason, delay=delay)
            with trio.CancelScope() as self._start_backoff:
                await trio.sleep(delay)
            self._start_backoff = None
            if self.stopping:
                return
            child.record.count(reason)

    async def _start_child(self, child: Child) -> BaseException | None:
        """Start one incarnation of ``child`` and wait until its start is over.

        Returns None once it runs (or its start was interrupted by a stop),
        or the error its start failed with (its exit then also reaches the
        control loop, which ignores it if a new incarnation was started).

        The incarnation runs in this supervisor's nursery from the first step
        (cheaper than ``nursery.start``'s hand-over). If the caller is
        cancelled meanwhile, the half-started incarnation is cancelled too.
        """
        assert self._nursery is not None
        started = _Started()
        self._starting = child
        try:
            self._nursery.start_soon(self._run_child, child, started)
            await started.wait()
        except BaseException:
            started.abandoned = True
            if started.running:
                child.kill()
            raise
        finally:
            self._starting = None
        return started.failed

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
        if not started.done:  # the start failed, or a stop cut it short
            started.failed = error
            started.started()
        if self._events_in is not None:
            self._events_in.send_nowait(ChildExited(child, incarnation, error))

    async def _run_begun(self, child: Child, incarnation: int) -> None:
        """Serve incarnation ``incarnation`` of ``child``, begun by ``begin()``,
        unless it was stopped or replaced before this task ran."""
        if (
            not self._has(child)
            or child.incarnation != incarnation
            or child.status != "running"
            or child.task is not None
        ):
            return
        error = await child.run_incarnation(begun=True)
        if self._events_in is not None:
            self._events_in.send_nowait(ChildExited(child, incarnation, error))

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
            child.kill()
            await child.done.wait()
        self.log.info("child_stopped", child=child.path, incarnation=child.incarnation)

    # -- as a child of its own supervisor ------------------------------------

    def kill(self) -> None:
        """Cancel the running incarnation and with it every child's."""
        if self.scope is not None:
            self.scope.cancel()

    def retire(self, reason: str) -> None:
        """Stopped for good, with every child below it."""
        self.status = "stopped"
        self.retire_children()

    def reset_breaker(self) -> None:
        """Forget its crashes (a supervisor has no circuit of its own)."""
        self.record.consecutive_crashes = 0

    def open_circuit(self, error: BaseException | None) -> float | None:
        """A supervisor has no breaker: nothing opens."""
        return None

    def half_open(self) -> bool:
        """A supervisor has no breaker."""
        return False

    @property
    def starts_at_once(self) -> bool:
        """A supervisor's start starts its children: it is waited for."""
        return False

    def begin(self) -> None:
        """Never called: a supervisor does not start at once."""
        raise AssertionError("a supervisor's start is waited for")

    # -- reacting to a child's end -------------------------------------------

    async def _on_exit(self, child: Child, incarnation: int, error: BaseException | None) -> None:
        if child.incarnation != incarnation or not self._has(child):
            return
        if child.status not in ("starting", "running"):
            return  # an exit the supervisor caused itself
        crashed = error is not None
        if not _restart_wanted(child.restart, crashed):
            self.log.info("child_exited", child=child.path, crashed=crashed, restart=child.restart)
            child.retire("stopped")
            if child.restart == "temporary":
                self._remove(child)
            return
        if crashed and self._count_crash(child, error):
            return  # its circuit opened: no restart
        outage = self.forgives_outages and is_outage(error)
        if not outage:
            self._count_restart(child, error)  # an outage is not the child's bug
        child.status = "restarting"
        group = await self._stop_group(child)
        if self.stopping:
            return  # a stop came while the group stopped: no restart now
        # A child already waiting for a restart joins this group, and its
        # earlier pending restart is void: the group restarts in start order.
        self._restart_seq += 1
        for member in group:
            member.record.pending_seq = self._restart_seq
            member.record.pending_reason = "group"
        reason = ("outage" if outage else "crash") if crashed else "normal_exit"
        child.record.pending_reason = reason
        delay = self._backoff(child, outage)
        self.log.info(
            "child_restarting",
            child=child.path,
            reason=reason,
            strategy=self.spec.strategy,
            group=[c.name for c in group],
            delay=delay,
        )
        if delay > 0:
            assert self._nursery is not None
            self._nursery.start_soon(self._restart_later, delay, group, self._restart_seq)
        else:
            await self._restart_group(group, self._restart_seq)

    def _count_crash(self, child: Child, error: BaseException | None) -> bool:
        """Count a consecutive crash; True when it opened the child's circuit."""
        if isinstance(child, Supervisor) and (
            trio.current_time() - child.started_at >= self.spec.within
        ):
            # A supervisor handles no messages to show it recovered: a run as
            # long as the intensity window counts as recovery.
            child.record.consecutive_crashes = 0
        child.record.consecutive_crashes += 1
        reset_timeout = child.open_circuit(error)
        if reset_timeout is None:
            return False
        assert self._nursery is not None
        self.log.warning(
            "breaker_opened",
            child=child.path,
            failures=child.record.consecutive_crashes,
            reset_timeout=reset_timeout,
        )
        self._nursery.start_soon(self._half_open_later, reset_timeout, child, self.incarnation)
        return True

    async def _stop_group(self, child: Child) -> list[Child]:
        """Stop the siblings the strategy restarts with ``child``, in reverse
        start order; temporary ones are retired. Returns the group to start."""
        group = self._restart_group_of(child)
        for sibling in reversed(group):
            if sibling is not child:
                await self._stop_child(sibling, "restarting")
        for sibling in group:
            if sibling is not child and sibling.restart == "temporary":
                sibling.retire("stopped")
                self._remove(sibling)
        return [c for c in group if self._has(c)]

    def _count_restart(self, child: Child, error: BaseException | None) -> None:
        """Record one restart; more than ``max_restarts`` within ``within`` gives up."""
        allowed, self._restart_times = add_restart(
            self._restart_times, trio.current_time(), self.spec.max_restarts, self.spec.within
        )
        if not allowed:
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

    def _backoff(self, child: Child, outage: bool = False) -> float:
        """The delay before restarting ``child``: the spec's backoff; after an
        outage at least ``OUTAGE_BACKOFF`` (restarting at once would only
        meet the same outage)."""
        backoff = self.spec.backoff
        if backoff is None:
            if not outage:
                return 0.0
            backoff = OUTAGE_BACKOFF
        attempt = max(child.record.consecutive_crashes, 1)
        return backoff.delay(attempt, self._random.random())

    async def _restart_later(self, delay: float, group: list[Child], seq: int) -> None:
        await trio.sleep(delay)
        if self._events_in is not None:
            self._events_in.send_nowait(RestartDue(tuple(group), seq))

    async def _restart_group(self, group: list[Child] | tuple[Child, ...], seq: int) -> None:
        """Start the members of restart decision ``seq`` that still wait for it, in order."""
        for child in group:
            if self.stopping:
                return
            record = child.record
            if self._has(child) and child.status == "restarting" and record.pending_seq == seq:
                record.count(record.pending_reason)
                await self._start_child(child)

    # -- circuit breaker ------------------------------------------------------

    async def _half_open_later(self, delay: float, child: Child, incarnation: int) -> None:
        await trio.sleep(delay)
        if self._events_in is not None and incarnation == self.incarnation:
            self._events_in.send_nowait(HalfOpenDue(child))

    async def _half_open(self, child: Child) -> None:
        if not self._has(child) or not child.half_open():
            return
        child.record.count("half_open")
        self.log.info("breaker_half_open", child=child.path)
        await self._start_child(child)

    # -- dynamic children -----------------------------------------------------

    async def add_child(self, spec: ChildSpec | SupervisorSpec) -> Child:
        """Add and start a child after the existing ones (``system.spawn``).

        Raises:
            ValueError: a running child has that name already.
            StartFailed: its start failed (``on_start`` raised, its checkpoint
                could not be read); it is not added.
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
            child = self.host.build(spec, f"{self.path}/")
            self.children.append(child)
            self._by_name[child.name] = child
            if child.starts_at_once:
                # Nothing of its start can fail or wait: it runs from now on,
                # and its task is not waited for (a scheduling round less).
                child.begin()
                self._nursery.start_soon(self._run_begun, child, child.incarnation)
                await trio.lowlevel.checkpoint_if_cancelled()
                return child
            try:
                error = await self._start_child(child)
            except BaseException:
                # Cancelled while starting: leave nothing half-started behind.
                child.retire("stopped")
                self._remove(child)
                raise
            if error is not None:
                # As OTP's start_child: the child is not added, nothing is restarted.
                child.retire("stopped")
                self._remove(child)
                raise StartFailed(f"{child.path} failed to start: {error!r}") from error
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

    async def restart_child(self, name: str) -> None:
        """Restart the child ``name`` now, as an operator asks (``system.restart``).

        Its running incarnation is stopped gracefully (its
        ``shutdown_timeout``, then cancelled), its circuit is closed and its
        crashes in a row forgotten, and a new incarnation is started; its
        queued messages are kept for it. The restart is counted (reason
        ``manual``) but not against the restart intensity. Waits for this
        supervisor's lock, then until the new incarnation has started (a
        start that fails is then handled as a crash, under the restart
        policy). Called from inside the child itself, it returns at once
        and the restart follows.

        Raises:
            ActorNotFound: no such child, or this supervisor is not running.
            ActorStopped: the child was stopped for good.
            RuntimeError: called from the on_start of a child being started.
        """
        child = self._by_name.get(name)
        if child is None:
            raise ActorNotFound(f"{self.path} has no child named {name!r}")
        if self._nursery is None or self.stopping:
            raise ActorNotFound(f"supervisor {self.path} is not running")
        if child.status == "stopped":
            raise ActorStopped(f"{child.path} was stopped for good")
        self._refuse_from_starting_child("system.restart()")
        if _runs_inside(child):
            self._nursery.start_soon(self._restart_now, child)
            return
        await self._restart_now(child)

    async def _restart_now(self, child: Child) -> None:
        async with self._lock:
            if not self._has(child) or child.status == "stopped" or self.stopping:
                return
            await self._stop_child(child, "restarting")
            child.reset_breaker()
            child.record.count("manual")
            self.log.info("child_restarting", child=child.path, reason="manual", delay=0.0)
            await self._start_child(child)

    async def _terminate(self, child: Child) -> None:
        async with self._lock:
            if not self._has(child):
                return
            await self._stop_child(child, "stopped")
            child.retire("stopped")
            self._remove(child)

    def _remove(self, child: Child) -> None:
        if self._has(child):
            self.children.remove(child)
            del self._by_name[child.name]
        self.host.forget(child)

    def _has(self, child: Child) -> bool:
        return self._by_name.get(child.name) is child

    def statistics(self) -> ActorStatistics:
        """The supervisor's status and restart count, now."""
        return ActorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.record.restarts,
            mailbox_depth=0,
            mailbox_capacity=0,
            breaker=None,
            pending_asks=0,
        )

    def is_idle(self) -> bool:
        """True when this supervisor runs (or stopped), no start or restart
        is pending below it, and every child is idle."""
        return self.status in ("running", "stopped") and all(c.is_idle() for c in self.children)
