"""The actor system: the root supervisor, the path registry, dead letters and topics."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from ._actor import Actor, ActorCell, ActorRef, ActorStatistics
from ._checkpoint import (
    CheckpointCounters,
    CheckpointStatistics,
    CheckpointStore,
    PostgresStore,
    default_store_url,
    open_store,
)
from ._endpoint import Listen, open_endpoint, parse_listen
from ._logging import get_logger
from ._metrics import RuntimeCollector
from ._resource import (
    RESOURCES_SUPERVISOR,
    ResourceCell,
    ResourceStatistics,
    resource_child_spec,
)
from ._specs import BackoffSpec, ChildSpec, SupervisorSpec, Topology
from ._supervisor import Child, Supervisor
from ._topology import check_actor, iter_children, load_topology, unsupported
from ._tracing import context_now, make_tracer
from .errors import ActorNotFound, TopologyError

__all__ = ["ActorSystem", "DeadLetter", "Progress", "TreeNode", "open_system"]

logger = get_logger()

DEAD_LETTERS_KEPT = 1000
_IDLE_POLL = 0.05


@attrs.frozen
class DeadLetter:
    """A message that was accepted but will never be handled.

    Attributes:
        path: the actor it was sent to.
        message: the message itself.
        reason: ``mailbox_full`` (evicted by ``drop_oldest``/``drop_newest``),
            ``stopped`` (the actor stopped for good with it queued) or
            ``circuit_open`` (queued when the actor's circuit opened). Timer
            ticks and published events that the target refuses become dead
            letters with the same reasons.
    """

    path: str
    message: object
    reason: str


@attrs.frozen
class Progress:
    """Work items counted by the actors (``ctx.progress``), and who works now.

    Attributes:
        done, total, retried: items finished, expected, and retried so far.
        working: the actors handling a message now, each with how many
            (above 1 under ``concurrency`` or for a resource).
    """

    done: int
    total: int
    retried: int
    working: tuple[tuple[str, int], ...]


@attrs.frozen
class TreeNode:
    """One node of ``ActorSystem.tree()``."""

    path: str
    kind: str
    stats: ActorStatistics
    children: tuple[TreeNode, ...] = ()


class ActorSystem:
    """A running supervision tree. Get one from ``open_system``."""

    def __init__(
        self,
        topology: Topology,
        store: CheckpointStore | str | None = None,
        *,
        metrics: bool = False,
    ) -> None:
        self.topology = topology
        # Whether handling times are kept for the metrics (they cost a little per message).
        self.metrics = metrics
        # OpenTelemetry, with metrics.tracing: the tracer, and the sender's context.
        self.tracer: Any = make_tracer() if topology.metrics.tracing else None
        self.trace_context = context_now
        self.name = topology.system
        # The store asked for: open_system's, else the topology's (None: default).
        self.store = store if store is not None else topology.store
        self.registry: CollectorRegistry | None = None
        self.endpoint_url: str | None = None  # the metrics endpoint's, when serving
        self._store: CheckpointStore | None = None
        self.checkpoint_stats = CheckpointCounters()
        self._cells: dict[str, ActorCell] = {}
        self._supervisors: dict[str, Supervisor] = {}
        self._dead_letters: deque[DeadLetter] = deque(maxlen=DEAD_LETTERS_KEPT)
        self.dead_letter_count = 0
        self.dead_letter_reasons: dict[str, int] = {}
        self.items_done = self.items_total = self.items_retried = 0  # ctx.progress
        self._topics: dict[str, dict[ActorCell, set[type]]] = {}
        # Resources first: their supervisor starts before the root's and stops after it.
        self.resources: Supervisor | None = None
        if topology.resources:
            self.resources = Supervisor(_resources_spec(topology), RESOURCES_SUPERVISOR, self)
            self._supervisors[RESOURCES_SUPERVISOR] = self.resources
        self.root = Supervisor(topology.supervisor, topology.supervisor.name, self)
        self._supervisors[self.root.path] = self.root
        self.failure: BaseException | None = None
        self._body = trio.CancelScope()  # open_system's block

    # -- checkpoints -------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """Where checkpoints go: ``open_system``'s ``store``, else the topology's,
        else ``sqlite:///.runtime/<system>.db``."""
        store = self.store
        if store is None:
            return default_store_url(self.name)
        return store if isinstance(store, str) else store.url

    def checkpoint_statistics(self) -> CheckpointStatistics:
        """Checkpoint reads, writes, bytes, time, conflicts and failures so far."""
        return self.checkpoint_stats.statistics()

    def uses_asyncio(self) -> bool:
        """Whether the store or a resource needs an asyncio loop (asyncpg,
        through trio-asyncio)."""
        if any(spec.kind.uses_asyncio for spec in self.topology.resources.values()):  # type: ignore[attr-defined]
            return True
        return isinstance(self.store, PostgresStore) or self.store_url.startswith(
            ("postgresql://", "postgres://")
        )

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store, made on first use (it connects on first use too)."""
        if self._store is None:
            if isinstance(self.store, CheckpointStore):
                self._store = self.store
            else:
                self._store = open_store(self.store_url)
        return self._store

    async def _close_store(self) -> None:
        # A store passed in by the caller is the caller's to close.
        if self._store is not None and not isinstance(self.store, CheckpointStore):
            with trio.CancelScope(shield=True):
                await self._store.aclose()

    # -- the tree -------------------------------------------------------------

    def _build(self, spec: ChildSpec | SupervisorSpec, prefix: str) -> Child:
        path = f"{prefix}{spec.name}"
        if isinstance(spec, SupervisorSpec):
            supervisor = Supervisor(spec, path, self)
            self._supervisors[path] = supervisor
            return supervisor
        resource = self.topology.resources.get(spec.name)
        if prefix == f"{RESOURCES_SUPERVISOR}/" and resource is not None:
            cell: ActorCell = ResourceCell(spec, path, self, resource)
        else:
            cell = ActorCell(spec, path, self)
        self._cells[path] = cell
        return cell

    def _forget(self, child: Child) -> None:
        if isinstance(child, Supervisor):
            self._supervisors.pop(child.path, None)
            for grandchild in child.children:
                self._forget(grandchild)
        elif self._cells.get(child.path) is child:
            del self._cells[child.path]

    def ref(self, path: str) -> ActorRef[Any]:
        """The ref of the actor at ``path`` (``root/workers/reviewer``).

        Raises:
            ActorNotFound: no actor at that path (a supervisor is not an actor).
        """
        cell = self._cells.get(path)
        if cell is None:
            what = "a supervisor, not an actor" if path in self._supervisors else "not found"
            raise ActorNotFound(f"{path!r}: {what}")
        return cell.ref

    def resource(self, name: str) -> ActorRef[Any]:
        """The ref of the resource ``name`` (at ``resources/<name>``).

        Raises:
            ActorNotFound: the topology declares no resource of that name.
        """
        cell = self._cells.get(f"{RESOURCES_SUPERVISOR}/{name}")
        if not isinstance(cell, ResourceCell):
            if name in self.topology.resources:
                raise ActorNotFound(
                    f"resource {name!r} was stopped for good (system.stop); "
                    "it runs again at the next start"
                )
            declared = ", ".join(sorted(self.topology.resources)) or "none"
            raise ActorNotFound(f"no resource named {name!r}; the topology declares: {declared}")
        return cell.ref

    def reload(self, topology: Topology | str | os.PathLike[str]) -> list[str]:
        """Apply a changed topology to the running system, as far as it can be
        applied live; returns one line per change, applied or not.

        Each resource's limits change at once and new options restart it
        (see ``ResourceCell.reconfigure``). Resources added or removed, and
        changes to the supervision tree, the store or metrics, take effect
        at the next start; they are reported, not applied.

        Raises:
            TopologyError: the new topology is invalid; nothing was changed.
        """
        new = _topology_of(topology)
        _check_runnable(new)
        changes: list[str] = []
        resources = dict(self.topology.resources)
        for name, spec in new.resources.items():
            cell = self._cells.get(f"{RESOURCES_SUPERVISOR}/{name}")
            if not isinstance(cell, ResourceCell):
                what = "stopped" if name in self.topology.resources else "added"
                changes.append(f"resources.{name}: {what}: starts at the next start")
                continue
            changes += [f"resources.{name}: {change}" for change in cell.reconfigure(spec)]
            resources[name] = cell.resource_spec
        changes += [
            f"resources.{name}: removed: runs until the next start"
            for name in self.topology.resources.keys() - new.resources.keys()
        ]
        for field in ("system", "supervisor", "store", "metrics"):
            if getattr(new, field) != getattr(self.topology, field):
                changes.append(f"{field}: changed: not applied until the next start")
        self.topology = attrs.evolve(self.topology, resources=resources)
        logger.info("topology_reloaded", changes=changes)
        return changes

    def resource_statistics(self) -> dict[str, ResourceStatistics]:
        """Each resource's limiter, counters and backend figures, by name."""
        return {
            cell.name: cell.resource_statistics()
            for cell in self._cells.values()
            if isinstance(cell, ResourceCell)
        }

    async def spawn(
        self, actor_cls: type[Actor[Any]] | str, *, name: str, **fields: Any
    ) -> ActorRef[Any]:
        """Start a new actor as the last child of the root supervisor.

        ``fields`` are the other ``ChildSpec`` fields (``restart``,
        ``mailbox``, ``args``, ...). Returns once its ``on_start`` has run.

        Raises:
            TopologyError: the spec is invalid or the actor cannot run with
                it (a ``ValueError``, as are bad field values).
            ValueError: a running child has that name already.
        """
        spec = ChildSpec(name=name, actor=actor_cls, **fields)
        problems = [
            f"{field}: {message}"
            for field, message in check_actor(spec.actor, spec.args, spec.checkpoint)
        ]
        if problems:
            raise TopologyError([f"spawn {name!r}: {problem}" for problem in problems])
        child = await self.root.add_child(spec)
        assert isinstance(child, ActorCell)
        return child.ref

    async def stop(self, path: str) -> None:
        """Stop the child at ``path`` for good, as OTP's ``terminate_child``.

        It gets its ``shutdown_timeout`` to finish its current message and run
        ``on_stop``; its queued messages become dead letters. A supervisor
        path stops that whole subtree.

        Raises:
            ActorNotFound: nothing at that path.
        """
        parent_path, _, name = path.rpartition("/")
        parent = self._supervisors.get(parent_path)
        if parent is None:
            raise ActorNotFound(f"{path!r}: not found")
        await parent.terminate_child(name)

    @property
    def dead_letters(self) -> Sequence[DeadLetter]:
        """The most recent dead letters (up to 1,000), oldest first."""
        return self._dead_letters

    def tree(self) -> TreeNode:
        """A snapshot of the supervision tree with each node's statistics."""
        return self._node(self.root)

    def resource_tree(self) -> TreeNode | None:
        """A snapshot of the resources' supervisor and its resources (None
        when the topology declares none)."""
        return None if self.resources is None else self._node(self.resources)

    def progress(self) -> Progress:
        """Items done out of total (as the actors count them with
        ``ctx.progress``) and the actors handling a message now."""
        working = []
        for cell in self._cells.values():
            busy = cell.in_flight or (cell.status == "running" and not cell.waiting)
            if busy:
                working.append((cell.path, max(cell.in_flight, 1)))
        return Progress(self.items_done, self.items_total, self.items_retried, tuple(working))

    def cells(self) -> list[ActorCell]:
        """Every actor cell of the system (resources included), now."""
        return list(self._cells.values())

    def children_and_supervisors(self) -> list[Child]:
        """Every actor cell and every supervisor, now."""
        return [*self._supervisors.values(), *self._cells.values()]

    def state(self) -> str:
        """``starting``, ``running`` (the root supervisor runs), ``stopping``,
        ``stopped`` or ``failed`` (a top supervisor gave up)."""
        root = self.root
        if self.failure is not None:
            return "failed"
        if root.status == "stopped" and (
            self.resources is None or self.resources.status == "stopped"
        ):
            return "stopped"
        if root.status == "stopped":
            return "stopping"  # the resources stop after the agents
        if root.stopping or self._body.cancel_called:
            return "stopping"
        return "running" if root.status == "running" else "starting"

    def healthy(self) -> bool:
        """Whether the root supervisor runs (not starting, stopping or failed)."""
        return self.state() == "running"

    def _node(self, node: Child) -> TreeNode:
        if isinstance(node, Supervisor):
            children = tuple(self._node(child) for child in node.children)
            return TreeNode(node.path, "supervisor", node.statistics(), children)
        return TreeNode(node.path, "actor", node.statistics())

    def _dead_letter(self, path: str, message: object, reason: str) -> None:
        self._dead_letters.append(DeadLetter(path, message, reason))
        self.dead_letter_count += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1
        logger.warning(
            "dead_letter", path=path, message_type=type(message).__qualname__, reason=reason
        )

    # -- topics ------------------------------------------------------------------

    def _subscribe(self, topic: str, cell: ActorCell, message_type: type) -> None:
        self._topics.setdefault(topic, {}).setdefault(cell, set()).add(message_type)

    def _unsubscribe(self, topic: str, cell: ActorCell, message_type: type | None) -> None:
        subscribers = self._topics.get(topic, {})
        types = subscribers.get(cell)
        if types is None:
            return
        if message_type is None:
            types.clear()
        else:
            types.discard(message_type)
        if not types:
            del subscribers[cell]

    def _unsubscribe_all(self, cell: ActorCell) -> None:
        for subscribers in self._topics.values():
            subscribers.pop(cell, None)

    async def _publish(self, topic: str, event: object) -> None:
        for cell, types in list(self._topics.get(topic, {}).items()):
            if isinstance(event, tuple(types)):
                await cell.deliver(event)

    # -- lifetime -----------------------------------------------------------------

    async def _run_supervisor(
        self, supervisor: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the root or the resources' supervisor for the system's lifetime."""
        try:
            error = await supervisor.run_incarnation(task_status)
        finally:
            supervisor.status = "stopped"
            if supervisor is self.root and self.resources is not None:
                self.resources.request_stop()  # the agents have stopped: now their resources
        if error is not None:
            # Nothing restarts the children now: their queued messages become
            # dead letters and their askers get ActorStopped.
            supervisor.retire_children()
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        """A top supervisor gave up: the block is cancelled and the rest of the
        tree stops gracefully."""
        if self.failure is None:
            self.failure = error
        self._body.cancel()
        self.root.request_stop()
        if self.resources is not None:
            self.resources.request_stop()

    def is_idle(self) -> bool:
        """Every mailbox empty, no handler running, no restart or one-shot timer pending."""
        return self.root.is_idle() and (self.resources is None or self.resources.is_idle())

    async def wait_until_idle(self, poll: float = _IDLE_POLL) -> None:
        """Return once the system has been idle at two polls in a row, or the root stopped."""
        streak = 0
        while streak < 2:
            await trio.sleep(poll)
            if self.root.done.is_set():
                return
            streak = streak + 1 if self.is_idle() else 0


def _resources_spec(topology: Topology) -> SupervisorSpec:
    """The supervisor of the resources: one_for_one, restarts after a short
    backoff, and an intensity that lets each resource's own breaker (its
    ``circuit_breaker``) open before the supervisor gives up."""
    children: list[ChildSpec | SupervisorSpec] = [
        resource_child_spec(name, spec) for name, spec in topology.resources.items()
    ]
    failures = sum(
        spec.circuit_breaker.failures if spec.circuit_breaker is not None else 5
        for spec in topology.resources.values()
    )
    return SupervisorSpec(
        name=RESOURCES_SUPERVISOR,
        strategy="one_for_one",
        max_restarts=failures + len(children),
        within=60.0,
        backoff=BackoffSpec(initial=0.1, max=10.0),
        children=children,
    )


def _topology_of(topology: Topology | str | os.PathLike[str] | None) -> Topology:
    if topology is None:
        return Topology()
    if isinstance(topology, Topology):
        return topology
    return load_topology(topology)


def _check_store(store: object) -> CheckpointStore | str | None:
    if isinstance(store, str):
        open_store(store)  # a bad URL fails here, before anything starts
    elif store is not None and not isinstance(store, CheckpointStore):
        raise TypeError(f"store must be a URL or a CheckpointStore, got {store!r}")
    elif isinstance(store, PostgresStore) and trio_asyncio.current_loop.get() is None:
        raise ValueError(
            "a PostgresStore object runs on a trio-asyncio loop that must outlive it: "
            "open the store inside `async with trio_asyncio.open_loop():` around "
            "open_system, or pass its URL and open_system runs the loop"
        )
    return store


def _check_runnable(topology: Topology) -> None:
    """What the YAML loader checks beyond types, for topologies built in code."""
    problems = [f"{path[2:]}: {message}" for path, message in unsupported(topology)]
    problems += [
        f"{path}: {field}: {message}"
        for path, spec in iter_children(topology.supervisor)
        for field, message in check_actor(spec.actor, spec.args, spec.checkpoint)
    ]
    if problems:
        raise TopologyError(problems)


async def _open_services(
    stack: contextlib.AsyncExitStack,
    system: ActorSystem,
    registry: CollectorRegistry | None,
    listen: Listen | None,
) -> None:
    """What the tree needs around it, closed after it: an asyncio loop for
    asyncpg, the metrics in the registry, the metrics endpoint."""
    if system.uses_asyncio() and trio_asyncio.current_loop.get() is None:
        # asyncpg runs on asyncio: give it a loop inside this trio run,
        # outliving the store and the resources it serves (unless the
        # caller runs one).
        await stack.enter_async_context(trio_asyncio.open_loop())
    if registry is None and listen is not None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    system.registry = registry
    if registry is not None:
        collector = RuntimeCollector(system)
        registry.register(collector)
        stack.callback(registry.unregister, collector)
    if listen is not None:
        assert registry is not None
        system.endpoint_url = await stack.enter_async_context(
            open_endpoint(system, registry, listen)
        )
        logger.info("metrics_listening", url=system.endpoint_url, loopback=listen.loopback)


@asynccontextmanager
async def open_system(
    topology: Topology | str | os.PathLike[str] | None = None,
    *,
    store: object = None,
    registry: object = None,
) -> AsyncIterator[ActorSystem]:
    """Start a supervision tree; leaving the block stops it gracefully.

    Children start in order before the block is entered and stop in reverse
    order when it is left (each within its ``shutdown_timeout``). If the root
    supervisor gives up, the block is cancelled and ``SupervisorGaveUp`` is
    raised out of it.

    Args:
        topology: a ``Topology``, a path to a YAML file, or None for an empty
            ``one_for_one`` root named ``root``.
        store: where checkpoints go: a URL (``memory://``,
            ``sqlite:///path.db``) or a ``CheckpointStore``; by default the
            topology's ``store``, else ``sqlite:///.runtime/<system>.db``.
            Opened on first use (by an actor whose ``checkpoint`` is not
            ``off``) and closed when the system stops, unless it was passed
            in as an object.
        registry: a prometheus ``CollectorRegistry`` to register the
            system's metrics in (for the duration of the block); with
            ``metrics.listen`` and no registry, the endpoint serves a new
            registry with the system's, the process's and the platform's
            metrics.

    Raises:
        TopologyError: the topology is invalid; nothing was started.
        ValueError: ``store`` is not a known store URL.
        OSError: ``metrics.listen`` cannot be bound.
        SupervisorGaveUp: the root supervisor exceeded its restart intensity.
    """
    spec = _topology_of(topology)
    _check_runnable(spec)
    listen = None if spec.metrics.listen is None else parse_listen(spec.metrics.listen)
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus CollectorRegistry, got {registry!r}")
    system = ActorSystem(
        spec, _check_store(store), metrics=registry is not None or listen is not None
    )
    root, resources = system.root, system.resources

    body_error: BaseException | None = None
    body = system._body
    async with contextlib.AsyncExitStack() as stack:
        await _open_services(stack, system, registry, listen)
        try:
            async with trio.open_nursery() as nursery:
                if resources is not None:
                    await nursery.start(system._run_supervisor, resources)
                if system.failure is None:
                    await nursery.start(system._run_supervisor, root)
                with body:
                    if system.failure is None:
                        logger.info("system_started", system=system.name)
                        try:
                            yield system
                        except trio.Cancelled:
                            raise
                        except BaseException as exc:
                            # Re-raised below as itself, not wrapped in the nursery's group.
                            body_error = exc
                        finally:
                            logger.info("system_stopping", system=system.name)
                            root.request_stop()
        finally:
            await system._close_store()
    if system.failure is not None:
        raise system.failure
    logger.info("system_stopped", system=system.name, dead_letters=system.dead_letter_count)
    if body_error is not None:
        raise body_error
