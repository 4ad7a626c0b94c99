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
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from ._actor import Actor
from ._backends import Backends, backend_kind
from ._budget import BudgetStatistics, Ledger, UsageStatistics
from ._cell import ActorCell
from ._checkpoint import (
    CheckpointCounters,
    CheckpointStatistics,
    CheckpointStore,
    PostgresStore,
    default_store_url,
    open_store,
)
from ._durable_cell import DurableCell
from ._host import Child
from ._limiter import Limiter
from ._lock_backends import open_lock_backend
from ._locks import Lease, LockManager, LockStatistics
from ._logging import get_logger
from ._pool import PoolStatistics, PoolSupervisor
from ._ref import ActorRef, ActorStatistics
from ._resource import (
    RESOURCES_SUPERVISOR,
    ResourceCell,
    ResourceStatistics,
    resource_child_spec,
)
from ._specs import BackoffSpec, ChildSpec, PoolSpec, SupervisorSpec, Topology, renamed
from ._supervisor import Supervisor
from ._topology import check_actor, iter_children, load_topology, unsupported
from ._tracing import context_now, make_tracer
from .errors import ActorNotFound, ActorStopped, TopologyError
from .workflow import Workflow, WorkflowResult, WorkflowRuns, WorkflowStatistics, from_template
from .workflow import run as run_workflow

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
        runs: the workflow runs in flight, each as ``(workflow/run_id,
            steps ended, steps)``.
    """

    done: int
    total: int
    retried: int
    working: tuple[tuple[str, int], ...]
    runs: tuple[tuple[str, int, int], ...] = ()


@attrs.frozen
class TreeNode:
    """One node of ``ActorSystem.tree()``.

    Attributes:
        path: the node's path.
        kind: ``actor`` or ``supervisor`` (a pool's supervisor too).
        stats: its statistics (a pool's: its workers' mailboxes and asks summed).
        children: the nodes below it, in start order.
        pool: a pool's routing, workers and sums; None for any other node.
    """

    path: str
    kind: str
    stats: ActorStatistics
    children: tuple[TreeNode, ...] = ()
    pool: PoolStatistics | None = None


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
        # Leases of ctx.lock/system.lock; the backend connects on first use.
        backend = open_lock_backend(system.locks_url, system.name, self.backends)
        self.locks = LockManager(backend, system=system.name)
        # Tokens and costs by resource and agent, and the budgets: the
        # system's, so a resource's restart forgets none of it.
        self.ledger = Ledger(system.name, system.topology)
        # A cluster node's fencing of checkpoint writes (see join_cluster).
        self.store_wrapper: Callable[[CheckpointStore], CheckpointStore] | None = None
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
        # A cluster node's publisher of its topics' events to the other nodes.
        self.topic_relay: Callable[[str, object], Awaitable[None]] | None = None
        self.pools: dict[str, PoolSupervisor] = {}
        # Each supervisor's spec by path, from before it builds its children:
        # a pool takes its restart policy from its parent's.
        self.policies: dict[str, SupervisorSpec] = {}
        self.tagged: dict[str, dict[str, ActorCell | PoolSupervisor]] = {}  # tag -> path -> node

    # -- the tree ----------------------------------------------------------------

    def build(self, spec: ChildSpec | SupervisorSpec, prefix: str) -> Child:
        """Make the cell or supervisor ``spec`` describes, registered at its path."""
        path = f"{prefix}{spec.name}"
        if isinstance(spec, SupervisorSpec):
            self.policies[path] = spec
            supervisor = Supervisor(spec, path, self)
            self.supervisors[path] = supervisor
            return supervisor
        node: ActorCell | PoolSupervisor
        resource = self.system.topology.resources.get(spec.name)
        if spec.pool is not None:
            node = PoolSupervisor(spec, path, self, self.policies.get(prefix[:-1]))
            self.supervisors[path] = self.pools[path] = node
        elif prefix == f"{RESOURCES_SUPERVISOR}/" and resource is not None:
            node = self.cells[path] = ResourceCell(spec, path, self, resource)
        elif spec.mailbox.durable:
            node = self.cells[path] = DurableCell(spec, path, self)
        else:
            node = self.cells[path] = ActorCell(spec, path, self)
        for tag in spec.tags:
            self.tagged.setdefault(tag, {})[path] = node
        return node

    def forget(self, child: Child) -> None:
        """Unregister a child removed from the tree, and its subtree."""
        if isinstance(child, Supervisor):
            self.supervisors.pop(child.path, None)
            self.policies.pop(child.path, None)
            self.pools.pop(child.path, None)
            for grandchild in child.children:
                self.forget(grandchild)
        elif self.cells.get(child.path) is child:
            del self.cells[child.path]
        for nodes in self.tagged.values():
            if nodes.get(child.path) is child:
                del nodes[child.path]

    def find(self, tag: str) -> list[ActorRef[Any]]:
        """The refs of the running actors and pools tagged ``tag``, in the
        order they were made (a pool's ref, not its workers')."""
        return [node.ref for node in self.tagged.get(tag, {}).values() if node.status != "stopped"]

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
            if self.store_wrapper is not None:
                self.store = self.store_wrapper(self.store)
        return self.store

    async def close_store(self) -> None:
        """Close the store, unless the caller passed it in (it is theirs to
        close), and the connections to the coordination engines."""
        with trio.CancelScope(shield=True):
            if self.store is not None and not isinstance(self.system.store, CheckpointStore):
                await self.store.aclose()
            self.store = None
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
        await self.publish_here(topic, event)
        relay = self.topic_relay
        if relay is not None:
            await relay(topic, event)

    async def publish_here(self, topic: str, event: object) -> None:
        """Deliver ``event`` to this process's subscribers of ``topic`` only."""
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
        host.policies[topology.supervisor.name] = topology.supervisor
        self.root = Supervisor(topology.supervisor, topology.supervisor.name, host)
        host.supervisors[self.root.path] = self.root
        self.failure: BaseException | None = None
        self.body = trio.CancelScope()  # open_system's block
        self._resources_stopped = trio.Event()  # the budgets' last write follows it
        # This node's part of a cluster (``_cluster.Cluster``), when the
        # topology has ``cluster:``: refs to units of other nodes come from it.
        self.cluster: Any = None
        # The spec of the first plain spawn(cls, name=...) of each class: later
        # ones reuse it under their own name instead of checking it again.
        self._spawned: dict[type, ChildSpec] = {}
        self.workflow_runs = WorkflowRuns()

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
        """Whether the store, the lock backend or a resource needs an asyncio
        loop (asyncpg, nats-py, through trio-asyncio): a PostgreSQL store, an
        asyncio kind, or a resource with shared limits."""
        if any(
            spec.kind.uses_asyncio or spec.shared  # type: ignore[attr-defined]
            for spec in self.topology.resources.values()
        ):
            return True
        if backend_kind(self.locks_url) in ("postgresql", "nats"):
            return True
        return isinstance(self.store, PostgresStore) or self.store_url.startswith(
            ("postgresql://", "postgres://")
        )

    def checkpoint_store(self) -> CheckpointStore:
        """The checkpoint store, made on first use (it connects on first use too)."""
        return self._host.checkpoint_store()

    # -- locks -------------------------------------------------------------------

    @property
    def locks_url(self) -> str:
        """Where locks keep their leases: the topology's ``locks``, else the
        checkpoint store's URL."""
        return self.topology.locks if self.topology.locks is not None else self.store_url

    @property
    def lock_manager(self) -> LockManager:
        """The system's locks (``open_system`` runs their renewals)."""
        return self._host.locks

    def lock(
        self, name: str, ttl: float = 30.0, wait_timeout: float | None = None
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold the lock ``name`` for an ``async with`` block, as
        ``ActorContext.lock`` does, with the system's name as the holder's path.

        Raises:
            LockHeld: another holder kept it past ``wait_timeout``.
            LockLost: the lease could not be renewed: the block was cancelled.
            StoreUnavailable: the lock backend could not be reached in time.
        """
        return self._host.locks.lock(name, holder=self.name, ttl=ttl, wait_timeout=wait_timeout)

    async def is_locked(self, name: str) -> bool:
        """Whether any holder, in any process, holds ``name`` now.

        Raises:
            StoreUnavailable: the lock backend could not be reached.
        """
        return await self._host.locks.is_locked(name)

    def lock_statistics(self) -> LockStatistics:
        """The locks this system holds now, and its acquisitions so far by outcome."""
        return self._host.locks.statistics()

    async def close_store(self) -> None:
        """Close the checkpoint store if the system opened it."""
        await self._host.close_store()

    # -- the tree -------------------------------------------------------------

    def ref(self, path: str) -> ActorRef[Any]:
        """The ref of the actor at ``path`` (``root/workers/reviewer``).

        A pool's path gives the pool's ref, which routes each message to one
        of its workers.

        Raises:
            ActorNotFound: no actor or pool at that path (a supervisor is not
                an actor).
        """
        cluster = self.cluster
        if cluster is not None:
            routed: ActorRef[Any] | None = cluster.routed_ref(path)
            if routed is not None:
                return routed  # wherever its unit runs now
        cell = self._host.cells.get(path)
        if cell is None:
            pool = self._host.pools.get(path)
            if pool is not None:
                return pool.ref
            if self.cluster is not None and path not in self._host.supervisors:
                ref: ActorRef[Any] = self.cluster.ref(path)  # on another node
                return ref
            what = "a supervisor, not an actor" if path in self._host.supervisors else "not found"
            raise ActorNotFound(f"{path!r}: {what}")
        return cell.ref

    def local_ref(self, path: str) -> ActorRef[Any] | None:
        """The ref of the actor or pool at ``path`` if it runs in this
        process, else None."""
        cell = self._host.cells.get(path)
        if cell is None:
            pool = self._host.pools.get(path)
            return None if pool is None else pool.ref
        return cell.ref

    def join_cluster(
        self, cluster: Any, fence: Callable[[CheckpointStore], CheckpointStore]
    ) -> None:
        """Make this system a cluster node: ``ref`` reaches the actors of
        other nodes through ``cluster``, and the checkpoint store is used
        through ``fence(store)`` (before its first use)."""
        self.cluster = cluster
        self._host.store_wrapper = fence

    def relay_topics(self, relay: Callable[[str, object], Awaitable[None]] | None) -> None:
        """Have ``relay(topic, event)`` called after each publish's local
        delivery (a cluster node sends the event to the other nodes)."""
        self._host.topic_relay = relay

    async def publish_here(self, topic: str, event: object) -> None:
        """Deliver ``event`` to this process's subscribers of ``topic`` only
        (an event another node published)."""
        await self._host.publish_here(topic, event)

    def topic_subscribers(self, topic: str) -> dict[type[Actor[Any]], set[type]]:
        """The actor classes subscribed to ``topic`` in this process, and the
        event types each subscribed for."""
        found: dict[type[Actor[Any]], set[type]] = {}
        for cell, types in self._host.topics.get(topic, {}).items():
            found.setdefault(cell.actor_cls, set()).update(types)
        return found

    def record_dead_letter(self, path: str, message: object, reason: str) -> None:
        """A message received for ``path`` that it refused (see ``DeadLetter``)."""
        self._host.dead_letter(path, message, reason)

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
        (see ``ResourceCell.reconfigure``). A pool's new ``size`` is applied
        live, in the background (as ``resize``); its other pool settings
        take effect at the next start. Resources added or removed, and
        other changes to the supervision tree, the store or metrics, take
        effect at the next start; they are reported, not applied.

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
        changes += self._reload_pools(new.supervisor)
        sizes = {path: spec.pool for path, spec in iter_children(new.supervisor) if spec.pool}
        supervisor = _with_pools(self.topology.supervisor, sizes)
        for field in ("system", "supervisor", "store", "metrics", "locks"):
            running = supervisor if field == "supervisor" else getattr(self.topology, field)
            if getattr(new, field) != running:
                changes.append(f"{field}: changed: not applied until the next start")
        self.topology = attrs.evolve(self.topology, resources=resources, supervisor=supervisor)
        logger.info("topology_reloaded", changes=changes)
        return changes

    def _reload_pools(self, new: SupervisorSpec) -> list[str]:
        """Start resizing each running pool whose ``size`` changed in ``new``."""
        changes = []
        for path, spec in iter_children(new):
            pool = self._host.pools.get(path)
            if spec.pool is None or pool is None or spec.pool.size == pool.size:
                continue
            try:
                pool.request_resize(spec.pool.size)
            except ActorStopped:
                changes.append(f"{path}: pool size: changed: the pool is not running")
                continue
            changes.append(f"{path}: pool size {pool.size} -> {spec.pool.size}: resizing")
        return changes

    def resource_statistics(self) -> dict[str, ResourceStatistics]:
        """Each resource's limiter, counters and backend figures, by name."""
        return {
            cell.name: cell.resource_statistics()
            for cell in self._host.cells.values()
            if isinstance(cell, ResourceCell)
        }

    def usage_statistics(self) -> list[UsageStatistics]:
        """What the requests to resources cost so far (tokens, and dollars
        where ``pricing`` names the model), by resource and asking agent.

        Agents are paths the topology declares: an actor it does not
        declare (spawned at run time) counts under its nearest declared
        ancestor, a request from outside every actor under ``(system)``.
        Kept for the system's lifetime; a resource's restart keeps it.
        """
        return self._host.ledger.usage()

    def budget_statistics(self) -> dict[str, BudgetStatistics]:
        """Each budget's spending and limits in its current window, by scope
        (``resources/<name>`` or a supervisor's path)."""
        return self._host.ledger.statistics()

    async def run_ledger(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """With budgets: read their spending from the store, report started,
        then write it back every ``FLUSH_INTERVAL`` until the resources have
        stopped, and once more then. Without budgets, return at once."""
        ledger = self._host.ledger
        if not ledger.budgets:
            task_status.started()
            return
        await ledger.run(self.checkpoint_store(), self._resources_stopped, task_status)

    async def spawn(
        self,
        actor_cls: type[Actor[Any]] | str,
        *,
        name: str,
        parent: str | None = None,
        **fields: Any,
    ) -> ActorRef[Any]:
        """Start a new actor as the last child of the supervisor at ``parent``
        (the root supervisor when None).

        ``fields`` are the other ``ChildSpec`` fields (``restart``,
        ``mailbox``, ``args``, ``tags``, ``pool``, ...): with ``pool`` the
        child is a pool and its ref routes to its workers. Returns once its
        ``on_start`` has run (every worker's, for a pool).

        Raises:
            TopologyError: the spec is invalid or the actor cannot run with
                it (a ``ValueError``, as are bad field values).
            ValueError: a running child has that name already, or ``parent``
                is an actor, a pool or the resources' supervisor.
            ActorNotFound: no supervisor at ``parent``.
        """
        supervisor = self._parent(parent)
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
        child = await supervisor.add_child(spec)
        assert isinstance(child, (ActorCell, PoolSupervisor))
        return child.ref

    def _parent(self, path: str | None) -> Supervisor:
        """The supervisor ``spawn`` adds under.

        Raises:
            ActorNotFound, ValueError: as ``spawn``.
        """
        if path is None:
            return self.root
        host = self._host
        supervisor = host.supervisors.get(path)
        if supervisor is None:
            if path in host.cells:
                raise ValueError(
                    f"spawn(parent={path!r}): that is an actor, not a supervisor; "
                    "give the path of a supervisor (a children: entry)"
                )
            known = ", ".join(sorted(p for p in host.supervisors if p not in host.pools))
            raise ActorNotFound(
                f"spawn(parent={path!r}): no supervisor at that path; supervisors: {known}"
            )
        if isinstance(supervisor, PoolSupervisor):
            raise ValueError(
                f"spawn(parent={path!r}): that is a pool; its workers are all alike: "
                f"grow it with system.resize({path!r}, n)"
            )
        if supervisor is self.resources:
            raise ValueError(
                f"spawn(parent={path!r}): the resources' supervisor holds only the "
                "topology's resources"
            )
        return supervisor

    async def resize(self, path: str, size: int) -> None:
        """Grow or shrink the pool at ``path`` to ``size`` workers; returns once done.

        New workers take routes once started. Removed workers (the
        highest-numbered) take no new route at once, handle every message
        already queued for them, then stop: a resize loses no message.

        Raises:
            ActorNotFound: no pool at ``path``.
            ValueError: ``size`` is less than 1.
            ActorStopped: the pool is not running.
        """
        pool = self._pool(path)
        if pool.status not in ("running", "starting"):
            raise ActorStopped(f"pool {path} is not running")
        await pool.resize(size)

    def _pool(self, path: str) -> PoolSupervisor:
        pool = self._host.pools.get(path)
        if pool is None:
            known = ", ".join(sorted(self._host.pools)) or "none"
            raise ActorNotFound(f"{path!r}: no pool at that path; pools: {known}")
        return pool

    def find(self, tag: str) -> list[ActorRef[Any]]:
        """The refs of the running actors and pools whose spec has ``tag`` in
        its ``tags``, in the order they were made. A tagged pool is found as
        its pool ref (its workers carry no tags); an actor stopped for good
        is not found."""
        return self._host.find(tag)

    def pool_statistics(self) -> dict[str, PoolStatistics]:
        """Each pool's routing, workers and sums, by path."""
        return {path: pool.pool_statistics() for path, pool in self._host.pools.items()}

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

    async def restart(self, path: str) -> None:
        """Restart the actor (or the subtree of the supervisor) at ``path``
        now, as an operator asks: see ``Supervisor.restart_child``. Its
        incarnation goes up by one, its queued messages are kept and its
        circuit is closed. Returns once the new incarnation has started.

        Raises:
            ActorNotFound: nothing at that path, or its supervisor is not running.
            ActorStopped: it was stopped for good.
            ValueError: ``path`` is a top supervisor (stop the system instead).
        """
        parent_path, _, name = path.rpartition("/")
        if not parent_path:
            raise ValueError(f"{path!r} is a top supervisor: it is not restarted alone")
        parent = self._host.supervisors.get(parent_path)
        if parent is None:
            raise ActorNotFound(f"{path!r}: not found")
        await parent.restart_child(name)

    async def reset_breaker(self, path: str) -> None:
        """Close the circuit of the actor at ``path`` now and forget its
        crashes in a row; an actor whose circuit is open is restarted at
        once (``restart``) instead of waiting for its half-open trial. For a
        resource (``resources/<name>``), its limiter's breaker is closed too.

        Raises:
            ActorNotFound: no actor at that path.
            ActorStopped: it was stopped for good.
        """
        cell = self._host.cells.get(path)
        if cell is None:
            raise ActorNotFound(f"{path!r}: no actor at that path")
        if isinstance(cell, ResourceCell):
            cell.limiter.reset_breaker()
        if cell.status == "circuit_open":
            await self.restart(path)
            return
        cell.reset_breaker()
        logger.info("breaker_reset", path=path)

    def pause_resource(self, name: str, seconds: float) -> None:
        """Admit no request to the resource ``name`` for ``seconds`` (its
        requests in flight go on); a longer pause already set is kept.

        Raises:
            ActorNotFound: no running resource of that name.
            ValueError: ``seconds`` is not above 0.
        """
        if not seconds > 0:
            raise ValueError(f"seconds: expected a number above 0, got {seconds!r}")
        self._resource_limiter(name).pause(seconds)

    def resume_resource(self, name: str) -> None:
        """End a pause of the resource ``name`` now (one from
        ``pause_resource`` or from a backend's ``Retry-After``).

        Raises:
            ActorNotFound: no running resource of that name.
        """
        self._resource_limiter(name).resume()

    def _resource_limiter(self, name: str) -> Limiter:
        cell = self._resource_cell(name)
        if cell is None:
            self.resource(name)  # raises the ActorNotFound that says why
        assert cell is not None
        return cell.limiter

    async def resume_workflow(self, workflow: str, run_id: str) -> WorkflowResult:
        """Run again the run ``run_id`` of ``workflow`` that this system ran
        (with the same definition and inputs): the steps that succeeded then
        are not run again (see ``run_workflow``).

        Raises:
            KeyError: this system has not run that run (since it started).
            ValueError, ActorNotFound, CheckpointConflict, StoreUnavailable:
                as ``run_workflow``.
        """
        definition = self.workflow_runs.definitions.get((workflow, run_id))
        if definition is None:
            raise KeyError(f"workflow {workflow!r} run {run_id!r}: not run by this system")
        return await self.run_workflow(definition, run_id=run_id)

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
        return Progress(
            host.items_done,
            host.items_total,
            host.items_retried,
            tuple(working),
            self.workflow_runs.progress(),
        )

    # -- workflows ----------------------------------------------------------------

    def workflow(self, name: str, /, **inputs: Any) -> Workflow:
        """The workflow of the topology's template ``name`` for ``inputs``.

        Messages that use no step's result are built now, each field
        structured into its type (``"42"`` for an ``int`` field is 42).

        Raises:
            KeyError: the topology has no workflow ``name``.
            ValueError: an input is missing or unknown, or does not fit a
                field of a message.
        """
        spec = self.topology.workflows.get(name)
        if spec is None:
            declared = ", ".join(sorted(self.topology.workflows)) or "none"
            raise KeyError(f"no workflow named {name!r}; the topology declares: {declared}")
        return from_template(name, spec, inputs)

    async def run_workflow(
        self,
        workflow: Workflow | str,
        *,
        run_id: str | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> WorkflowResult:
        """Run ``workflow`` (a ``Workflow``, or the name of a topology
        template with its ``inputs``) and return how it ended.

        Its journal is kept in the checkpoint store at
        ``workflow/<name>/<run_id>``; with the ``run_id`` of an earlier run,
        the steps that succeeded then are not run again. Without one, a new
        id is made (``result.run_id``). Cancellation cancels the steps
        running; those that ended are in the journal.

        Raises:
            ActorNotFound: a step names an agent that does not exist.
            ValueError: a bad ``run_id``, the run is already running here, or
                a template's inputs do not fit (see ``workflow``).
            CheckpointConflict: another process wrote the same run's journal.
            StoreUnavailable: the store cannot be reached.
        """
        if isinstance(workflow, str):
            workflow = self.workflow(workflow, **(inputs or {}))
        elif inputs:
            raise ValueError("inputs are for a template name; a Workflow has its messages")
        return await run_workflow(
            workflow,
            run_id,
            ref=self.ref,
            store=self.checkpoint_store(),
            runs=self.workflow_runs,
        )

    def workflow_statistics(self) -> WorkflowStatistics:
        """The workflow runs in flight, the last ones, and their counters."""
        return self.workflow_runs.statistics()

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
            if supervisor is self.resources:
                self._resources_stopped.set()
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
        ``ctx.schedule`` timer pending, no task running in an actor's
        ``ctx.nursery`` and no workflow run in flight. It does not wait.

        Not work: ``schedule_every`` timers, the runtime's own tasks, a
        resource's tasks, and an open circuit (its half-open trial is not
        waited for: the actor counts as idle, see ``ActorStatistics.breaker``).
        """
        return (
            not self.workflow_runs.running
            and self.root.is_idle()
            and (self.resources is None or self.resources.is_idle())
        )

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
        pool = node.pool_statistics() if isinstance(node, PoolSupervisor) else None
        return TreeNode(node.path, "supervisor", node.statistics(), children, pool)
    return TreeNode(node.path, "actor", node.statistics())


def _with_pools(
    spec: SupervisorSpec, pools: dict[str, PoolSpec], prefix: str = ""
) -> SupervisorSpec:
    """``spec`` with the pools at the paths of ``pools`` resized to theirs
    (what runs after a reload resized them)."""
    base = f"{prefix}{spec.name}/"
    children: list[ChildSpec | SupervisorSpec] = []
    for child in spec.children:
        path = f"{base}{child.name}"
        if isinstance(child, SupervisorSpec):
            children.append(_with_pools(child, pools, base))
        elif child.pool is not None and path in pools:
            pool = attrs.evolve(child.pool, size=pools[path].size)
            children.append(attrs.evolve(child, pool=pool))
        else:
            children.append(child)
    return attrs.evolve(spec, children=children)


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
