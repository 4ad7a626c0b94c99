"""Resource actors: one actor per shared backend, serving requests under a limiter.

A resource is declared under ``resources:`` in the topology and runs under
the system's ``resources`` supervisor (paths ``resources/<name>``), started
before the root supervisor and stopped after it, so agents can use resources
in their ``on_start`` and ``on_stop``. Its requests are asks; each handler
passes its backend call through ``self.call``, which applies the
``Limiter`` built from the ``ResourceSpec``: concurrency, rate, priority (the
ask's), per-attempt timeout, retries and the circuit breaker. The limiter
lives as long as the resource's place in the tree, not one incarnation, so a
restart neither forgets the rate window nor closes an open breaker.

A request that fails is answered with its error (the backend's exception,
``CircuitOpen``, ``TimeoutError``, ``ResourceError``); the resource goes on
serving. It crashes, and is restarted by its supervisor, only when
``on_start`` or a task in ``ctx.nursery`` raises, or on ``self.fail(error)``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import trio
import trio_asyncio

from ._actor import Actor
from ._budget import BudgetStatistics, UsageStatistics
from ._cell import ActorCell, LocalRef
from ._correlation import ACTOR_PATH, current_actor
from ._limiter import Limiter, LimiterStatistics
from ._mailbox import Ask
from ._priority import check_priority
from ._serving import span
from ._shared import SharedLimits
from ._specs import ChildSpec, ResourceSpec, shared_default
from .errors import ActorStopped, AskTimeout, BudgetExceeded, ResourceError

if TYPE_CHECKING:
    from ._host import Host

__all__ = ["Resource", "ResourceCell", "ResourceStatistics", "resource_child_spec"]

T = TypeVar("T")

RESOURCES_SUPERVISOR = "resources"
"""The name (and path) of the supervisor every resource runs under."""

_PRIORITY: contextvars.ContextVar[str] = contextvars.ContextVar(
    "runtime_request_priority", default="normal"
)


@attrs.frozen
class NoOptions:
    """The options of a resource kind that takes none."""


@attrs.frozen
class ResourceStatistics:
    """A snapshot of one resource.

    Attributes:
        name, kind: the resource's name and its class (``module:Class``).
        status: the resource actor's status (``running``, ``restarting``,
            ``circuit_open``, ...).
        circuit: the resource actor's own breaker (``closed``, ``open``,
            ``half_open``; None without one), opened by crashes; while it is
            not closed, requests get ``CircuitOpen`` whatever the limiter's.
        limiter: its limiter's tokens, waiters, admissions, rejections and
            breaker (opened by the backend's failures).
        requests: requests answered so far.
        failures: requests answered with an error.
        backend: the kind's own figures (pool connections, tokens used, ...).
        last_failure: the error of the resource actor's last crash, a failed
            start included (``ResourceError('llm: the environment variable
            OPENAI_API_KEY (api_key_env) is not set')``); None if it never
            crashed.
        up: whether it runs now (``status`` is ``running``).
        came_up: whether it ever ran: False for a resource whose every
            start failed so far.
        backend_failure: why the limiter's breaker opened (the backend's
            last failure), when the limiter records it; None otherwise.
        usage: tokens and cost by asking agent, since the system started
            (restarts of the resource included), for kinds that report
            usage (``llm``).
        budget: the resource's own budget now, if it has one.
    """

    name: str
    kind: str
    status: str
    circuit: str | None
    limiter: LimiterStatistics
    requests: int
    failures: int
    backend: dict[str, float]
    last_failure: str | None = None
    up: bool = False
    came_up: bool = False
    backend_failure: str | None = None
    usage: tuple[UsageStatistics, ...] = ()
    budget: BudgetStatistics | None = None


class Resource(Actor[None]):
    """Base class of resource actors.

    A subclass declares its settings as an attrs class ``Options`` (structured
    from the topology entry's extra keys), its messages as ``@handler``
    methods, and runs every backend call through ``await self.call(fn, ...)``.
    Set up the backend in ``on_start`` (a pool, a client, a session) and
    close it in ``on_stop``.

    Attributes (set before ``__init__`` runs):
        name: the resource's name in the topology.
        spec: its ``ResourceSpec``.
        options: ``spec.options``, an instance of ``Options``.
        limiter: the ``Limiter`` that ``call`` applies.
    """

    __runtime_resource__: ClassVar[bool] = True  # how specs recognise a resource class

    Options: ClassVar[type] = NoOptions
    default_max_concurrency: ClassVar[int | None] = None
    uses_asyncio: ClassVar[bool] = False
    """Whether the kind runs asyncio code (through trio-asyncio); the system
    then opens an asyncio loop for it."""

    name: str
    spec: ResourceSpec
    options: Any
    limiter: Limiter
    _resource_cell: ResourceCell

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in (
            "call",
            "fail",
            "is_transient",
            "should_retry",
            "backend_statistics",
            "check_environment",
            "check_budget",
            "record_usage",
        ):
            if getattr(cls, name) is not getattr(Resource, name) and hasattr(
                getattr(cls, name), "__runtime_handler__"
            ):
                raise TypeError(
                    f"{cls.__qualname__}.{name} is a handler, but Resource.{name} is "
                    "used by the runtime: give the handler another name"
                )

    @classmethod
    def check_environment(cls, options: Any) -> list[tuple[str, str]]:
        """What in this machine's environment would keep a resource with
        ``options`` from starting: ``(field, message)`` pairs, none if all
        looks well.

        Called before the system starts, on the class: by ``runtime
        validate`` (as errors) and ``runtime start`` (as warnings), unless
        ``--no-env-checks``. ``field`` names the option at fault (its line
        is reported), such as ``api_key_env`` for a variable that is not
        set. Only look, never act: no connection, no process. By default
        nothing is checked.
        """
        return []

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` under this resource's limits, at the
        priority the request was asked with.

        Raises:
            CircuitOpen: the breaker is open.
            TimeoutError: the last attempt ran past ``timeout``.
            Whatever ``fn`` raised on its last attempt.
        """
        return await self.limiter.call(fn, *args, priority=_PRIORITY.get())

    async def check_budget(self) -> None:
        """Return once the budgets this request spends allow it: the
        resource's own, and each supervisor's above the asking actor.

        Call it before the backend call of each request whose usage you
        record (``record_usage``). It holds no concurrency token: a request
        that waits for the next window waits here, before the limiter.
        Cancelling the request (an ask's timeout) ends the wait.

        Raises:
            BudgetExceeded: a budget with ``on_exhausted: refuse`` is spent.
        """
        ledger = self._resource_cell.host.ledger
        budgets = ledger.account(self.name, current_actor()).budgets
        if budgets:
            await ledger.admit(budgets)

    def record_usage(
        self, input_tokens: int, output_tokens: int, dollars: float | None = None
    ) -> None:
        """Count what one answered request cost, for the asking actor (see
        ``ResourceStatistics.usage``) and against the budgets it spends.
        ``dollars`` None: no price is known (nothing is counted in dollars)."""
        ledger = self._resource_cell.host.ledger
        account = ledger.account(self.name, current_actor())
        ledger.charge(account, input_tokens, output_tokens, dollars)

    def is_transient(self, error: BaseException) -> bool:
        """Whether ``error`` may pass on retrying (it is then retried and
        counted by the breaker). By default timeouts, ``OSError`` and a
        ``ResourceError`` marked transient."""
        if isinstance(error, ResourceError):
            return error.transient
        return isinstance(error, (TimeoutError, OSError))

    def should_retry(self, error: BaseException) -> bool:
        """Whether a transient failure may be tried again; by default yes.

        Say no for an attempt that may have taken effect (a statement whose
        connection was lost after it was sent): it still counts toward the
        breaker, but is not repeated.
        """
        return True

    def fail(self, error: Exception) -> None:
        """Crash this resource with ``error``; its supervisor restarts it.

        For a backend that is gone for good (a server process that exited):
        requests in flight are answered with ``error``, or with a
        ``ResourceError`` naming it. Callable from a handler, ``on_start`` or
        a background task.
        """
        self._resource_cell.broken = error

        async def crash() -> None:
            raise error

        self.ctx.nursery.start_soon(crash)

    def backend_statistics(self) -> dict[str, float]:
        """The kind's own figures for ``ResourceStatistics.backend``."""
        return {}


def _limits(spec: ResourceSpec) -> dict[str, Any]:
    """The limiter settings of ``spec``."""
    breaker = spec.circuit_breaker
    return {
        "max_concurrency": spec.concurrency,
        "rate": spec.rate,
        "timeout": spec.timeout,
        "retry": spec.retry,
        "failures": breaker.failures if breaker is not None else None,
        "reset_timeout": breaker.reset_timeout if breaker is not None else 60.0,
    }


def _shared_limits(host: Host, name: str, spec: ResourceSpec, path: str) -> SharedLimits | None:
    """The shared side of a resource's limits, for ``shared: true``: on
    ``shared_via``, or on the topology's store when that is PostgreSQL."""
    if not spec.shared:
        return None
    url = spec.shared_via or shared_default(getattr(host.system.topology, "store", None))
    if url is None:
        raise ValueError(
            f"{path}: shared: true needs shared_via: postgresql://... or nats://... "
            "(it defaults to the store only when that is PostgreSQL)"
        )
    return SharedLimits(
        url,
        host.backends,
        system=host.name,
        resource=name,
        lease=spec.shared_lease,
        guard=spec.shared_guard,
        name=path,
    )


def _show(value: object) -> str:
    if attrs.has(type(value)):
        fields = ", ".join(f"{k}: {v!r}" for k, v in attrs.asdict(value).items())  # type: ignore[arg-type]
        return f"{{{fields}}}"
    return repr(value)


def resource_child_spec(name: str, spec: ResourceSpec) -> ChildSpec:
    """The child spec a resource runs with under the resources supervisor.

    It handles up to ``max_concurrency + mailbox.capacity`` requests at once:
    the ones beyond ``max_concurrency`` wait in the limiter, in priority
    order, holding no token.
    """
    return ChildSpec(
        name=name,
        actor=spec.kind,
        restart="permanent",
        mailbox=spec.mailbox,
        circuit_breaker=spec.circuit_breaker,
        shutdown_timeout=spec.shutdown_timeout,
        concurrency=(spec.concurrency or 0) + spec.mailbox.capacity,
    )


class ResourceRef(LocalRef):
    """The ref of a resource: an ask to a running resource is served in the
    asker's own task, under the resource's limiter, with no mailbox hop."""

    __slots__ = ()

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        """Send the request ``msg`` and wait for its answer.

        While the resource runs, the handler runs in this task (the limiter
        still admits it: concurrency, rate, priority, breaker); cancelling
        the asker, or its ``timeout`` passing, cancels the request. While it
        starts or restarts, the request waits in its mailbox as with any
        actor.

        Raises:
            AskTimeout: no answer within ``timeout`` seconds.
            ResourceError, ActorStopped: the resource crashed or was stopped
                while serving the request.
            The handler's own error (the backend's, ``CircuitOpen``, ...).
        """
        cell = self._cell
        assert isinstance(cell, ResourceCell)
        actor = cell.current
        scope = cell.scope
        if (
            actor is None
            or cell.status != "running"
            or scope is None
            or scope.cancel_called  # a crash or kill is unwinding
            or cell.stop_requested
            or cell.refusal is not None
            or type(msg) not in cell.table
        ):
            return await super().ask(msg, timeout=timeout, priority=priority)
        check_priority(priority)
        return await cell.serve_inline(actor, msg, timeout, priority)


class ResourceCell(ActorCell):
    """The cell of a resource: an actor cell that owns the limiter, serves
    asks in the askers' tasks, and answers failed requests with their error
    instead of crashing."""

    kind = "resource"
    nursery_tasks_are_work = False  # its connections and servers run there
    __slots__ = (
        "asyncio_loop",
        "broken",
        "came_up",
        "current",
        "inline",
        "inline_done",
        "limiter",
        "resource_spec",
        "shared",
    )

    def __init__(self, child_spec: ChildSpec, path: str, host: Host, spec: ResourceSpec) -> None:
        super().__init__(child_spec, path, host)
        self.ref = ResourceRef(self)
        self.resource_spec = spec
        self.current: Resource | None = None
        self.broken: Exception | None = None
        self.came_up = False  # some incarnation reached running (for health)
        # Requests served in their askers' tasks, by cancel scope, with the
        # error to answer if the incarnation cuts them short: an ended
        # incarnation cancels them; a graceful stop waits for them.
        self.inline: dict[trio.CancelScope, Exception | None] = {}
        self.inline_done: trio.Event | None = None
        self.asyncio_loop: Any = None  # the system's trio-asyncio loop, for asyncio kinds
        self.shared = _shared_limits(host, self.name, spec, path)
        self.limiter = Limiter(
            **_limits(spec),
            is_transient=self._is_transient,
            should_retry=self._should_retry,
            name=path,
            shared=self.shared,
        )

    def _is_transient(self, error: BaseException) -> bool:
        actor = self.current
        return actor.is_transient(error) if actor is not None else False

    def _should_retry(self, error: BaseException) -> bool:
        actor = self.current
        return actor.should_retry(error) if actor is not None else False

    def _prepare(self, actor: Actor[Any]) -> None:
        assert isinstance(actor, Resource)
        actor.name = self.name
        actor.spec = self.resource_spec
        actor.options = self.resource_spec.options
        actor.limiter = self.limiter
        actor._resource_cell = self
        self.current = actor
        self.broken = None
        if actor.uses_asyncio or self.shared is not None:
            self.asyncio_loop = trio_asyncio.current_loop.get()

    async def serve_inline(
        self, actor: Actor[Any], msg: object, timeout: float, priority: str
    ) -> Any:
        """Run ``msg``'s handler in the calling task, as this incarnation's."""
        scope = trio.CancelScope()
        self.inline[scope] = None
        self.pending_asks += 1
        self.in_flight += 1
        token = _PRIORITY.set(priority)
        # An asyncio kind's calls need the loop the system runs, whatever task asks.
        loop_token = (
            trio_asyncio.current_loop.set(self.asyncio_loop)
            if self.asyncio_loop is not None
            else None
        )
        started = perf_counter()
        # One cancel scope for both ends: the ask's timeout (its deadline)
        # and the end of the incarnation (which cancels it with a reason).
        scope.deadline = trio.current_time() + timeout
        try:
            with scope:
                try:
                    if self.tracer is not None:
                        result = await self._traced_call(actor, msg)
                    else:
                        result = await self.table[type(msg)](actor, msg)
                except BudgetExceeded:
                    raise  # refused before it reached the backend: not a failure
                except Exception:
                    self.failed += 1
                    self._served()
                    raise
                self.handled += 1
                self._served()
                return result
            reason = self.inline.get(scope)
            if reason is not None:  # the incarnation ended (crash, kill): why, as it was then
                self.failed += 1
                raise reason
            raise AskTimeout(
                f"{self.path} did not reply to {type(msg).__qualname__} within {timeout}s"
            )
        finally:
            if self.durations is not None:
                self.durations.observe(perf_counter() - started)
            if loop_token is not None:
                trio_asyncio.current_loop.reset(loop_token)
            _PRIORITY.reset(token)
            del self.inline[scope]
            self.pending_asks -= 1
            self.in_flight -= 1
            if not self.inline and self.inline_done is not None:
                self.inline_done.set()

    async def _traced_call(self, actor: Actor[Any], msg: object) -> Any:
        """The handler in an OpenTelemetry span, child of the asker's."""
        with span(self, msg):
            return await self.table[type(msg)](actor, msg)

    def _served(self) -> None:
        """A request was answered without crashing the resource: that is
        recovery for its actor breaker (a half-open one closes)."""
        # A half-open circuit is one whose refusal is set (the trial marker, or
        # CircuitOpen while its trial runs): one attribute, read per request.
        if self.record.consecutive_crashes or self.refusal is not None:
            self._recovered()

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, *, begun: bool = False
    ) -> BaseException | None:
        error: BaseException | None = None
        try:
            if self.shared is None:
                error = await super().run_incarnation(_CameUp(self, task_status), begun=begun)
                return error
            async with trio.open_nursery() as nursery:
                # The shared limits' background work (leases, pauses,
                # membership) runs while the incarnation does.
                nursery.start_soon(self.shared.serve)
                try:
                    error = await super().run_incarnation(_CameUp(self, task_status), begun=begun)
                finally:
                    nursery.cancel_scope.cancel()
            return error
        finally:
            if self.broken is None and isinstance(error, Exception):
                self.broken = error  # a crash by a background task or on_start
            self._cancel_inline(self._interrupted())

    async def _serve_concurrently(self, actor: Actor[Any], limit: int) -> None:
        await super()._serve_concurrently(actor, limit)
        # A graceful stop: requests served in askers' tasks finish first,
        # within the stop's deadline; those still running then are cancelled.
        with trio.move_on_at(self.stop_deadline):
            while self.inline:
                self.inline_done = trio.Event()
                await self.inline_done.wait()
        self.inline_done = None
        if self.inline:
            self.killed = True
            self._cancel_inline(
                ActorStopped(f"{self.path} stopped before replying (its shutdown_timeout passed)")
            )

    def _cancel_inline(self, reason: Exception) -> None:
        """Cancel the requests served in askers' tasks; each answers ``reason``."""
        for scope in self.inline:
            self.inline[scope] = reason
            scope.cancel()

    async def handle_item(self, actor: Actor[Any], item: object) -> None:
        # Each request runs in its own task: the priority and the asker are that task's.
        if type(item) is Ask:
            _PRIORITY.set(item.priority)
            waiter = item.waiter  # the asking task, while it waits
            ACTOR_PATH.set(None if waiter is None else waiter.context.get(ACTOR_PATH))
        else:  # an Envelope: normal, from no one known
            _PRIORITY.set("normal")
            ACTOR_PATH.set(None)
        try:
            await super().handle_item(actor, item)
        except BudgetExceeded:
            self.failed -= 1  # a refusal before the backend, not a failure
            self._served()
        except Exception as exc:
            # The asker has its error (``_failure``); the resource goes on.
            self._served()
            if type(item) is not Ask:
                self.log.warning(
                    "resource_request_failed",
                    message_type=type(item).__qualname__,
                    error=repr(exc),
                )

    def _failure(self, msg: object, exc: BaseException) -> Exception:
        if isinstance(exc, Exception):
            return exc
        self.failed += 1  # cut short by the end of the incarnation
        return self._interrupted()

    def _interrupted(self) -> Exception:
        """The error of a request cut short by the end of its incarnation."""
        broken = self.broken
        if broken is not None:
            error = ResourceError(f"{self.path}: {broken}", resource=self.name, transient=True)
            error.__cause__ = broken
            return error
        return ActorStopped(f"{self.path} stopped before replying")

    def reconfigure(self, spec: ResourceSpec) -> list[str]:
        """Apply a reloaded spec; returns what changed, one line per change.

        Limits (``max_concurrency``, ``rate``, ``timeout``, ``retry``,
        ``circuit_breaker``) change at once, while requests run. New options
        restart the resource (requests in flight finish first; queued ones
        wait). A new ``budget`` applies to the next request and keeps what
        the window has spent. A new ``kind``, ``mailbox``,
        ``shutdown_timeout`` or shared setting (``shared``, ``shared_via``,
        ``shared_lease``, ``shared_guard``) needs the system restarted: it is
        reported and not applied.
        """
        old = self.resource_spec
        changes: list[str] = []
        kept = [
            field
            for field in (
                "kind",
                "mailbox",
                "shutdown_timeout",
                "shared",
                "shared_via",
                "shared_lease",
                "shared_guard",
            )
            if getattr(spec, field) != getattr(old, field)
        ]
        if kept:
            changes.append(f"{', '.join(kept)}: not applied until the system restarts")
            spec = attrs.evolve(spec, **{field: getattr(old, field) for field in kept})
        limits = ("max_concurrency", "rate", "timeout", "retry", "circuit_breaker")
        changed = [field for field in limits if getattr(spec, field) != getattr(old, field)]
        if changed:
            self.limiter.configure(**_limits(spec))
            self.spec = resource_child_spec(self.name, spec)
            if self.slots is not None:
                self.slots.total_tokens = self.spec.concurrency
            changes += [
                f"{field}: {_show(getattr(old, field))} -> {_show(getattr(spec, field))}"
                for field in changed
            ]
        if spec.budget != old.budget:
            self.host.ledger.set_resource_budget(self.name, spec.budget)
            changes.append(f"budget: {_show(old.budget)} -> {_show(spec.budget)}")
        self.resource_spec = spec
        if spec.options != old.options:
            changes.append("options changed: restarting the resource")
            self.request_stop(for_restart=True)
            actor = self.current
            if actor is not None and self.scope is not None:
                actor.ctx.nursery.start_soon(self._kill_at_stop_deadline)
        return changes

    async def _kill_at_stop_deadline(self) -> None:
        """Bound a stop that no supervisor watches (a restart for new options)."""
        await trio.sleep_until(self.stop_deadline)
        if self.scope is not None:
            self.killed = True
            self.scope.cancel()

    def resource_statistics(self) -> ResourceStatistics:
        """The resource's limiter, counters and backend figures, now."""
        actor = self.current
        kind = self.resource_spec.kind
        limiter = self.limiter.statistics()
        ledger = self.host.ledger
        budget = ledger.resource_budgets.get(self.name)
        return ResourceStatistics(
            name=self.name,
            kind=f"{kind.__module__}:{kind.__qualname__}",
            status=self.status,
            circuit=self.breaker,
            limiter=limiter,
            requests=self.handled + self.failed,
            failures=self.failed,
            backend=actor.backend_statistics() if actor is not None else {},
            last_failure=None if self.last_crash is None else repr(self.last_crash),
            up=self.status == "running",
            came_up=self.came_up,
            backend_failure=_breaker_failure(limiter),
            usage=tuple(ledger.usage(self.name)),
            budget=None if budget is None else budget.statistics(ledger.now()),
        )


class _CameUp:
    """The ``task_status`` of one incarnation: passes ``started()`` on, and
    notes that the resource came up."""

    __slots__ = ("cell", "task_status")

    def __init__(self, cell: ResourceCell, task_status: trio.TaskStatus[None]) -> None:
        self.cell = cell
        self.task_status = task_status

    def started(self, value: None = None) -> None:
        self.cell.came_up = True
        self.task_status.started(value)


def _breaker_failure(limiter: LimiterStatistics) -> str | None:
    """Why the limiter's breaker opened: the last failure it counted."""
    return limiter.last_failure
