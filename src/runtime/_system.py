"""The actor system: the tree, the path registry, dead letters and topics.

``ActorSystem`` is the public face of a running tree. What the tree's cells
and supervisors need of the system (the ``Host`` protocol) is implemented by
``SystemHost``, which the system owns: the lower layers never see the
system's own attributes. ``open_system`` (in ``_services``) builds one and
runs it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ._actor import Actor
from ._backends import Backends
from ._cell import ActorCell
from ._checkpoint import (
    CheckpointCounters,
    CheckpointStatistics,
    CheckpointStore,
    PostgresStore,
    default_store_url,
    open_store,
)
from ._host import Child
from ._logging import get_logger
from ._ref import ActorRef, ActorStatistics
from ._resource import (
    RESOURCES_SUPERVISOR,
    ResourceCell,
    ResourceStatistics,
    resource_child_spec,
)
from ._specs import BackoffSpec, ChildSpec, SupervisorSpec, Topology, renamed
from ._supervisor import Supervisor
from ._topology import check_actor, iter_children, load_topology, unsupported
from ._tracing import context_now, make_tracer
from .errors import ActorNotFound, TopologyError

__all__ = ["ActorSystem", "DeadLetter", "Progress", "SystemHost", "TreeNode"]

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
    """Work items counted by the actors, and who works now.

    Attributes:
        done, total, retried: items finished, expected, and retried so far:
            what ``ctx.progress`` added, plus each actor's own counts as it
            last set them with ``ctx.set_progress``.
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


class SystemHost:
    """The system as its cells and supervisors see it (the ``Host`` protocol):
    the path registry, dead letters, topics, progress counts and the store."""

    def __init__(self, system: ActorSystem, *, timed: bool) -> None:
        self.system = system
        self.name = system.name
        self.timed = timed  # whether handling times are kept (metrics are on)
        # OpenTelemetry, with metrics.tracing: the tracer, and the sender's context.
        self.tracer: Any = make_tracer() if system.topology.metrics.tracing else None
        self.trace_context = context_now
        self.checkpoints = CheckpointCounters()
        # Connections to PostgreSQL and NATS for locks and shared limits,
        # made on first use; the name tells this process apart on the server.
        self.backends = Backends(name=f"{system.name}-{os.getpid()}")
        self.store: CheckpointStore | None = None  # opened on first use
        self.cells: dict[str, ActorCell] = {}
        self.supervisors: dict[str, Supervisor] = {}
        self.dead_letters: deque[DeadLetter] = deque(maxlen=DEAD_LETTERS_KEPT)
        self.dead_letter_count = 0
        self.dead_letter_reasons: dict[str, int] = {}
        # Work items: the sums of what ctx.progress added and of each actor's
        # own counts, which ctx.set_progress sets (by path: total, done, retried).
        self.items_done = self.items_total = self.items_retried = 0
        self.progress_by_path: dict[str, tuple[int, int, int]] = {}
        self.topics: dict[str, dict[ActorCell, set[type]]] = {}

    # -- the tree ----------------------------------------------------------------

    def build(self, spec: ChildSpec | SupervisorSpec, prefix: str) -> Child:
        """Make the cell or supervisor ``spec`` describes, registered at its path."""
        path = f"{prefix}{spec.name}"
        if isinstance(spec, SupervisorSpec):
            supervisor = Supervisor(spec, path, self)
            self.supervisors[path] = supervisor
            return supervisor
        resource = self.system.topology.resources.get(spec.name)
        if prefix == f"{RESOURCES_SUPERVISOR}/" and resource is not None:
            cell: ActorCell = ResourceCell(spec, path, self, resource)
        else:
            cell = ActorCell(spec, path, self)
        self.cells[path] = cell
        return cell

    def forget(self, child: Child) -> None:
        """Unregister a child removed from the tree, and its subtree."""
        if isinstance(child, Supervisor):
            self.supervisors.pop(child.path, None)
            for grandchild in child.children:
                self.forget(grandchild)
        elif self.cells.get(child.path) is child:
            del self.cells[child.path]

    def ref(self, path: str) -> ActorRef[Any]:
        return self.system.ref(path)

    def resource(self, name: str) -> ActorRef[Any]:
        return self.system.resource(name)

    # -- checkpoints -------------------------------------------------------------

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store, made on first use (it connects on first use too)."""
        if self.store is None:
            wanted = self.system.store
            self.store = (
                wanted if isinstance(wanted, CheckpointStore) else open_store(self.system.store_url)
            )
        return self.store

    async def close_store(self) -> None:
        """Close the store, unless the caller passed it in (it is theirs to
        close), and the connections to the coordination engines."""
        with trio.CancelScope(shield=True):
            if self.store is not None and not isinstance(self.system.store, CheckpointStore):
                await self.store.aclose()
            await self.backends.aclose()

    # -- dead letters, progress ----------------------------------------------------

    def dead_letter(self, path: str, message: object, reason: str) -> None:
        self.dead_letters.append(DeadLetter(path, message, reason))
        self.dead_letter_count += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1
        logger.warning(
            "dead_letter", path=path, message_type=type(message).__qualname__, reason=reason
        )

    def count_progress(self, total: int, done: int, retried: int) -> None:
        self.items_total += total
        self.items_done += done
        self.items_retried += retried

    def set_progress(
        self, path: str, total: int | None, done: int | None, retried: int | None
    ) -> None:
        old_total, old_done, old_retried = self.progress_by_path.get(path, (0, 0, 0))
        new = (
            old_total if total is None else total,
            old_done if done is None else done,
            old_retried if retried is None else retried,
        )
        self.progress_by_path[path] = new
        # The sums change by the difference: system.progress() stays O(1).
        self.count_progress(new[0] - old_total, new[1] - old_done, new[2] - old_retried)

    # -- topics ------------------------------------------------------------------

    def subscribe(self, topic: str, subscriber: Any, message_type: type) -> None:
        self.topics.setdefault(topic, {}).setdefault(subscriber, set()).add(message_type)

    def unsubscribe(self, topic: str, subscriber: Any, message_type: type | None) -> None:
        subscribers = self.topics.get(topic, {})
        types = subscribers.get(subscriber)
        if types is None:
            return
        if message_type is None:
            types.clear()
        else:
            types.discard(message_type)
        if not types:
            del subscribers[subscriber]

    def unsubscribe_all(self, subscriber: Any) -> None:
        for subscribers in self.topics.values():
            subscribers.pop(subscriber, None)

    async def publish(self, topic: str, event: object) -> None:
        for cell, types in list(self.topics.get(topic, {}).items()):
            if isinstance(event, tuple(types)):
                await cell.deliver(event)


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
        self.name = topology.system
        # The store asked for: open_system's, else the topology's (None: default).
        self.store = store if store is not None else topology.store
        self.registry: Any = None  # the prometheus registry, when metrics are on
        self.endpoint_url: str | None = None  # the metrics endpoint's, when serving
        self._host = host = SystemHost(self, timed=metrics)
        # Resources first: their supervisor starts before the root's and stops after it.
        self.resources: Supervisor | None = None
        if topology.resources:
            self.resources = Supervisor(_resources_spec(topology), RESOURCES_SUPERVISOR, host)
            # A resource that cannot start yet (its backend is down) does not
            # hold up the system: it is restarted in the background, and the
            # health endpoints say so.
            self.resources.strict_start = False
            self.resources.forgives_outages = False
            host.supervisors[RESOURCES_SUPERVISOR] = self.resources
        self.root = Supervisor(topology.supervisor, topology.supervisor.name, host)
        host.supervisors[self.root.path] = self.root
        self.failure: BaseException | None = None
        self.body = trio.CancelScope()  # open_system's block
        # The spec of the first plain spawn(cls, name=...) of each class: later
        # ones reuse it under their own name instead of checking it again.
        self._spawned: dict[type, ChildSpec] = {}

    # -- checkpoints -------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """Where checkpoints go: ``open_system``'s ``store``, else the topology's,
        else ``sqlite:///.runtime/<system>.db``."""
        store = self.store
        if store is None:
            return default_store_url(self.name)
        return store if isinstance(store, str) else store.url

    @property
    def checkpoint_stats(self) -> CheckpointCounters:
        """The running checkpoint counters (the metrics read them)."""
        return self._host.checkpoints

    def checkpoint_statistics(self) -> CheckpointStatistics:
        """Checkpoint reads, writes, bytes, time, conflicts and failures so far."""
        return self._host.checkpoints.statistics()

    def uses_asyncio(self) -> bool:
        """Whether the store or a resource needs an asyncio loop (asyncpg,
        nats-py, through trio-asyncio): a PostgreSQL store, an asyncio kind,
        or a resource with shared limits."""
        if any(
            spec.kind.uses_asyncio or spec.shared  # type: ignore[attr-defined]
            for spec in self.topology.resources.values()
        ):
            return True
        return isinstance(self.store, PostgresStore) or self.store_url.startswith(
            ("postgresql://", "postgres://")
        )

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store, made on first use (it connects on first use too)."""
        return self._host.checkpoint_store()

    async def close_store(self) -> None:
        """Close the checkpoint store if the system opened it."""
        await self._host.close_store()

    # -- the tree -------------------------------------------------------------

    def ref(self, path: str) -> ActorRef[Any]:
        """The ref of the actor at ``path`` (``root/workers/reviewer``).

        Raises:
            ActorNotFound: no actor at that path (a supervisor is not an actor).
        """
        cell = self._host.cells.get(path)
        if cell is None:
            what = "a supervisor, not an actor" if path in self._host.supervisors else "not found"
            raise ActorNotFound(f"{path!r}: {what}")
        return cell.ref

    def resource(self, name: str) -> ActorRef[Any]:
        """The ref of the resource ``name`` (at ``resources/<name>``).

        Raises:
            ActorNotFound: the topology declares no resource of that name.
        """
        cell = self._resource_cell(name)
        if cell is None:
            if name in self.topology.resources:
                raise ActorNotFound(
                    f"resource {name!r} was stopped for good (system.stop); "
                    "it runs again at the next start"
                )
            declared = ", ".join(sorted(self.topology.resources)) or "none"
            raise ActorNotFound(f"no resource named {name!r}; the topology declares: {declared}")
        return cell.ref

    def _resource_cell(self, name: str) -> ResourceCell | None:
        cell = self._host.cells.get(f"{RESOURCES_SUPERVISOR}/{name}")
        return cell if isinstance(cell, ResourceCell) else None

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
        new = topology_of(topology)
        check_runnable(new)
        changes: list[str] = []
        resources = dict(self.topology.resources)
        for name, spec in new.resources.items():
            cell = self._resource_cell(name)
            if cell is None:
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
            for cell in self._host.cells.values()
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
        template = (
            self._spawned.get(actor_cls) if not fields and isinstance(actor_cls, type) else None
        )
        if template is not None:
            spec = renamed(template, name)  # the same class, checked already
        else:
            spec = ChildSpec(name=name, actor=actor_cls, **fields)
            problems = [
                f"{field}: {message}"
                for field, message in check_actor(spec.actor, spec.args, spec.checkpoint)
            ]
            if problems:
                raise TopologyError([f"spawn {name!r}: {problem}" for problem in problems])
            if not fields and isinstance(actor_cls, type):
                self._spawned[actor_cls] = spec
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
        parent = self._host.supervisors.get(parent_path)
        if parent is None:
            raise ActorNotFound(f"{path!r}: not found")
        await parent.terminate_child(name)

    @property
    def dead_letters(self) -> Sequence[DeadLetter]:
        """The most recent dead letters (up to 1,000), oldest first."""
        return self._host.dead_letters

    @property
    def dead_letter_count(self) -> int:
        """Dead letters since the system started."""
        return self._host.dead_letter_count

    @property
    def dead_letter_reasons(self) -> dict[str, int]:
        """Dead letters since the system started, by reason."""
        return self._host.dead_letter_reasons

    def tree(self) -> TreeNode:
        """A snapshot of the supervision tree with each node's statistics."""
        return _node(self.root)

    def resource_tree(self) -> TreeNode | None:
        """A snapshot of the resources' supervisor and its resources (None
        when the topology declares none)."""
        return None if self.resources is None else _node(self.resources)

    def progress(self) -> Progress:
        """Items done out of total (as the actors count them with
        ``ctx.progress`` and ``ctx.set_progress``) and the actors handling a
        message now."""
        host = self._host
        working = []
        for cell in host.cells.values():
            busy = cell.in_flight or (cell.status == "running" and not cell.waiting)
            if busy:
                working.append((cell.path, max(cell.in_flight, 1)))
        return Progress(host.items_done, host.items_total, host.items_retried, tuple(working))

    def cells(self) -> list[ActorCell]:
        """Every actor cell of the system (resources included), now."""
        return list(self._host.cells.values())

    def children_and_supervisors(self) -> list[Child]:
        """Every actor cell and every supervisor, now."""
        return [*self._host.supervisors.values(), *self._host.cells.values()]

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
        if root.stopping or self.body.cancel_called:
            return "stopping"
        return "running" if root.status == "running" else "starting"

    def healthy(self) -> bool:
        """Whether the root supervisor runs (not starting, stopping or failed)."""
        return self.state() == "running"

    # -- lifetime -----------------------------------------------------------------

    async def run_supervisor(
        self, supervisor: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the root or the resources' supervisor for the system's lifetime.

        ``task_status.started()`` is called once its children have started,
        or once its start has failed (``self.failure`` then says why).
        """
        started = _StartSignal(task_status)
        error: BaseException | None = None
        try:
            error = await supervisor.run_incarnation(started)
        finally:
            supervisor.status = "stopped"
            if supervisor is self.root and self.resources is not None:
                self.resources.request_stop()  # the agents have stopped: now their resources
            if error is not None:
                # Nothing restarts the children now: their queued messages become
                # dead letters and their askers get ActorStopped.
                supervisor.retire_children()
                self.fail(error)
            if not started.called:
                started.started()  # a failed start: open_system raises self.failure

    def fail(self, error: BaseException) -> None:
        """A top supervisor gave up: the block is cancelled and the rest of the
        tree stops gracefully."""
        if self.failure is None:
            self.failure = error
        self.body.cancel()
        self.root.request_stop()
        if self.resources is not None:
            self.resources.request_stop()

    def is_idle(self) -> bool:
        """Whether nothing is left to do now: every mailbox empty, no handler
        running, no start or restart pending (backoffs included), no
        ``ctx.schedule`` timer pending and no task running in an actor's
        ``ctx.nursery``. It does not wait.

        Not work: ``schedule_every`` timers, the runtime's own tasks, a
        resource's tasks, and an open circuit (its half-open trial is not
        waited for: the actor counts as idle, see ``ActorStatistics.breaker``).
        """
        return self.root.is_idle() and (self.resources is None or self.resources.is_idle())

    async def wait_until_idle(self, poll: float = _IDLE_POLL) -> None:
        """Return once ``is_idle()`` was true at two checks in a row, ``poll``
        seconds apart (the first one ``poll`` after the call), or once the
        root supervisor has ended. Stops nothing; waits with ``trio.sleep``
        (virtual time under ``autojump_clock``). Cancellation ends the wait."""
        streak = 0
        while streak < 2:
            await trio.sleep(poll)
            if self.root.done.is_set():
                return
            streak = streak + 1 if self.is_idle() else 0


class _StartSignal:
    """Passes a ``started()`` on, and remembers whether it came."""

    def __init__(self, task_status: trio.TaskStatus[None]) -> None:
        self.task_status = task_status
        self.called = False

    def started(self, value: None = None) -> None:
        self.called = True
        self.task_status.started()


def _node(node: Child) -> TreeNode:
    if isinstance(node, Supervisor):
        children = tuple(_node(child) for child in node.children)
        return TreeNode(node.path, "supervisor", node.statistics(), children)
    return TreeNode(node.path, "actor", node.statistics())


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


def topology_of(topology: Topology | str | os.PathLike[str] | None) -> Topology:
    """A ``Topology`` as given, loaded from a file, or the empty default."""
    if topology is None:
        return Topology()
    if isinstance(topology, Topology):
        return topology
    return load_topology(topology)


def check_runnable(topology: Topology) -> None:
    """What the YAML loader checks beyond types, for topologies built in code."""
    problems = [f"{path[2:]}: {message}" for path, message in unsupported(topology)]
    problems += [
        f"{path}: {field}: {message}"
        for path, spec in iter_children(topology.supervisor)
        for field, message in check_actor(spec.actor, spec.args, spec.checkpoint)
    ]
    if problems:
        raise TopologyError(problems)
