"""Actor cells: one actor's life, across its incarnations.

A cell is everything about an actor that outlives one incarnation: its path,
mailbox, counters, breaker and checkpoints. Each incarnation is one trio
task in its supervisor's nursery that builds a fresh ``Actor`` instance, runs
``on_start``, then handles messages until it is asked to stop or a handler
raises. ``LocalRef`` is the in-process transport of ``ActorRef``: it puts
messages straight into the cell's mailbox.

A cell reaches the system only through its ``Host``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import trio

from ._actor import Actor, dispatch_table, resolve_handler, starts_trivially, state_class
from ._breaker import BreakerState, CircuitBreaker, TrialOutcome
from ._checkpoint import Checkpointer
from ._context import ActorContext
from ._correlation import ACTOR_PATH, CURRENT, current
from ._durations import Durations
from ._host import RestartRecord
from ._logging import get_logger
from ._mailbox import Ask, Envelope, Mailbox, unwrap
from ._priority import check_priority
from ._ref import ActorRef, ActorStatistics
from ._serving import YIELD_EVERY, serve, serve_concurrently
from .errors import (
    ActorFailed,
    ActorStopped,
    AskTimeout,
    CircuitOpen,
    MailboxFull,
    StateError,
    UnknownMessage,
)

if TYPE_CHECKING:
    from ._host import Host
    from ._specs import ChildSpec

__all__ = ["ActorCell", "LocalRef"]

logger = get_logger()


# The ``done`` event of every cell with no incarnation running: set, shared,
# never waited on for long (each start makes the incarnation its own).
_DONE = trio.Event()
_DONE.set()

_TRIAL = object()  # refusal marker: half-open, the trial message not yet taken
_REFUSAL_REASONS: dict[type[Exception], str] = {
    MailboxFull: "mailbox_full",
    ActorStopped: "stopped",
    CircuitOpen: "circuit_open",
}


class ActorCell:
    """Everything about one actor that outlives its incarnations."""

    kind = "actor"
    # Whether tasks in ctx.nursery are counted as pending work (is_idle). A
    # resource's run there for its whole life (connections, servers): not counted.
    nursery_tasks_are_work = True
    __slots__ = (
        "_done",
        "actor_cls",
        "checkpointer",
        "circuit",
        "durations",
        "failed",
        "handled",
        "host",
        "in_flight",
        "incarnation",
        "killed",
        "last_crash",
        "mailbox",
        "name",
        "path",
        "pending_asks",
        "pending_tasks",
        "record",
        "ref",
        "refusal",
        "save_each",
        "scope",
        "slots",
        "spec",
        "status",
        "stop_deadline",
        "stop_requested",
        "table",
        "task",
        "tracer",
        "unyielded_tells",
        "waiting",
    )

    def __init__(self, spec: ChildSpec, path: str, host: Host) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path
        self.host = host
        self.actor_cls: type[Actor[Any]] = spec.actor
        self.table = dispatch_table(self.actor_cls)
        self.mailbox = Mailbox(spec.mailbox.capacity, spec.mailbox.overflow, self)
        self.ref: ActorRef[Any] = LocalRef(self)
        self.status = "starting"
        self.incarnation = 0
        self.record = RestartRecord()
        self.pending_asks = 0
        self.handled = 0
        self.failed = 0  # messages whose handler raised
        # Handling times, kept when the system has metrics on (sampled: see _durations).
        self.durations: Durations | None = Durations() if host.timed else None
        self.tracer: Any = host.tracer  # OpenTelemetry, with metrics.tracing
        # None while messages are accepted; else the exception type to raise,
        # or _TRIAL while a half-open circuit waits for its one trial message.
        # (One attribute the senders' fast path checks; ``circuit`` decides.)
        self.refusal: Any = None
        breaker = spec.circuit_breaker
        self.circuit: CircuitBreaker | None = (
            None
            if breaker is None
            else CircuitBreaker(
                breaker.failures,
                breaker.reset_timeout,
                name=path,
                auto_half_open=False,  # its supervisor's timer starts the trial incarnation
                reason_format="after crashing with {error!r}",
            )
        )
        self.last_crash: BaseException | None = None  # the error of the last crash
        self.stop_requested = False
        self.stop_deadline = math.inf  # when a requested stop must be over
        self.killed = False  # cancelled by its supervisor after shutdown_timeout
        self.waiting = False
        self.in_flight = 0  # handlers running under concurrency > 1
        self.slots: trio.CapacityLimiter | None = None  # their budget, while serving
        self.unyielded_tells = 0  # tells queued since a sender last yielded
        # Work outside the mailbox: ctx.schedule timers not fired yet, and
        # tasks running in ctx.nursery (not the runtime's own; an actor's only).
        self.pending_tasks = 0
        self.scope: trio.CancelScope | None = None
        self.task: trio.lowlevel.Task | None = None  # the running incarnation's task
        self._done: trio.Event | None = None  # made when someone waits for the running one
        self.checkpointer: Checkpointer | None = None  # made at the first start, unless off
        self.save_each = spec.checkpoint == "message"

    @property
    def done(self) -> trio.Event:
        """Set once the running incarnation has ended (already set when none
        runs). Made on first use: most incarnations are never waited for."""
        if self.task is None:
            return _DONE
        done = self._done
        if done is None:
            done = self._done = trio.Event()
        return done

    @property
    def starts_at_once(self) -> bool:
        """Whether a start runs no code of the actor's own and reads nothing:
        its class keeps ``Actor``'s ``on_start``, ``on_stop`` and
        ``__init__``, its state class needs no arguments, and it does not
        checkpoint. Such a start cannot fail or wait (see ``begin``)."""
        return (
            self.spec.checkpoint == "off"
            and type(self) is ActorCell
            and starts_trivially(self.actor_cls)
        )

    @property
    def restart(self) -> str:
        """``permanent``, ``transient`` or ``temporary``."""
        return self.spec.restart

    @property
    def shutdown_timeout(self) -> float:
        """Seconds a graceful stop waits before cancelling."""
        return self.spec.shutdown_timeout

    @property
    def log(self) -> Any:
        """A logger bound to this actor's path (made on use: events are rare)."""
        return logger.bind(path=self.path)

    # -- sending ----------------------------------------------------------

    def check_type(self, msg: object) -> None:
        """Refuse ``msg`` if this actor has no handler for its type.

        Raises:
            UnknownMessage: no handler for ``type(msg)`` or its bases.
        """
        if type(msg) not in self.table and not self.handles(type(msg)):
            raise UnknownMessage(
                f"{self.path} ({self.actor_cls.__qualname__}) has no handler for "
                f"{type(msg).__qualname__}"
            )

    def handles(self, message_type: type) -> bool:
        """Whether this actor has a handler for ``message_type``."""
        return resolve_handler(self.actor_cls, message_type) is not None

    @property
    def breaker(self) -> str | None:
        """The circuit's state: ``closed``, ``open``, ``half_open``; None without one."""
        circuit = self.circuit
        return None if circuit is None else circuit.state().value

    def admit(self, msg: object, priority: str) -> bool:
        """Refuse ``msg`` now, or admit it; True when it took the half-open
        trial (the sender must then ``abandon_trial()`` if it does not queue it).

        Raises:
            ValueError: not a priority.
            UnknownMessage, ActorStopped, CircuitOpen.
        """
        check_priority(priority)
        self.check_type(msg)
        refusal = self.refusal
        if refusal is None:
            return False
        if refusal is _TRIAL or refusal is CircuitOpen:
            circuit = self.circuit
            assert circuit is not None
            if refusal is _TRIAL and circuit.try_take_trial():
                self.refusal = CircuitOpen  # everyone else waits for the trial's outcome
                return True
            raise self._circuit_open()
        raise refusal(f"{self.path} has stopped")

    def _trial_item(self, msg: object, priority: str) -> tuple[object, bool]:
        """The trial message as queued, and whether it was (``admit`` checked
        the priority): a refusal by the mailbox frees the trial again."""
        item = msg if self.tracer is None and CURRENT.get() is None else self.envelope(msg)
        try:
            return item, self.mailbox.put_nowait(item, priority)
        except BaseException:
            self.abandon_trial()
            raise

    async def queue_trial(self, msg: object, priority: str) -> None:
        """Queue the message that took the half-open trial (``tell``); if it
        cannot be queued (a full mailbox, the sender cancelled while it
        waits for room), the trial is free again for the next message."""
        item, queued = self._trial_item(msg, priority)
        if queued:
            return
        try:
            await self.put(item, priority)
        except BaseException:
            self.abandon_trial()
            raise

    def queue_trial_nowait(self, msg: object, priority: str) -> None:
        """``queue_trial`` without waiting for room (``tell_nowait``).

        Raises:
            MailboxFull: no room; the trial is free again.
        """
        _, queued = self._trial_item(msg, priority)
        if not queued:
            self.abandon_trial()
            raise MailboxFull(f"{self.path}: mailbox full ({self.mailbox.capacity} messages)")

    def abandon_trial(self) -> None:
        """The trial message was never queued (refused by a full mailbox, its
        sender cancelled): the next message may be the trial."""
        circuit = self.circuit
        if circuit is not None and circuit.trial_taken:
            circuit.end_trial(TrialOutcome.ABANDONED)
            if self.refusal is CircuitOpen and circuit.state() is BreakerState.HALF_OPEN:
                self.refusal = _TRIAL

    async def put(self, item: object, priority: str) -> None:
        """Queue ``item``, waiting while the mailbox is full under ``block``.

        Cancellation while waiting leaves nothing queued. The actor may stop
        while a sender waits; the sender then gets its refusal.
        """
        mailbox = self.mailbox
        while not mailbox.put_nowait(item, priority):
            await mailbox.wait_not_full()
            refusal = self.refusal
            if refusal is not None and refusal is not _TRIAL:
                self.admit(unwrap(item), priority)

    def envelope(self, msg: object) -> Envelope:
        """``msg`` with the sender's correlation (and trace context, when tracing)."""
        trace = self.host.trace_context() if self.tracer is not None else None
        return Envelope(msg, current(), trace)

    async def deliver(self, msg: object) -> None:
        """``tell`` for the runtime's own senders (timers, topics): a refusal
        becomes a dead letter instead of an exception in the sender."""
        try:
            await self.ref.tell(msg)
        except (MailboxFull, ActorStopped, CircuitOpen) as exc:
            self.host.dead_letter(self.path, msg, _REFUSAL_REASONS[type(exc)])

    def evicted(self, item: object) -> None:
        """An item the mailbox's drop policy evicted: a dead letter (its asker fails)."""
        if type(item) is Ask:
            item.fail(MailboxFull(f"{self.path}: message dropped by a full mailbox"))
        self.host.dead_letter(self.path, unwrap(item), "mailbox_full")

    def _circuit_open(self) -> CircuitOpen:
        """The refusal of an open circuit (or a half-open one whose trial is
        taken), naming the crash that opened it, its cause."""
        circuit = self.circuit
        refusal = None if circuit is None else circuit.refusal()
        assert refusal is not None  # only asked while the refusal is CircuitOpen
        return refusal

    def flush(self, reason: str, error: type[Exception]) -> None:
        """Turn every queued message into a dead letter; askers get ``error``
        (with an open circuit: the same ``CircuitOpen`` a new asker gets)."""
        for item in self.mailbox.drain():
            if type(item) is Ask:
                if error is CircuitOpen:
                    item.fail(self._circuit_open())
                else:
                    item.fail(error(f"{self.path}: {reason.replace('_', ' ')}"))
            self.host.dead_letter(self.path, unwrap(item), reason)

    # -- one incarnation ----------------------------------------------------

    def begin(self) -> None:
        """Start an incarnation whose start runs no code of the actor's own
        (``starts_at_once``), in the caller's task: it is running from now
        on, and ``run_incarnation(begun=True)`` serves it once its task runs
        (messages sent meanwhile wait in the mailbox)."""
        self.incarnation += 1
        self.status = "running"
        logger.info("actor_started", path=self.path, incarnation=self.incarnation)

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, *, begun: bool = False
    ) -> BaseException | None:
        """Run one incarnation until it stops (returns None) or crashes (returns the error).

        ``task_status.started()`` is called once ``on_start`` has returned;
        a start that fails returns its error without it. Only cancellation
        from outside propagates. ``begun``: ``begin()`` already started it.
        """
        if not begun:
            self.incarnation += 1
            self.status = "starting"
        self.stop_requested = False
        self.stop_deadline = math.inf
        self.killed = False
        circuit = self.circuit
        if circuit is None or circuit.state() is not BreakerState.HALF_OPEN:
            self.refusal = None  # a half-open circuit keeps its trial state
        self.task = trio.lowlevel.current_task()
        ACTOR_PATH.set(self.path)  # this task is the incarnation's: who asks, for resources
        phase = "start"
        error: BaseException | None = None
        try:
            # The nursery's scope is also the incarnation's: cancelling it
            # (after shutdown_timeout) ends the handler and background tasks.
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                actor = self._build(nursery, await self._initial_state())
                if not begun:
                    await actor.on_start()
                    self.status = "running"
                    logger.info("actor_started", path=self.path, incarnation=self.incarnation)
                phase = "running"
                task_status.started()
                task_status = trio.TASK_STATUS_IGNORED  # the starter's objects can go now
                periodic = self._save_periodically(nursery, actor)
                if self.spec.concurrency == 1:
                    await serve(self, actor)  # directly: one coroutine less per idle actor
                else:
                    await self._serve_concurrently(actor, self.spec.concurrency)
                phase = "stop"
                if periodic is not None:
                    periodic.cancel()  # on_stop's half-done state is not written
                await actor.on_stop()
                if self.checkpointer is not None:
                    await self._flush(actor)
                nursery.cancel_scope.cancel()
            if self.killed:
                logger.warning("actor_killed", path=self.path, incarnation=self.incarnation)
        except Exception as exc:
            error = self.last_crash = _unwrap(exc)
            logger.exception(
                "actor_crashed",
                path=self.path,
                incarnation=self.incarnation,
                during=phase,
                exc_info=error,
            )
        finally:
            self.waiting = False
            self.scope = None
            self.task = None
            done, self._done = self._done, None
            if done is not None:
                done.set()
        return error

    def _save_periodically(
        self, nursery: trio.Nursery, actor: Actor[Any]
    ) -> trio.CancelScope | None:
        """With ``checkpoint: <period>``, start the periodic writes; returns
        their cancel scope."""
        period = self.spec.checkpoint
        if not isinstance(period, float):
            return None
        assert self.checkpointer is not None
        scope = trio.CancelScope()
        state = functools.partial(getattr, actor, "state")  # the state as it is at each write
        nursery.start_soon(self.checkpointer.save_every, period, state, scope)
        return scope

    def _build(self, nursery: trio.Nursery, state: object) -> Actor[Any]:
        cls = self.actor_cls
        actor = cls.__new__(cls)
        actor.ctx = ActorContext(self, nursery, actor)
        actor.state = state
        self._prepare(actor)
        actor.__init__(**self.spec.args)  # type: ignore[misc]
        return actor

    def _prepare(self, actor: Actor[Any]) -> None:
        """Set what a subclass's actors need before their ``__init__`` runs."""

    async def _initial_state(self) -> object:
        """``S()``, or with checkpointing on, the latest checkpoint of this path.

        Raises:
            StateError: the stored checkpoint cannot be read back (the start
                fails; it is never replaced by a fresh state).
        """
        state_type = state_class(self.actor_cls)
        if self.spec.checkpoint == "off":
            return state_type() if state_type is not None else None
        checkpointer = self.checkpointer
        if checkpointer is None:
            # A checkpointing actor has a state class (checked with its spec).
            assert state_type is not None
            checkpointer = self.checkpointer = Checkpointer(
                self.path, self.host.checkpoint_store(), self.host.checkpoints, state_type, self.log
            )
        return await checkpointer.load()

    async def save(self, actor: Actor[Any]) -> None:
        """Write the actor's state if it changed since the last write.

        Waits for the store (one write at a time per actor). Raises what the
        store raises (``CheckpointConflict``, ``StateError``, I/O errors); the
        previous checkpoint is then intact and the caller crashes the actor.
        """
        checkpointer = self.checkpointer
        if checkpointer is None:
            raise StateError(f"{self.path}: checkpointing is off for this actor")
        await checkpointer.save(actor.state)

    async def _flush(self, actor: Actor[Any]) -> None:
        """The last write of a graceful stop: shielded, within what is left of
        the stop's ``shutdown_timeout``."""
        assert self.checkpointer is not None
        deadline = self.stop_deadline
        if deadline == math.inf:
            deadline = trio.current_time() + self.shutdown_timeout
        if not await self.checkpointer.flush(actor.state, deadline):
            self.log.warning("checkpoint_flush_timed_out", timeout=self.shutdown_timeout)

    def request_stop(self, for_restart: bool = False) -> None:
        """Ask the incarnation to stop after the message it is handling.

        The mailbox is kept either way (``for_restart`` matters to supervisors).
        """
        self.stop_requested = True
        self.stop_deadline = min(self.stop_deadline, trio.current_time() + self.shutdown_timeout)
        self.mailbox.wake()

    async def _serve_concurrently(self, actor: Actor[Any], limit: int) -> None:
        """Handle up to ``limit`` messages at once until asked to stop."""
        await serve_concurrently(self, actor, limit)

    async def handle_item(self, actor: Actor[Any], item: object) -> None:
        """Handle one mailbox item (an ``Envelope`` already unwrapped by the
        serving loop)."""
        if type(item) is Ask:
            msg = item.msg
            try:
                result = await self.table[type(msg)](actor, msg)
                if self.save_each:
                    await self.save(actor)  # an acknowledged update is durable
            except BaseException as exc:
                if isinstance(exc, Exception):
                    self.failed += 1
                if item.waiter is not None:
                    item.fail(self._failure(msg, exc))
                raise
            item.reply(result)
        else:
            try:
                await self.table[type(item)](actor, item)
                if self.save_each:
                    await self.save(actor)
            except Exception:
                self.failed += 1
                raise
        self.handled += 1
        if self.record.consecutive_crashes:
            self._recovered()

    def _failure(self, msg: object, exc: BaseException) -> Exception:
        if isinstance(exc, Exception):
            error: Exception = ActorFailed(
                f"{self.path} failed handling {type(msg).__qualname__}: {exc!r}"
            )
            error.__cause__ = exc
            return error
        return ActorStopped(f"{self.path} stopped before replying")

    def reset_breaker(self) -> None:
        """Close the circuit and forget the crashes (its supervisor restarted)."""
        self.record.consecutive_crashes = 0
        if self.circuit is not None:
            self.circuit.reset()
            self.refusal = None

    def _recovered(self) -> None:
        """A message was handled: the crashes in a row are over, a half-open
        circuit's trial succeeded."""
        self.record.consecutive_crashes = 0
        circuit = self.circuit
        if circuit is None:
            return
        closed = (
            circuit.end_trial(TrialOutcome.SUCCEEDED)
            if circuit.trial_taken
            else circuit.record_success()
        )
        if closed:
            self.refusal = None
            self.log.info("breaker_closed")

    # -- what its supervisor does to it --------------------------------------

    def kill(self) -> None:
        """Cancel the running incarnation (its ``shutdown_timeout`` passed)."""
        if self.scope is not None:
            self.killed = True
            self.scope.cancel()

    def retire(self, reason: str) -> None:
        """Stopped for good: queued messages become dead letters, askers get
        ``ActorStopped``, and its topic subscriptions end."""
        self.status = "stopped"
        self.reset_breaker()
        self.refusal = ActorStopped
        self.flush(reason, ActorStopped)
        self.host.unsubscribe_all(self)

    def open_circuit(self, error: BaseException | None) -> float | None:
        """Count this crash on the circuit; returns the reset timeout when that
        opened it, None when it has no breaker or is under its limit."""
        circuit = self.circuit
        if circuit is None:
            return None
        crash = error if error is not None else ActorFailed(f"{self.path} exited")
        opened = (
            circuit.end_trial(TrialOutcome.FAILED, crash)
            if circuit.trial_taken
            else circuit.record_failure(crash)
        )
        if not opened:
            return None
        self.status = "circuit_open"
        self.refusal = CircuitOpen
        self.flush("circuit_open", CircuitOpen)
        return circuit.reset_timeout

    def half_open(self) -> bool:
        """Let the next incarnation take one trial message; False unless open."""
        circuit = self.circuit
        if self.status != "circuit_open" or circuit is None or not circuit.half_open():
            return False
        self.refusal = _TRIAL
        return True

    # -- what a pool reads and does to its workers --------------------------------

    def routable(self) -> bool:
        """Whether a pool may route a message here now: it runs, and its
        circuit is closed (or half-open with its one trial message free)."""
        return self.status == "running" and (self.refusal is None or self.refusal is _TRIAL)

    def in_hand(self) -> int:
        """Messages being handled now (0 while it waits for one)."""
        return self.in_flight or (0 if self.waiting or self.status != "running" else 1)

    def close_to_senders(self) -> None:
        """Refuse every message from now on with ``ActorStopped``, keeping
        what is queued (a pool worker that a resize removed, once drained)."""
        self.refusal = ActorStopped

    def statistics(self) -> ActorStatistics:
        """The actor's status, counters and mailbox, now."""
        return ActorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.record.restarts,
            mailbox_depth=self.mailbox.size,
            mailbox_capacity=self.mailbox.capacity,
            breaker=self.breaker,
            pending_asks=self.pending_asks,
            last_failure=None if self.last_crash is None else repr(self.last_crash),
        )

    def is_idle(self) -> bool:
        """No message queued or being handled, no one-shot timer pending and
        no task running in ``ctx.nursery``; or stopped for good; or with its
        circuit open (nothing runs until its supervisor's half-open trial).

        Not counted: ``schedule_every`` timers, the runtime's own tasks, and
        a resource's tasks.
        """
        if self.status in ("stopped", "circuit_open"):
            return True
        return (
            self.status == "running"
            and self.waiting
            and not self.in_flight
            and not self.mailbox.size
            and not self.pending_tasks
        )


def _unwrap(exc: Exception) -> Exception:
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class LocalRef(ActorRef[Any]):
    """The ref of an actor in this process: its messages go straight into
    the actor's mailbox, with no task and no copy in between."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def path(self) -> str:
        return self._cell.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return hash(self._cell)

    async def tell(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell``: straight into the mailbox, a yield every few calls."""
        await trio.lowlevel.checkpoint_if_cancelled()
        cell = self._cell
        if (type(msg) not in cell.table or cell.refusal is not None) and cell.admit(msg, priority):
            await cell.queue_trial(msg, priority)
            return
        # Bare from outside a handler; from inside, or when tracing, with the chain.
        item = msg if cell.tracer is None and CURRENT.get() is None else cell.envelope(msg)
        try:
            queued = cell.mailbox.put_nowait(item, priority)
        except KeyError:
            check_priority(priority)
            raise
        if not queued:
            await cell.put(item, priority)
        elif cell.unyielded_tells < YIELD_EVERY:
            cell.unyielded_tells += 1
        else:
            cell.unyielded_tells = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell_nowait``; the same steps as ``tell`` without a wait
        (kept apart rather than shared: each is one call per message)."""
        cell = self._cell
        if (type(msg) not in cell.table or cell.refusal is not None) and cell.admit(msg, priority):
            cell.queue_trial_nowait(msg, priority)
            return
        # Bare from outside a handler; from inside, or when tracing, with the chain.
        item = msg if cell.tracer is None and CURRENT.get() is None else cell.envelope(msg)
        try:
            queued = cell.mailbox.put_nowait(item, priority)
        except KeyError:
            check_priority(priority)
            raise
        if not queued:
            raise MailboxFull(f"{cell.path}: mailbox full ({cell.mailbox.capacity} messages)")

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        """``ActorRef.ask``: the asker parks until the handler's reply
        reschedules it, with no event or channel in between."""
        await trio.lowlevel.checkpoint_if_cancelled()
        cell = self._cell
        trial = False  # while True: this message took the half-open trial, not yet queued
        if type(msg) not in cell.table or cell.refusal is not None:
            trial = cell.admit(msg, priority)
        check_priority(priority)
        request = Ask(msg, trio.lowlevel.current_task(), priority, current())
        if cell.tracer is not None:
            request.trace = cell.host.trace_context()

        def abort(_: object) -> trio.lowlevel.Abort:
            request.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        cell.pending_asks += 1
        try:
            with trio.move_on_after(timeout):
                if not cell.mailbox.put_nowait(request, priority):
                    await cell.put(request, priority)
                trial = False  # queued: its handling is the trial
                # Nothing may yield between queueing and parking: the reply
                # reschedules this task and must find it parked here.
                return await trio.lowlevel.wait_task_rescheduled(abort)
            raise AskTimeout(
                f"{cell.path} did not reply to {type(msg).__qualname__} within {timeout}s"
            )
        finally:
            request.waiter = None
            cell.pending_asks -= 1
            if trial:
                cell.abandon_trial()

    def statistics(self) -> ActorStatistics:
        return self._cell.statistics()
