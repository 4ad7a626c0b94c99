"""One topology on several nodes: membership, placement, leases, remote refs
(DESIGN 6.5), on NATS JetStream and PostgreSQL.

- Membership: each node puts its entry in a JetStream KV bucket whose values
  live ``lease`` seconds, and renews it every ``lease / 4``; the live nodes
  are the bucket's keys.
- Placement: each child of the root supervisor is a unit, placed on the live
  node with the highest rendezvous hash of ``(unit, node)``: a node joining
  or leaving moves only the units it gains or held.
- Leases: the node a unit is placed on creates the unit's key in a second
  bucket (values living ``lease`` seconds) and renews it by revision
  (compare-and-set). The revision of the create is the unit's fencing
  epoch: raised in PostgreSQL before the unit starts, and carried by every
  checkpoint write of the unit, which the store refuses for an older epoch.
  A renewal that fails (another node holds the key now), or no renewal for
  ``lease`` seconds, loses the unit: it is stopped here at once.
- A node that is no longer a unit's placement while the placed node is live
  stops the unit (its last checkpoint written) and deletes its lease: the
  other node takes it at its next round. A node stopped gracefully does so
  for all its units, and tells the others to look at once.
- Each held unit is served on its own subject: a request is an ask, a plain
  message a tell (``_remote``).
- Renewals (the membership entry and every lease held, written together)
  run in a task of their own on a fixed schedule, apart from the placement
  round, over a NATS connection of their own (membership, leases and
  rebalancing: the control plane): a burst of messages on the data
  connection delays neither their requests nor their replies.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._backends import (
    BackendUnavailable,
    NatsBackend,
    NatsSubscription,
    process_identity,
    redacted,
    subject_token,
)
from ._checkpoint import CheckpointStore, PostgresStore
from ._cluster_topics import ClusterTopics
from ._durable import DurableMailboxes
from ._logging import get_logger
from ._ref import ActorRef, ActorStatistics
from ._remote import (
    MOVED,
    RemoteRef,
    Request,
    decode_request,
    encode_error,
    encode_reply,
)
from ._serving import YIELD_EVERY
from ._specs import ChildSpec, ClusterSpec, SupervisorSpec, Topology
from ._system import ActorSystem
from ._topology import iter_children
from .errors import (
    ActorFailed,
    ActorNotFound,
    ActorStopped,
    ActorSystemError,
    CheckpointConflict,
    CircuitOpen,
    MailboxFull,
)

__all__ = ["Cluster", "ClusterStatistics", "default_node_name", "open_cluster", "rendezvous"]

logger = get_logger()

OUTGOING_CAPACITY = 1024
"""Remote tells queued for one unit and not published yet, at most (beyond
it ``tell_nowait`` raises ``MailboxFull``; ``tell`` publishes them at once)."""

BATCH_BYTES = 64 * 1024
"""Bytes of tells to one unit published as one NATS message, at most."""

ASK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the remote-ask latency histogram."""


def default_node_name() -> str:
    """``hostname-pid``: the node name when ``--node`` is not given."""
    return f"{socket.gethostname()}-{os.getpid()}"


def rendezvous(unit: str, nodes: list[str]) -> str | None:
    """The node ``unit`` is placed on: the highest hash of ``(unit, node)``."""
    if not nodes:
        return None
    return max(nodes, key=lambda node: hashlib.blake2b(f"{unit}\0{node}".encode()).digest())


_token = subject_token


@attrs.frozen
class Placement:
    """Where one unit runs, as this node last saw it.

    Attributes:
        unit: the root child's name.
        node: the node holding its lease; None while nobody does.
        epoch: its lease's fencing epoch (the revision of the lease's create).
    """

    unit: str
    node: str | None
    epoch: int | None


@attrs.frozen
class ClusterStatistics:
    """This node's view of the cluster.

    Attributes:
        node: this node's name.
        nodes: the live nodes, sorted.
        placement: each unit's holder and epoch.
        held: the units this node runs, with their epochs.
        failovers: units this node took over from a node that was gone.
        handovers: units this node gave to another node while running.
        lost: units this node lost (its lease taken or expired).
        renewal_gap_max: the longest time (seconds) between two renewals
            of this node's membership entry or of a lease it held: an upper
            bound of how long one went without a write (lost at ``lease``).
        remote_asks: remote asks sent from this node, by outcome.
        ask_bounds: the latency histogram's upper bounds (seconds).
        ask_buckets: cumulative counts of remote-ask latencies at or under
            each bound.
        ask_count, ask_seconds: remote asks, and their total time.
    """

    node: str
    nodes: tuple[str, ...]
    placement: tuple[Placement, ...]
    held: dict[str, int]
    failovers: int
    handovers: int
    lost: int
    renewal_gap_max: float
    remote_asks: dict[str, int]
    ask_bounds: tuple[float, ...]
    ask_buckets: tuple[int, ...]
    ask_count: int
    ask_seconds: float


@attrs.define
class _Lease:
    epoch: int
    revision: int
    renewed: float  # trio time of the last renewal that succeeded
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)  # serving the unit
    lock: trio.Lock = attrs.field(factory=trio.Lock)  # one write of the key at a time
    releasing: bool = False  # being handed over: renewed until its unit has stopped


def nats_options(spec: ClusterSpec) -> dict[str, Any]:
    """nats-py connect options from the environment variables the topology
    names (their values are secrets or paths: never logged)."""
    options: dict[str, Any] = {}

    def env(name: str | None) -> str | None:
        return os.environ.get(name) if name else None

    credentials, token = env(spec.credentials_env), env(spec.token_env)
    if credentials:
        options["user_credentials"] = credentials
    if token:
        options["token"] = token
    ca, cert, key = env(spec.tls_ca_env), env(spec.tls_cert_env), env(spec.tls_key_env)
    if ca or cert:
        import ssl  # noqa: PLC0415 (TLS only)

        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
        options["tls"] = context
    return options


class Cluster:
    """This node's part of the cluster: it holds units, serves them, and
    gives remote refs to the others'.

    Args:
        system: the system of this node (its root supervisor starts empty:
            the units this node holds are added to it).
        topology: the whole topology (every node's units).
        node: this node's name, unique in the cluster.
        hosts_units: False for a node that only sends (a client).
    """

    def __init__(
        self, system: ActorSystem, topology: Topology, node: str, *, hosts_units: bool = True
    ) -> None:
        assert topology.cluster is not None
        self.system = system
        self.spec = spec = topology.cluster
        self.node = node
        self.hosts_units = hosts_units
        self.member = process_identity()[2]
        self.root = topology.supervisor.name
        self.units: dict[str, ChildSpec | SupervisorSpec] = {
            child.name: child for child in topology.supervisor.children
        }
        self.actors: dict[str, Any] = {
            path: child.actor for path, child in iter_children(topology.supervisor)
        }
        self.system_token = _token(topology.system)
        self.base = f"{spec.prefix}.{self.system_token}"
        bucket = f"{spec.prefix}_{self.system_token}"
        self.members_bucket, self.leases_bucket = f"{bucket}_nodes", f"{bucket}_leases"
        self.backend = NatsBackend(
            spec.nats,
            name=f"{topology.system}-{node}",
            reconnect=True,
            options=nats_options(spec),
        )
        # Membership, leases and rebalancing on a connection of their own:
        # their replies never wait behind the messages of a burst.
        self.control = NatsBackend(
            spec.nats,
            name=f"{topology.system}-{node}-control",
            reconnect=True,
            options=nats_options(spec),
        )
        self.tracing = topology.metrics.tracing
        self.interval = spec.lease / 4
        self.durable = DurableMailboxes(
            system,
            self.backend,
            self.base,
            f"{bucket}_mailboxes",
            dict(iter_children(topology.supervisor)),
            direct=self._direct_ref,
            tracing=self.tracing,
        )
        self.topics = ClusterTopics(system, self.backend, self.base, self.member, self.interval)
        self.held: dict[str, _Lease] = {}
        self.placement: dict[str, Placement] = {u: Placement(u, None, None) for u in self.units}
        self.nodes: tuple[str, ...] = ()
        self.failovers = self.handovers = self.lost = 0
        self.renewal_gap_max = 0.0  # the longest time between two renewals of an entry
        self._member_renewed: float | None = None  # trio time of the last membership renewal
        self._membership = trio.Lock()  # the entry written or deleted, one at a time
        self.remote_asks: dict[str, int] = {}
        self.ask_buckets = [0] * len(ASK_BUCKETS)
        self.ask_count, self.ask_seconds = 0, 0.0
        self._refs: dict[str, RemoteRef] = {}
        self._routed: dict[str, UnitRef] = {}
        self._wake = trio.Event()
        self._leaving = False
        self._nursery: trio.Nursery | None = None
        self._batches: dict[str, _Batch] = {}  # tells queued per subject, not published yet
        self._batched = trio.Event()  # set when a batch starts: the sender task publishes
        self._flushing = trio.Lock()  # one batch published at a time, in order
        self._unyielded = 0  # tells since this node's tellers last yielded

    # -- what remote refs send through (the Transport protocol) --------------------

    async def publish(self, subject: str, data: bytes) -> None:
        """A remote tell: queued in its unit's batch, which the sender task
        publishes as one NATS message once this task yields, with a yield
        every few calls (a teller never starves other tasks)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.publish_nowait(subject, data):
            await self._flush(subject)
            self.publish_nowait(subject, data)
        if self._unyielded < YIELD_EVERY:
            self._unyielded += 1
        else:
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        # The tells sent before it are published first.
        if subject in self._batches or self._flushing.locked():
            await self._flush(subject)
        return await self.backend.request(subject, data, timeout)

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        batch = self._batches.get(subject)
        if batch is None:
            batch = self._batches[subject] = _Batch()
            self._batched.set()
        elif len(batch.parts) >= OUTGOING_CAPACITY or batch.size + len(data) > BATCH_BYTES:
            return False
        batch.parts.append(data)
        batch.size += len(data) + 1
        return True

    async def _flush(self, subject: str) -> None:
        """Publish the tells queued for ``subject``, as one message: JSON
        requests one a line (JSON's own newlines are escaped)."""
        batch = self._batches.pop(subject, None)
        try:
            self._flushing.acquire_nowait()  # no yield unless another batch is on its way
        except trio.WouldBlock:
            await self._flushing.acquire()
        try:
            if batch is not None:
                await self.backend.publish(subject, b"\n".join(batch.parts))
        except BackendUnavailable as exc:
            count = 0 if batch is None else len(batch.parts)
            logger.warning("remote_tell_lost", subject=subject, messages=count, error=str(exc))
        finally:
            self._flushing.release()

    def remote_status(self, path: str) -> str:
        held = self.placement.get(self.unit_of(path) or "")
        return "running" if held is not None and held.node in self.nodes else "restarting"

    def observe_ask(self, seconds: float, outcome: str) -> None:
        self.remote_asks[outcome] = self.remote_asks.get(outcome, 0) + 1
        self.ask_count += 1
        self.ask_seconds += seconds
        for i, bound in enumerate(ASK_BUCKETS):
            if seconds <= bound:
                self.ask_buckets[i] += 1

    # -- lookups -----------------------------------------------------------------

    def unit_of(self, path: str) -> str | None:
        """The unit ``path`` belongs to, or None (a resource, or not a unit)."""
        first, _, rest = path.partition("/")
        if first != self.root or not rest:
            return None
        unit = rest.split("/", 1)[0]
        return unit if unit in self.units else None

    def subject(self, unit: str) -> str:
        return f"{self.base}.u.{_token(unit)}"

    def ref(self, path: str) -> ActorRef[Any]:
        """The remote ref of the actor at ``path`` in a unit of another node.

        Raises:
            ActorNotFound: no actor at that path in the topology.
        """
        found = self._refs.get(path)
        if found is not None:
            return found
        actor = self.actors.get(path)
        unit = self.unit_of(path)
        if actor is None or unit is None:
            raise ActorNotFound(f"{path!r}: not found on any node")
        ref = self._refs[path] = RemoteRef(path, self.subject(unit), actor, self)
        return ref

    def routed_ref(self, path: str) -> ActorRef[Any] | None:
        """The ref ``system.ref(path)`` gives for an actor or pool of a unit
        (None for any other path): one that finds the unit wherever it runs
        at each call (in process while this node holds it, else over NATS),
        so a ref kept while the unit moves stays good. A durable mailbox's
        ref sends its tells through its stream, from every node."""
        durable = self.durable.ref(path)
        if durable is not None:
            return durable
        found = self._routed.get(path)
        if found is None and path in self.actors and self.unit_of(path) is not None:
            found = self._routed[path] = UnitRef(path, self._direct_ref)
        return found

    def _direct_ref(self, path: str) -> ActorRef[Any]:
        """``path``'s ref not through its stream: in process here, else remote."""
        return self.system.local_ref(path) or self.ref(path)

    def _holds(self, unit: str, lease: _Lease) -> bool:
        return self.held.get(unit) is lease

    def fence_of(self, path: str) -> tuple[str, int] | None:
        """The fence a checkpoint write of ``path`` carries (None: not in a unit).

        Raises:
            CheckpointConflict: its unit is not held by this node (any more).
        """
        unit = self.unit_of(path)
        if unit is None:
            return None
        lease = self.held.get(unit)
        if lease is None:
            raise CheckpointConflict(f"{path}: unit {unit!r} is not held by node {self.node}")
        return (f"{self.system.name}/{unit}", lease.epoch)

    def statistics(self) -> ClusterStatistics:
        """This node's view of the cluster, now."""
        return ClusterStatistics(
            node=self.node,
            nodes=self.nodes,
            placement=tuple(self.placement.values()),
            held={unit: lease.epoch for unit, lease in self.held.items()},
            failovers=self.failovers,
            handovers=self.handovers,
            lost=self.lost,
            renewal_gap_max=self.renewal_gap_max,
            remote_asks=dict(self.remote_asks),
            ask_bounds=ASK_BUCKETS,
            ask_buckets=tuple(self.ask_buckets),
            ask_count=self.ask_count,
            ask_seconds=self.ask_seconds,
        )

    # -- the node's life ------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, take this node's units, and keep placement and leases up to
        date until cancelled. ``started`` once the first round is done."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_batches)
            nursery.start_soon(self._listen_for_rebalance)
            nursery.start_soon(self.topics.run)
            nursery.start_soon(self.durable.run)
            if self.hosts_units:
                await nursery.start(self._renew_every_interval)
            await self._round()
            task_status.started()
            while True:
                with trio.move_on_after(self.interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._round()

    async def leave(self) -> None:
        """Hand every unit over: leave the membership, stop each unit (its
        last checkpoint written under its lease, still renewed meanwhile),
        delete its lease, and tell the other nodes to take them at once."""
        self._leaving = True
        with contextlib.suppress(BackendUnavailable):
            async with self._membership:
                members = await self.control.kv(self.members_bucket, ttl=self.spec.lease)
                await members.delete(self.node)
        async with trio.open_nursery() as nursery:
            for unit in list(self.held):
                nursery.start_soon(self._release, unit, False)
        logger.info("cluster_left", node=self.node, renewal_gap_max=round(self.renewal_gap_max, 3))

    async def aclose(self) -> None:
        await self.backend.aclose()
        await self.control.aclose()

    async def _renew_every_interval(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Renew this node's membership entry and the leases it holds every
        ``lease / 4``, on a fixed schedule (a slow renewal does not push the
        next one back, nor does a slow placement round). ``started`` once
        the membership entry is written the first time."""
        due = trio.current_time()
        await self._renew()
        task_status.started()
        while True:
            due = max(due + self.interval, trio.current_time())
            await trio.sleep_until(due)
            await self._renew()

    async def _renew(self) -> None:
        """One renewal: the membership entry and each lease held, all at once."""
        now = trio.current_time()
        try:
            members = await self.control.kv(self.members_bucket, ttl=self.spec.lease)
            leases = await self.control.kv(self.leases_bucket, ttl=self.spec.lease)
        except BackendUnavailable as exc:
            logger.warning("cluster_unreachable", node=self.node, error=str(exc))
            self._expire(now)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew_membership, members, now)
            for unit, lease in list(self.held.items()):
                nursery.start_soon(self._renew_lease, leases, unit, lease, now)

    async def _renew_membership(self, members: Any, now: float) -> None:
        async with self._membership:
            if self._leaving:
                return
            try:
                await members.put(self.node, {"member": self.member, "pid": os.getpid()})
            except BackendUnavailable as exc:
                logger.warning("cluster_unreachable", node=self.node, error=str(exc))
                return
        if self._member_renewed is not None:
            self._renewed(None, self._member_renewed)
        self._member_renewed = now

    async def _renew_lease(self, leases: Any, unit: str, lease: _Lease, now: float) -> None:
        value = {"node": self.node, "member": self.member, "epoch": lease.epoch}
        try:
            async with lease.lock:
                if self.held.get(unit) is not lease:
                    return  # released meanwhile
                revision = await leases.update(unit, value, lease.revision)
        except BackendUnavailable as exc:
            logger.warning("cluster_unreachable", node=self.node, unit=unit, error=str(exc))
            if now - lease.renewed >= self.spec.lease:
                self._lose(unit, "lease_expired")
            return
        if revision is None:
            self._lose(unit, "lease_taken")
        else:
            self._renewed(unit, lease.renewed)
            lease.revision, lease.renewed = revision, now

    async def _round(self) -> None:
        """One round: read the live nodes, then for each unit hand it over,
        take it, or note its holder, as placement says."""
        now = trio.current_time()
        try:
            members = await self.control.kv(self.members_bucket, ttl=self.spec.lease)
            live = set(await members.keys())  # keys() may repeat one
            leases = await self.control.kv(self.leases_bucket, ttl=self.spec.lease)
        except BackendUnavailable as exc:
            logger.warning("cluster_unreachable", node=self.node, error=str(exc))
            return
        # This node's own entry, renewed within the lease, may be missing
        # from a listing made while it was being written.
        renewed = self._member_renewed
        if renewed is not None and now - renewed < self.spec.lease and not self._leaving:
            live.add(self.node)
        self.nodes = tuple(sorted(live))
        # Units to take wait for the next round once this one has run for an
        # interval (taking one raises its fence in PostgreSQL).
        order = [*self.held, *(unit for unit in self.units if unit not in self.held)]
        for unit in order:
            if unit not in self.held and trio.current_time() - now > self.interval:
                self._wake.set()
                break
            try:
                await self._place(unit, leases)
            except BackendUnavailable as exc:
                logger.warning("cluster_unreachable", node=self.node, unit=unit, error=str(exc))
                return

    def _renewed(self, unit: str | None, previous: float) -> None:
        """A renewal of ``unit``'s lease (None: of the membership entry)
        succeeded; ``previous`` is when the one before it started. The time
        between the two (an upper bound of the time the entry went without
        a write) is kept at its longest, and logged past half the lease: at
        a whole lease the entry expires."""
        gap = trio.current_time() - previous
        self.renewal_gap_max = max(self.renewal_gap_max, gap)
        if gap > self.spec.lease / 2:
            logger.warning("lease_renewal_late", node=self.node, unit=unit, seconds=round(gap, 3))

    def _expire(self, now: float) -> None:
        """Units whose lease could not be renewed for ``lease`` seconds are
        lost: another node may hold them by now."""
        for unit, lease in list(self.held.items()):
            if now - lease.renewed >= self.spec.lease:
                self._lose(unit, "lease_expired")

    async def _place(self, unit: str, leases: Any) -> None:
        owner = rendezvous(unit, list(self.nodes))
        lease = self.held.get(unit)
        if lease is not None:
            if owner != self.node and owner is not None and not lease.releasing:
                # Handed over in the background: the lease is renewed meanwhile,
                # so the unit's last checkpoint is written under it.
                lease.releasing = True
                assert self._nursery is not None
                self._nursery.start_soon(self._release, unit, True)
            return
        found = await leases.get(unit)
        if found is None and owner == self.node and self.hosts_units and not self._leaving:
            await self._acquire(unit, leases)
            return
        previous = self.placement[unit]
        if found is None:
            self.placement[unit] = Placement(unit, None, previous.epoch)
        else:
            value, _ = found
            self.placement[unit] = Placement(unit, value.get("node"), value.get("epoch"))

    async def _acquire(self, unit: str, leases: Any) -> None:
        value = {"node": self.node, "member": self.member, "epoch": None}
        now = trio.current_time()  # the lease lives from its create on
        revision = await leases.create(unit, value)
        if revision is None:
            return  # another node came first
        epoch = revision
        revision = await leases.update(unit, {**value, "epoch": epoch}, revision) or revision
        previous = self.placement[unit]
        store = self.system.checkpoint_store()
        try:
            raise_fence = getattr(_unwrapped(store), "raise_fence", None)
            if raise_fence is not None:
                await raise_fence(f"{self.system.name}/{unit}", epoch)
        except Exception as exc:
            logger.warning("unit_fence_failed", unit=unit, epoch=epoch, error=repr(exc))
            await leases.delete(unit, revision)
            return
        lease = self.held[unit] = _Lease(epoch, revision, now)
        self.placement[unit] = Placement(unit, self.node, epoch)
        gone = previous.node is not None and previous.node not in self.nodes
        if gone and previous.node != self.node:
            self.failovers += 1
        logger.info("unit_acquired", unit=unit, node=self.node, epoch=epoch, previous=previous.node)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_unit, unit, lease)

    async def _run_unit(self, unit: str, lease: _Lease) -> None:
        """Start the unit in the root supervisor and serve its subject until
        the lease's scope is cancelled.

        Asks taken before then are answered here, outside that scope: by
        their handlers, or with ``ActorStopped`` as the unit stops (neither
        lost nor left to their askers' timeouts); those received but not
        taken yet are answered ``MOVED``, which their askers send again to
        the next holder.
        """
        async with trio.open_nursery() as answers:
            with lease.scope:
                try:
                    await self.system.root.add_child(self.units[unit])
                except Exception as exc:
                    logger.warning("unit_start_failed", unit=unit, error=repr(exc))
                    self._lose(unit, "start_failed")
                    return
                async with trio.open_nursery() as nursery:
                    for path in self.durable.paths_in(f"{self.root}/{unit}"):
                        held = functools.partial(self._holds, unit, lease)
                        nursery.start_soon(self.durable.consume, path, lease.epoch, held)
                    subscription = await self._subscribe(unit)
                    try:
                        await self._serve(subscription, answers)
                    finally:
                        # Bounded: a drain waits for the server's answer.
                        with trio.CancelScope(shield=True), trio.move_on_after(self.spec.lease):
                            await subscription.unsubscribe(refusal=MOVED)

    async def _subscribe(self, unit: str) -> NatsSubscription:
        while True:
            try:
                return await self.backend.subscribe(self.subject(unit), queue="unit")
            except BackendUnavailable:
                await trio.sleep(self.interval)

    async def _serve(self, subscription: NatsSubscription, answers: trio.Nursery) -> None:
        """Deliver the unit's messages: a tell in turn (so tells keep their
        order), an ask in a task of its own. Messages already received are
        taken without a task switch each, with a yield every few."""
        messages = subscription.messages
        budget = YIELD_EVERY
        while True:
            try:
                message = messages.receive_nowait()
            except trio.WouldBlock:
                try:
                    message = await messages.receive()
                except trio.EndOfChannel:
                    return
                budget = YIELD_EVERY
            except trio.EndOfChannel:
                return
            if message.reply:
                answers.start_soon(self._answer, subscription, message)
            else:
                await self._deliver(message.data)
            budget -= 1
            if budget <= 0:
                budget = YIELD_EVERY
                await trio.lowlevel.cancel_shielded_checkpoint()

    def _actor_here(self, path: str) -> Any:
        ref = self.system.local_ref(path)
        return None if ref is None else self.actors.get(path)

    async def _answer(self, subscription: NatsSubscription, message: Any) -> None:
        try:
            request = decode_request(message.data, self.actors.get)
            ref = self.system.local_ref(request.path)
            # No ref: its unit stopped here, and no handler saw the request.
            reply = MOVED if ref is None else encode_reply(await self._ask_here(ref, request))
        except ActorSystemError as exc:
            reply = encode_error(exc)
        except Exception as exc:  # a malformed request, a reply JSON cannot carry
            reply = encode_error(ActorFailed(f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(BackendUnavailable):
            await subscription.reply(message, reply)

    async def _ask_here(self, ref: ActorRef[Any], request: Request) -> object:
        with request.context():
            return await ref.ask(
                request.message, timeout=request.timeout or 30.0, priority=request.priority
            )

    async def _deliver(self, data: bytes) -> None:
        """The tells of one NATS message (one a line), in order, with a yield
        every few (a message holds hundreds: it never keeps the loop)."""
        for i, part in enumerate(data.split(b"\n"), 1):
            await self._deliver_one(part)
            if not i % YIELD_EVERY:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def _deliver_one(self, data: bytes) -> None:
        try:
            request = decode_request(data, self._actor_here)
        except Exception as exc:
            logger.warning("remote_tell_refused", node=self.node, error=str(exc))
            return
        ref = self.system.local_ref(request.path)
        if ref is None:
            return
        try:
            with request.context():
                await ref.tell(request.message, priority=request.priority)
        except (MailboxFull, ActorStopped, CircuitOpen) as exc:
            reason = {MailboxFull: "mailbox_full", ActorStopped: "stopped"}.get(
                type(exc), "circuit_open"
            )
            self.system.record_dead_letter(request.path, request.message, reason)

    def _lose(self, unit: str, reason: str) -> None:
        """The unit is not this node's any more: refuse its writes from now
        on, stop serving it, and stop its copy here."""
        lease = self.held.pop(unit, None)
        if lease is None:
            return
        self.lost += 1
        lease.scope.cancel()
        logger.warning("unit_lost", unit=unit, node=self.node, epoch=lease.epoch, reason=reason)
        assert self._nursery is not None
        self._nursery.start_soon(self._stop_unit, unit)

    async def _stop_unit(self, unit: str) -> None:
        with contextlib.suppress(ActorNotFound, ActorStopped):
            await self.system.root.terminate_child(unit)

    async def _release(self, unit: str, handover: bool) -> None:
        """Stop the unit here (its last write fenced by the lease still held),
        then give the lease up."""
        lease = self.held.get(unit)
        if lease is None:
            return
        lease.releasing = True
        lease.scope.cancel()  # stop serving: asks wait for the next holder
        with trio.CancelScope(shield=True):
            await self._stop_unit(unit)
            async with lease.lock:
                if self.held.get(unit) is not lease:
                    return  # lost while it stopped
                self.held.pop(unit, None)
                with contextlib.suppress(BackendUnavailable):
                    leases = await self.control.kv(self.leases_bucket, ttl=self.spec.lease)
                    await leases.delete(unit, lease.revision)
                    await self.control.publish(f"{self.base}.rebalance", self.node.encode())
        if handover:
            self.handovers += 1
        logger.info("unit_released", unit=unit, node=self.node, epoch=lease.epoch)

    async def _listen_for_rebalance(self) -> None:
        """Wake the next round at once when a node hands units over."""
        while True:
            try:
                subscription = await self.control.subscribe(f"{self.base}.rebalance")
            except BackendUnavailable:
                await trio.sleep(self.interval)
                continue
            async for _ in subscription.messages:
                self._wake.set()
            await trio.sleep(self.interval)

    async def _send_batches(self) -> None:
        """Publish the batches of tells, each as soon as its teller yields."""
        while True:
            await self._batched.wait()
            self._batched = trio.Event()
            for subject in list(self._batches):
                await self._flush(subject)


@attrs.define
class _Batch:
    """Tells queued for one subject, in the order sent."""

    parts: list[bytes] = attrs.field(factory=list)
    size: int = 0


class UnitRef(ActorRef[Any]):
    """The ref of an actor (or pool) in a unit, on any node: each call goes
    to the unit where it runs now, in process or over NATS."""

    __slots__ = ("_path", "_target")

    def __init__(self, path: str, target: Callable[[str], ActorRef[Any]]) -> None:
        self._path = path
        self._target = target

    @property
    def path(self) -> str:
        return self._path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.path == self._path

    def __hash__(self) -> int:
        return hash(self._path)

    async def tell(self, msg: object, *, priority: str = "normal") -> None:
        await self._target(self._path).tell(msg, priority=priority)

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        self._target(self._path).tell_nowait(msg, priority=priority)

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        return await self._target(self._path).ask(msg, timeout=timeout, priority=priority)

    def statistics(self) -> ActorStatistics:
        stats: ActorStatistics = self._target(self._path).statistics()
        return stats


class FencedStore:
    """The checkpoint store as a cluster node uses it: every write of an
    actor in a unit carries the unit's lease epoch (``PostgresStore``
    refuses it once a newer epoch was raised); a write for a unit this node
    no longer holds is refused here."""

    def __init__(self, store: CheckpointStore, cluster: Cluster) -> None:
        self.store = store
        self.cluster = cluster
        self.url = getattr(store, "url", "")

    async def load(self, path: str) -> tuple[int, str] | None:
        return await self.store.load(path)

    async def save(self, path: str, data: str, version: int) -> int:
        fence = self.cluster.fence_of(path)
        if fence is None or not isinstance(self.store, PostgresStore):
            return await self.store.save(path, data, version)
        return await self.store.save(path, data, version, fence=fence)

    async def delete(self, path: str) -> None:
        await self.store.delete(path)

    async def paths(self) -> list[str]:
        return await self.store.paths()

    async def aclose(self) -> None:
        await self.store.aclose()


def _unwrapped(store: CheckpointStore) -> CheckpointStore:
    return store.store if isinstance(store, FencedStore) else store


@asynccontextmanager
async def open_cluster(
    system: ActorSystem, topology: Topology, node: str | None, *, hosts_units: bool = True
) -> AsyncIterator[Cluster]:
    """Join the cluster and run this node's part of it; leaving the block
    hands this node's units over and leaves."""
    cluster = Cluster(system, topology, node or default_node_name(), hosts_units=hosts_units)
    system.join_cluster(cluster, lambda store: FencedStore(store, cluster))
    logger.info("cluster_joining", node=cluster.node, nats=redacted(cluster.spec.nats))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cluster.run)
            try:
                yield cluster
            finally:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(max(10.0, 2 * cluster.spec.lease)),
                ):
                    await cluster.leave()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()
