"""Actors: the base class, ``@handler`` dispatch, and the message loop.

An actor's identity is its cell (``ActorCell``): the path, mailbox, counters
and breaker state that outlive incarnations. Each incarnation is one trio task
in the supervisor's nursery that builds a fresh ``Actor`` instance, runs
``on_start``, then handles messages until it is asked to stop or a handler
raises.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, Union

import attrs
import trio

from ._checkpoint import CheckpointStore, decode_state, encode_state
from ._correlation import CURRENT, CorrelationSlot, correlation_id, current
from ._logging import get_logger
from ._mailbox import PRIORITIES, Ask, Envelope, Mailbox, unwrap
from ._metrics import Durations
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
    from ._specs import ChildSpec
    from ._system import ActorSystem

__all__ = ["Actor", "ActorCell", "ActorContext", "ActorRef", "ActorStatistics", "handler"]

S = TypeVar("S")
R = TypeVar("R")
M = TypeVar("M")
Handler = Callable[[Any, Any], Awaitable[Any]]

logger = get_logger()

# An actor whose handlers never await, and a sender whose tells never wait,
# yield to the scheduler at least once per this many messages, so neither can
# starve the other tasks.
_YIELD_EVERY = 64


def handler(fn: Callable[[Any, M], Awaitable[R]]) -> Callable[[Any, M], Awaitable[R]]:
    """Mark ``async def h(self, msg: M) -> R`` as the handler of messages of type ``M``.

    The type comes from the annotation of the message parameter; a union
    (``A | B``) registers the handler for each member.
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@runtime.handler needs an async def, got {fn!r}")
    fn.__runtime_handler__ = True  # type: ignore[attr-defined]
    return fn


def _message_types(cls: type, fn: Handler) -> tuple[type, ...]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__} must take (self, msg); "
            f"it takes {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__}: cannot resolve its annotations "
            f"({exc}); define message classes at module level"
        ) from None
    annotation = hints.get(params[1].name)
    if annotation is None:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__}: annotate the message parameter "
            "with its type, e.g. `msg: Add`"
        )
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (Union, UnionType)
        else (annotation,)
    )
    for member in members:
        if not isinstance(member, type):
            raise TypeError(f"handler {cls.__qualname__}.{fn.__name__}: {member!r} is not a class")
    return members


class Actor(Generic[S]):
    """Base class of actors. ``S`` is the state class (an attrs class).

    The runtime builds each incarnation: it sets ``self.ctx`` and
    ``self.state`` (``S()``) first, then calls ``__init__`` with the child
    spec's ``args`` as keyword arguments. Handlers run one message at a time
    unless the child spec sets ``concurrency > 1``.
    """

    state: S
    ctx: ActorContext
    _dispatch: ClassVar[dict[type, Handler]]
    _own: ClassVar[dict[type, Handler]]
    _state: ClassVar[type | None]
    _signature: ClassVar[inspect.Signature]

    def __init__(self) -> None:
        pass

    async def on_start(self) -> None:
        """Called when an incarnation starts, before its first message."""

    async def on_stop(self) -> None:
        """Called on a graceful stop, after the last message; not after a crash."""

    @classmethod
    def _handler_table(cls) -> dict[type, Handler]:
        """Handlers by exact message type, built once per class.

        A subclass's handler for a type replaces its base's; a subclass that
        redefines a handler's method without ``@handler`` removes it.

        Raises:
            TypeError: a malformed handler, or two handlers for one type in
                one class.
        """
        if "_own" not in cls.__dict__:
            by_name: dict[str, tuple[Handler, tuple[type, ...]]] = {}
            for klass in reversed(cls.__mro__):
                mine: dict[type, str] = {}
                for name, fn in vars(klass).items():
                    if not getattr(fn, "__runtime_handler__", False):
                        by_name.pop(name, None)
                        continue
                    types = _message_types(klass, fn)
                    for message_type in types:
                        if message_type in mine:
                            raise TypeError(
                                f"{klass.__qualname__} has two handlers for "
                                f"{message_type.__qualname__}: {mine[message_type]} and {name}"
                            )
                        mine[message_type] = name
                    by_name.pop(name, None)  # re-insert: a later class wins
                    by_name[name] = (fn, types)
            table: dict[type, Handler] = {}
            for fn, types in by_name.values():
                for message_type in types:
                    table[message_type] = fn
            cls._own = table
            cls._dispatch = dict(table)
        return cls._own

    @classmethod
    def _resolve(cls, message_type: type) -> Handler | None:
        """The handler for ``message_type``: the exact type first, then its MRO."""
        table = cls._handler_table()
        for klass in message_type.__mro__:
            fn = table.get(klass)
            if fn is not None:
                cls._dispatch[message_type] = fn
                return fn
        return None

    @classmethod
    def _init_signature(cls) -> inspect.Signature:
        """The signature ``args`` must fit (cached per class)."""
        if "_signature" not in cls.__dict__:
            cls._signature = inspect.signature(cls)
        return cls._signature

    @classmethod
    def _state_class(cls) -> type | None:
        """``S`` of ``Actor[S]`` (cached per class), or None."""
        if "_state" not in cls.__dict__:
            cls._state = cls._find_state_class()
        return cls._state

    @classmethod
    def _find_state_class(cls) -> type | None:
        for klass in cls.__mro__:
            for base in getattr(klass, "__orig_bases__", ()):
                if typing.get_origin(base) is Actor:
                    (arg,) = typing.get_args(base)
                    return arg if isinstance(arg, type) and arg is not type(None) else None
        return None


@attrs.frozen
class ActorStatistics:
    """A snapshot of one node of the tree (an actor or a supervisor).

    Attributes:
        path: the node's path.
        status: ``starting``, ``running``, ``restarting``, ``stopped`` or
            ``circuit_open``.
        incarnation: 1 at the first start, +1 per restart.
        restarts: how many times it was restarted.
        mailbox_depth: messages queued (0 for supervisors).
        mailbox_capacity: the mailbox's capacity (0 for supervisors).
        breaker: ``closed``, ``open`` or ``half_open``; None without a breaker.
        pending_asks: askers waiting for a reply.
    """

    path: str
    status: str
    incarnation: int
    restarts: int
    mailbox_depth: int
    mailbox_capacity: int
    breaker: str | None
    pending_asks: int


_TRIAL = object()  # refusal marker: half-open, the trial message not yet taken
_REFUSAL_REASONS: dict[type[Exception], str] = {
    MailboxFull: "mailbox_full",
    ActorStopped: "stopped",
    CircuitOpen: "circuit_open",
}


class ActorCell:
    """Everything about one actor that outlives its incarnations."""

    kind = "actor"
    __slots__ = (
        "actor_cls",
        "breaker",
        "consecutive_crashes",
        "done",
        "durations",
        "failed",
        "handled",
        "in_flight",
        "incarnation",
        "killed",
        "last_crash",
        "mailbox",
        "name",
        "one_shot_timers",
        "path",
        "pending_asks",
        "pending_reason",
        "pending_restart",
        "ref",
        "refusal",
        "restart",
        "restart_reasons",
        "restarts",
        "save_each",
        "save_lock",
        "saved",
        "scope",
        "shutdown_timeout",
        "slots",
        "spec",
        "status",
        "stop_deadline",
        "stop_requested",
        "store",
        "system",
        "table",
        "task",
        "tracer",
        "unyielded_tells",
        "version",
        "waiting",
    )

    def __init__(self, spec: ChildSpec, path: str, system: ActorSystem) -> None:
        self.spec = spec
        self.name = spec.name
        self.restart = spec.restart
        self.shutdown_timeout = spec.shutdown_timeout
        self.path = path
        self.system = system
        self.actor_cls: type[Actor[Any]] = spec.actor
        self.actor_cls._handler_table()
        self.table = self.actor_cls._dispatch
        self.mailbox = Mailbox(spec.mailbox.capacity, spec.mailbox.overflow, self._evicted)
        self.ref: ActorRef[Any] = ActorRef(self)
        self.status = "starting"
        self.incarnation = 0
        self.restarts = 0
        self.restart_reasons: dict[str, int] | None = None  # made at the first restart
        self.pending_reason = "crash"  # why its pending restart happens
        self.pending_asks = 0
        self.handled = 0
        self.failed = 0  # messages whose handler raised
        # Handling times, kept when the system has metrics on (sampled: see _metrics).
        self.durations: Durations | None = Durations() if system.metrics else None
        self.tracer: Any = system.tracer  # OpenTelemetry, with metrics.tracing
        # None while messages are accepted; else the exception type to raise,
        # or _TRIAL while a half-open circuit waits for its one trial message.
        self.refusal: Any = None
        self.breaker: str | None = "closed" if spec.circuit_breaker else None
        self.consecutive_crashes = 0
        self.last_crash: BaseException | None = None  # the error of the last crash
        self.pending_restart = 0  # which restart decision of its supervisor it waits for
        self.stop_requested = False
        self.stop_deadline = math.inf  # when a requested stop must be over
        self.killed = False  # cancelled by its supervisor after shutdown_timeout
        self.waiting = False
        self.in_flight = 0  # handlers running under concurrency > 1
        self.slots: trio.CapacityLimiter | None = None  # their budget, while serving
        self.unyielded_tells = 0  # tells queued since a sender last yielded
        self.one_shot_timers = 0
        self.scope: trio.CancelScope | None = None
        self.task: trio.lowlevel.Task | None = None  # the running incarnation's task
        self.done = trio.Event()
        self.done.set()
        # Checkpointing: the store (None when off), the version read or last
        # written, and the JSON last written (a write is skipped if unchanged).
        self.store: CheckpointStore | None = None  # set at the first start
        self.save_each = spec.checkpoint == "message"
        self.save_lock: trio.Lock | None = None
        self.version = 0
        self.saved: str | None = None

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
        if type(msg) not in self.table and self.actor_cls._resolve(type(msg)) is None:
            raise UnknownMessage(
                f"{self.path} ({self.actor_cls.__qualname__}) has no handler for "
                f"{type(msg).__qualname__}"
            )

    def admit(self, msg: object, priority: str) -> None:
        """Refuse ``msg`` now, or admit it (taking the half-open trial, if open).

        Raises:
            ValueError: not a priority.
            UnknownMessage, ActorStopped, CircuitOpen.
        """
        if priority not in _PRIORITIES:
            raise ValueError(_PRIORITY_ERROR)
        self.check_type(msg)
        refusal = self.refusal
        if refusal is not None:
            if refusal is _TRIAL:
                self.refusal = CircuitOpen
                return
            if refusal is CircuitOpen:
                crash = self.last_crash
                because = f" after crashing with {crash!r}" if crash is not None else ""
                raise CircuitOpen(
                    f"{self.path}: circuit breaker is {self.breaker}{because}"
                ) from crash
            raise refusal(f"{self.path} has stopped")

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
        trace = self.system.trace_context() if self.tracer is not None else None
        return Envelope(msg, current(), trace)

    async def deliver(self, msg: object) -> None:
        """``tell`` for the runtime's own senders (timers, topics): a refusal
        becomes a dead letter instead of an exception in the sender."""
        try:
            await self.ref.tell(msg)
        except (MailboxFull, ActorStopped, CircuitOpen) as exc:
            self.system._dead_letter(self.path, msg, _REFUSAL_REASONS[type(exc)])

    def _evicted(self, item: object) -> None:
        if type(item) is Ask:
            item.fail(MailboxFull(f"{self.path}: message dropped by a full mailbox"))
        self.system._dead_letter(self.path, unwrap(item), "mailbox_full")

    def flush(self, reason: str, error: type[Exception]) -> None:
        """Turn every queued message into a dead letter; askers get ``error``."""
        for item in self.mailbox.drain():
            if type(item) is Ask:
                item.fail(error(f"{self.path}: {reason.replace('_', ' ')}"))
            self.system._dead_letter(self.path, unwrap(item), reason)

    # -- one incarnation ----------------------------------------------------

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> BaseException | None:
        """Run one incarnation until it stops (returns None) or crashes (returns the error).

        ``task_status.started()`` is called once ``on_start`` has returned, or
        when the start fails. Only cancellation from outside propagates.
        """
        self.incarnation += 1
        self.status = "starting"
        self.stop_requested = False
        self.stop_deadline = math.inf
        self.killed = False
        if self.breaker != "half_open":
            self.refusal = None  # a half-open circuit keeps its trial state
        self.done = trio.Event()
        self.task = trio.lowlevel.current_task()
        started = False
        phase = "start"
        error: BaseException | None = None
        try:
            # The nursery's scope is also the incarnation's: cancelling it
            # (after shutdown_timeout) ends the handler and background tasks.
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                actor = self._build(nursery, await self._initial_state())
                await actor.on_start()
                self.status = "running"
                self.log.info("actor_started", incarnation=self.incarnation)
                started = True
                phase = "running"
                task_status.started()
                periodic = trio.CancelScope()
                if isinstance(self.spec.checkpoint, float):
                    nursery.start_soon(self._save_every, actor, self.spec.checkpoint, periodic)
                if self.spec.concurrency == 1:
                    await self._serve(actor)
                else:
                    await self._serve_concurrently(actor, self.spec.concurrency)
                phase = "stop"
                periodic.cancel()  # on_stop's half-done state is not written
                await actor.on_stop()
                if self.store is not None:
                    await self._flush(actor)
                nursery.cancel_scope.cancel()
            if self.killed:
                self.log.warning("actor_killed", incarnation=self.incarnation)
        except Exception as exc:
            error = self.last_crash = _unwrap(exc)
            self.log.exception(
                "actor_crashed",
                incarnation=self.incarnation,
                during=phase,
                exc_info=error,
            )
        finally:
            self.waiting = False
            self.scope = None
            self.task = None
            self.done.set()
        if not started:
            task_status.started()
        return error

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
        state_type = self.actor_cls._state_class()
        if self.spec.checkpoint == "off":
            return state_type() if state_type is not None else None
        if self.store is None:
            self.store = self.system.checkpoint_store()
            self.save_lock = trio.Lock()
        stats = self.system.checkpoint_stats
        start = trio.current_time()
        try:
            row = await self.store.load(self.path)
            stats.reads += 1
            stats.read_seconds += trio.current_time() - start
            if row is None:
                self.version, self.saved = 0, None
                return state_type() if state_type is not None else None
            self.version, self.saved = row
            # A checkpointing actor has a state class (checked with its spec).
            assert state_type is not None
            state = decode_state(self.path, row[1], state_type)
        except Exception as exc:
            stats.failures += 1
            self.log.warning("checkpoint_unreadable", error=f"{type(exc).__name__}: {exc}")
            raise
        self.log.info("checkpoint_restored", version=row[0], size=len(row[1]))
        return state

    async def save(self, actor: Actor[Any]) -> None:
        """Write the actor's state if it changed since the last write.

        Waits for the store (one write at a time per actor). Raises what the
        store raises (``CheckpointConflict``, ``StateError``, I/O errors); the
        previous checkpoint is then intact and the caller crashes the actor.
        """
        store = self.store
        if store is None:
            raise StateError(f"{self.path}: checkpointing is off for this actor")
        assert self.save_lock is not None
        stats = self.system.checkpoint_stats
        async with self.save_lock:
            try:
                data = encode_state(self.path, actor.state)
                if data == self.saved:
                    return
                # What cannot be read back would fail every later start.
                state_type = self.actor_cls._state_class()
                assert state_type is not None  # checked with the spec
                decode_state(self.path, data, state_type)
                start = trio.current_time()
                self.version = await store.save(self.path, data, self.version)
            except Exception as exc:
                stats.record_failure(exc)
                self.log.warning(
                    "checkpoint_failed", version=self.version, error=f"{type(exc).__name__}: {exc}"
                )
                raise
            stats.writes += 1
            stats.bytes_written += len(data)
            stats.sizes.observe(len(data))
            elapsed = trio.current_time() - start
            stats.write_seconds += elapsed
            stats.write_durations.observe(elapsed)
            self.saved = data

    async def _save_every(self, actor: Actor[Any], period: float, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(period)
                await self.save(actor)

    async def _flush(self, actor: Actor[Any]) -> None:
        """The last write of a graceful stop: shielded, within what is left of
        the stop's ``shutdown_timeout``."""
        deadline = self.stop_deadline
        if deadline == math.inf:
            deadline = trio.current_time() + self.shutdown_timeout
        with trio.move_on_at(deadline, shield=True) as scope:
            await self.save(actor)
        if scope.cancelled_caught:
            self.log.warning("checkpoint_flush_timed_out", timeout=self.shutdown_timeout)

    def request_stop(self, for_restart: bool = False) -> None:
        """Ask the incarnation to stop after the message it is handling.

        The mailbox is kept either way (``for_restart`` matters to supervisors).
        """
        self.stop_requested = True
        self.stop_deadline = min(self.stop_deadline, trio.current_time() + self.shutdown_timeout)
        self.mailbox.wake()

    async def _serve(self, actor: Actor[Any]) -> None:
        mailbox = self.mailbox
        get = mailbox.get_nowait
        handle = self._handle
        durations = self.durations
        # With metrics on: messages until the next timed one, and how many
        # messages that one stands for.
        countdown = weight = 1
        tracer = self.tracer
        plain = durations is None and tracer is None
        slot: CorrelationSlot | None = None  # made at the first message: idle actors have none
        budget = _YIELD_EVERY
        while not self.stop_requested:
            item = get()
            if item is None:
                self.waiting = True
                await mailbox.wait_nonempty()
                self.waiting = False
                # Woken by a message in the same round that a background task
                # crashed: leave the message queued for the next incarnation.
                await trio.lowlevel.checkpoint_if_cancelled()
                budget = _YIELD_EVERY
                continue
            # The message's chain (an ask's or an envelope's; 0: a new one).
            if slot is None:
                slot = CorrelationSlot()
                CURRENT.set(slot)
            kind = type(item)
            if kind is not Envelope and kind is not Ask:  # told from outside a handler
                slot.value = 0
                trace = None
            elif kind is Envelope:
                slot.value = item.correlation  # type: ignore[attr-defined]
                trace = item.trace  # type: ignore[attr-defined]
                item = item.msg  # type: ignore[attr-defined]
            else:
                slot.value = item.correlation  # type: ignore[attr-defined]
                trace = item.trace  # type: ignore[attr-defined]
            if plain:
                await handle(actor, item)
            elif tracer is not None:
                await self._handle_traced(actor, item, trace)
            else:
                countdown -= 1
                if countdown:
                    await handle(actor, item)
                else:
                    assert durations is not None  # not plain, not traced: timed
                    started = perf_counter()
                    await handle(actor, item)
                    countdown = weight = durations.observe(perf_counter() - started, weight)
            budget -= 1
            if not budget:
                budget = _YIELD_EVERY
                await trio.lowlevel.checkpoint()

    async def _serve_concurrently(self, actor: Actor[Any], limit: int) -> None:
        # A CapacityLimiter, not a Semaphore: its total can change while it
        # serves (a resource's limits reloaded).
        slots = self.slots = trio.CapacityLimiter(limit)
        mailbox = self.mailbox

        durations = self.durations

        async def handle_one(item: object, slot: object) -> None:
            # This message's chain, in its own task.
            carried = type(item) is Envelope or type(item) is Ask
            CURRENT.set(CorrelationSlot(item.correlation if carried else 0))  # type: ignore[attr-defined]
            trace = item.trace if carried else None  # type: ignore[attr-defined]
            if type(item) is Envelope:
                item = item.msg
            self.in_flight += 1
            started = perf_counter()
            try:
                if self.tracer is not None:
                    await self._handle_traced(actor, item, trace, timed=False)
                else:
                    await self._handle(actor, item)
            finally:
                self.in_flight -= 1
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
                    while not self.stop_requested:
                        # A handler that crashed has cancelled this nursery: a
                        # message taken now would be lost, not kept for the next
                        # incarnation.
                        await trio.lowlevel.checkpoint_if_cancelled()
                        item = mailbox.get_nowait()
                        if item is not None:
                            break
                        self.waiting = True
                        await mailbox.wait_nonempty()
                        self.waiting = False
                    if item is None:
                        slots.release_on_behalf_of(slot)
                        return
                    running.start_soon(handle_one, item, slot)
        finally:
            self.slots = None

    def span(self, msg: object, parent: Any = None) -> Any:
        """The OpenTelemetry span of handling ``msg`` (current while open),
        child of ``parent`` (the sender's context; None: the current one)."""
        name = type(msg).__qualname__
        return self.tracer.start_as_current_span(
            f"handle {name}",
            context=parent,
            attributes={
                "runtime.actor": self.path,
                "runtime.message": name,
                "runtime.correlation_id": correlation_id() or "",
            },
        )

    async def _handle_traced(
        self, actor: Actor[Any], item: object, parent: Any, timed: bool = True
    ) -> None:
        """``_handle`` in an OpenTelemetry span, child of the sender's."""
        started = perf_counter()
        with self.span(item.msg if type(item) is Ask else item, parent):
            try:
                await self._handle(actor, item)
            finally:
                if timed and self.durations is not None:
                    self.durations.observe(perf_counter() - started)

    async def _handle(self, actor: Actor[Any], item: object) -> None:
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
        if self.consecutive_crashes:
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
        self.consecutive_crashes = 0
        if self.breaker is not None:
            self.breaker = "closed"
            self.refusal = None

    def _recovered(self) -> None:
        self.consecutive_crashes = 0
        if self.breaker == "half_open":
            self.breaker = "closed"
            self.refusal = None
            self.log.info("breaker_closed")

    def statistics(self) -> ActorStatistics:
        """The actor's status, counters and mailbox, now."""
        return ActorStatistics(
            path=self.path,
            status=self.status,
            incarnation=self.incarnation,
            restarts=self.restarts,
            mailbox_depth=self.mailbox.size,
            mailbox_capacity=self.mailbox.capacity,
            breaker=self.breaker,
            pending_asks=self.pending_asks,
        )

    def is_idle(self) -> bool:
        """No message queued or being handled, and nothing scheduled to arrive."""
        if self.status in ("stopped", "circuit_open"):
            return True
        return (
            self.status == "running"
            and self.waiting
            and not self.in_flight
            and not self.mailbox.size
            and not self.one_shot_timers
        )


def _unwrap(exc: Exception) -> Exception:
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


_PRIORITY_ERROR = "priority must be 'high', 'normal' or 'low'"
_PRIORITIES = frozenset(PRIORITIES)


class ActorRef(Generic[M]):
    """A handle to an actor, valid across its restarts.

    ``tell`` and ``ask`` are checkpoints (they may be cancelled before the
    message is queued; once queued, the message stays queued).
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def path(self) -> str:
        """The actor's path, ``root/.../name``."""
        return self._cell.path

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.path}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._cell is self._cell

    def __hash__(self) -> int:
        return hash(self._cell)

    async def tell(self, msg: object, *, priority: str = "normal") -> None:
        """Queue ``msg``; under ``block`` wait while the mailbox is full.

        A cancellation point always. It yields to the scheduler when it has
        to wait for space, and otherwise once every few calls: a sender
        queues a batch of messages for the actor to drain in one turn,
        instead of paying a task switch per message, and can still never
        starve other tasks.

        Raises:
            UnknownMessage: no handler for the message's type.
            MailboxFull: full under ``reject``.
            ActorStopped, CircuitOpen: the actor does not accept messages.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        cell = self._cell
        if type(msg) not in cell.table or cell.refusal is not None:
            cell.admit(msg, priority)
        # Bare from outside a handler; from inside, or when tracing, with the chain.
        item = msg if cell.tracer is None and CURRENT.get() is None else cell.envelope(msg)
        try:
            queued = cell.mailbox.put_nowait(item, priority)
        except KeyError:
            raise ValueError(_PRIORITY_ERROR) from None
        if not queued:
            await cell.put(item, priority)
        elif cell.unyielded_tells < _YIELD_EVERY:
            cell.unyielded_tells += 1
        else:
            cell.unyielded_tells = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        """Queue ``msg`` without waiting.

        Raises:
            MailboxFull: the mailbox is full under ``block`` or ``reject``.
            UnknownMessage, ActorStopped, CircuitOpen: as ``tell``.
        """
        cell = self._cell
        if type(msg) not in cell.table or cell.refusal is not None:
            cell.admit(msg, priority)
        # Bare from outside a handler; from inside, or when tracing, with the chain.
        item = msg if cell.tracer is None and CURRENT.get() is None else cell.envelope(msg)
        try:
            queued = cell.mailbox.put_nowait(item, priority)
        except KeyError:
            raise ValueError(_PRIORITY_ERROR) from None
        if not queued:
            raise MailboxFull(f"{cell.path}: mailbox full ({cell.mailbox.capacity} messages)")

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        """Send ``msg`` and wait for the handler's return value.

        The timeout covers waiting for mailbox space too: ``ask`` never waits
        longer than ``timeout``. On timeout or cancellation the asker leaves
        no waiter behind; the message, if queued, is still handled and its
        reply discarded.

        Raises:
            AskTimeout: no reply within ``timeout`` seconds.
            ActorFailed: the handler raised (the original is ``__cause__``).
            ActorStopped: the actor stopped for good before replying.
            MailboxFull, CircuitOpen, UnknownMessage: refused.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        cell = self._cell
        if type(msg) not in cell.table or cell.refusal is not None:
            cell.admit(msg, priority)
        if priority not in _PRIORITIES:
            raise ValueError(_PRIORITY_ERROR)
        request = Ask(msg, trio.lowlevel.current_task(), priority, current())
        if cell.tracer is not None:
            request.trace = cell.system.trace_context()

        def abort(_: object) -> trio.lowlevel.Abort:
            request.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        cell.pending_asks += 1
        try:
            with trio.move_on_after(timeout):
                if not cell.mailbox.put_nowait(request, priority):
                    await cell.put(request, priority)
                # Nothing may yield between queueing and parking: the reply
                # reschedules this task and must find it parked here.
                return await trio.lowlevel.wait_task_rescheduled(abort)
            raise AskTimeout(
                f"{cell.path} did not reply to {type(msg).__qualname__} within {timeout}s"
            )
        finally:
            request.waiter = None
            cell.pending_asks -= 1

    def statistics(self) -> ActorStatistics:
        """The actor's status, counters and mailbox, now."""
        return self._cell.statistics()


class ActorContext:
    """``self.ctx``: the running incarnation's view of the system.

    ``nursery`` lives exactly as long as this incarnation: tasks started in it
    are cancelled when the actor stops or crashes, and a task that raises
    crashes the actor.
    """

    __slots__ = ("_actor", "_cell", "_incarnation", "nursery")

    def __init__(self, cell: ActorCell, nursery: trio.Nursery, actor: Actor[Any]) -> None:
        self._cell = cell
        self._actor = actor
        self._incarnation = cell.incarnation
        self.nursery = nursery

    @property
    def path(self) -> str:
        """This actor's path."""
        return self._cell.path

    @property
    def system(self) -> ActorSystem:
        """The system this actor runs in."""
        return self._cell.system

    @property
    def self_ref(self) -> ActorRef[Any]:
        """A ref to this actor (valid across its restarts)."""
        return self._cell.ref

    def ref(self, path: str) -> ActorRef[Any]:
        """The ref of the actor at ``path``.

        Raises:
            ActorNotFound: nothing at that path.
        """
        return self._cell.system.ref(path)

    def progress(self, *, total: int = 0, done: int = 0, retried: int = 0) -> None:
        """Count work items for the progress display and the run summary:
        ``total`` more items are expected, ``done`` more finished, ``retried``
        more tried again. Counts add up across actors; an actor that resumes
        from a checkpoint counts what it had done again."""
        system = self._cell.system
        system.items_total += total
        system.items_done += done
        system.items_retried += retried

    def resource(self, name: str) -> ActorRef[Any]:
        """The ref of the resource ``name`` (declared under ``resources:``).

        Raises:
            ActorNotFound: the topology declares no resource of that name.
        """
        return self._cell.system.resource(name)

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
            cell.one_shot_timers += 1
            try:
                with scope:
                    await trio.sleep(delay)
                    await cell.deliver(msg)
            finally:
                cell.one_shot_timers -= 1

        self.nursery.start_soon(fire)
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

        self.nursery.start_soon(tick)
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
        if cell.actor_cls._resolve(message_type) is None:
            raise UnknownMessage(
                f"{cell.path} cannot subscribe to {message_type.__qualname__}: no handler"
            )
        cell.system._subscribe(topic, cell, message_type)

    def unsubscribe(self, topic: str, message_type: type | None = None) -> None:
        """Stop receiving ``topic`` (only ``message_type`` events, if given)."""
        self._cell.system._unsubscribe(topic, self._cell, message_type)

    async def publish(self, topic: str, event: object) -> None:
        """Deliver ``event`` to every subscriber of ``topic`` whose type it matches.

        Waits while a subscriber's ``block`` mailbox is full (backpressure).
        A subscriber that refuses the event turns it into a dead letter; the
        publisher is never failed by a subscriber.
        """
        await self._cell.system._publish(topic, event)
