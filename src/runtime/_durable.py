"""Durable mailboxes of a cluster (``mailbox: {durable: true}``, DESIGN 6.5).

- One JetStream stream per system (work-queue retention: a message is
  removed once acknowledged), one subject per durable actor's path under the
  cluster's prefix. ``tell`` through a ``DurableRef``, from any node,
  publishes on the actor's subject and returns once the stream has stored
  the message: an acknowledged tell.
- The node holding the actor's unit consumes its subject with a pull
  consumer made when it takes the unit (named after the unit's lease epoch;
  any consumer of that subject before it is deleted, so the messages not
  acknowledged are delivered again from the oldest, in stream order). Each
  message is asked of the actor as ``Sequenced`` (``_durable_cell``): the
  handler runs, the state and the message's stream sequence are written in
  one checkpoint, and only then the message is acknowledged. A message
  whose sequence the checkpoint already records is acknowledged without
  being handled: a tell is applied to the state once, through crashes,
  redeliveries and failovers.
- A handler that raises on a message crashes the actor as usual (its
  supervisor restarts it) and the message is handled again; after
  ``max_deliver`` failed attempts it becomes a dead letter (reason
  ``max_deliver``) and is terminated on the stream. A write refused by a
  newer lease epoch is not the message's failure: the unit is lost here and
  the message is left to the new holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ._backends import BackendUnavailable, NatsBackend, NatsPullConsumer, subject_token
from ._durable_cell import BatchFailed, Sequenced, SequencedBatch
from ._logging import get_logger
from ._priority import check_priority
from ._ref import ActorRef, ActorStatistics
from ._remote import accepted_types, decode_request, encode_request, type_path
from ._specs import ChildSpec
from ._system import ActorSystem
from .errors import (
    ActorFailed,
    ActorStopped,
    CheckpointConflict,
    CircuitOpen,
    MailboxFull,
    StoreUnavailable,
    UnknownMessage,
)

__all__ = ["DurableMailboxes", "DurableRef", "DurableStatistics"]

logger = get_logger()

BATCH = 64
"""Messages fetched at once by a consumer (and queued for its actor)."""

FETCH_WAIT = 1.0
"""Seconds a fetch waits for a first message before asking again."""

ACK_WAIT = 30.0
"""Seconds the stream waits for an acknowledgement before it delivers a
message again; a message being handled is kept alive every third of it."""

PUBLISH_DEADLINE = 10.0
"""Seconds a durable ``tell`` keeps trying to reach the stream (a NATS
server restarting) before it fails with ``MailboxFull``."""

OUTGOING_CAPACITY = 1024
"""Durable ``tell_nowait`` messages queued for the sender task."""

RETRY_INITIAL, RETRY_MAX = 0.05, 1.0
"""Waits between attempts on an unreachable server or a stopped actor."""


@attrs.frozen
class DurableStatistics:
    """This node's durable mailboxes, since it started.

    Attributes:
        published: tells stored in the stream from this node.
        applied: tells handled and checkpointed here.
        duplicates: deliveries acknowledged without handling (already applied).
        dead_letters: tells given up after ``max_deliver`` failed attempts.
        lost_tells: ``tell_nowait`` messages the stream did not take.
    """

    published: int
    applied: int
    duplicates: int
    dead_letters: int
    lost_tells: int


def consumer_name(path: str, epoch: int) -> str:
    """The pull consumer of ``path``'s subject made under lease ``epoch``."""
    digest = hashlib.blake2b(path.encode(), digest_size=10).hexdigest()
    return f"d{digest}_{epoch}"


class DurableMailboxes:
    """The durable mailboxes of one cluster node: their stream, the refs that
    publish into it, and the consumers of the units this node holds.

    Args:
        system: this node's system.
        backend: the cluster's NATS connection.
        prefix: the cluster's subject prefix for this system (``prefix.system``).
        stream: the stream's name.
        children: every actor of the topology by path.
        direct: the non-durable ref of a path (in process, or over NATS):
            a durable ref's ``ask`` goes through it.
        tracing: whether trace context travels with a message.
    """

    def __init__(
        self,
        system: ActorSystem,
        backend: NatsBackend,
        prefix: str,
        stream: str,
        children: dict[str, ChildSpec],
        *,
        direct: Callable[[str], ActorRef[Any]],
        tracing: bool = False,
    ) -> None:
        self.system = system
        self.backend = backend
        self.prefix = prefix
        self.stream = stream
        self.specs = {path: spec for path, spec in children.items() if spec.mailbox.durable}
        self.direct = direct
        self.tracing = tracing
        self._refs: dict[str, DurableRef] = {}
        self._stream_ready = False
        self._outgoing_send, self._outgoing = trio.open_memory_channel[tuple[str, bytes]](
            OUTGOING_CAPACITY
        )
        self.published = self.applied = self.duplicates = self.dead_letters = 0
        self.lost_tells = 0

    def subject(self, path: str) -> str:
        return f"{self.prefix}.d.{subject_token(path)}"

    def ref(self, path: str) -> DurableRef | None:
        """The durable ref of ``path``; None if its mailbox is not durable."""
        found = self._refs.get(path)
        if found is None and path in self.specs:
            actor = self.specs[path].actor
            found = self._refs[path] = DurableRef(path, self.subject(path), actor, self)
        return found

    def paths_in(self, unit_path: str) -> list[str]:
        """The durable actors in the unit at ``unit_path`` (``root/unit``)."""
        return [p for p in self.specs if p == unit_path or p.startswith(f"{unit_path}/")]

    def statistics(self) -> DurableStatistics:
        return DurableStatistics(
            self.published, self.applied, self.duplicates, self.dead_letters, self.lost_tells
        )

    # -- publishing ------------------------------------------------------------------

    async def ensure_stream(self) -> None:
        if not self._stream_ready:
            await self.backend.ensure_stream(self.stream, [f"{self.prefix}.d.>"])
            self._stream_ready = True

    async def publish(self, path: str, subject: str, data: bytes) -> None:
        """Store ``data`` in the stream, trying for ``PUBLISH_DEADLINE`` seconds.

        Raises:
            MailboxFull: the stream could not be reached in that time.
        """
        delay = RETRY_INITIAL
        deadline = trio.current_time() + PUBLISH_DEADLINE
        while True:
            try:
                await self.ensure_stream()
                await self.backend.stream_publish(subject, data)
            except BackendUnavailable as exc:
                self._stream_ready = False  # the server may have lost it (a new one)
                if trio.current_time() + delay > deadline:
                    raise MailboxFull(
                        f"{path}: the durable mailbox's stream cannot be reached: {exc}"
                    ) from exc
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
            else:
                self.published += 1
                return

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        try:
            self._outgoing_send.send_nowait((subject, data))
        except trio.WouldBlock:
            return False
        return True

    async def run(self) -> None:
        """Send the ``tell_nowait`` messages queued, in order, until cancelled."""
        async for subject, data in self._outgoing:
            try:
                await self.publish(subject, subject, data)
            except MailboxFull as exc:
                self.lost_tells += 1
                logger.warning("durable_tell_lost", subject=subject, error=str(exc))

    # -- consuming -------------------------------------------------------------------

    async def consume(self, path: str, epoch: int, held: Callable[[], bool]) -> None:
        """Apply the tells of ``path``'s stream subject to it, in order, until
        cancelled (the unit is released or lost) or ``held()`` is false: a
        node that lost the unit never replaces its new holder's consumer."""
        subject = self.subject(path)
        name = consumer_name(path, epoch)
        max_deliver = self.specs[path].mailbox.max_deliver
        delay = RETRY_INITIAL
        while held():
            try:
                await self.ensure_stream()
                consumer = await self.backend.pull_consumer(
                    self.stream, name, subject, ack_wait=ACK_WAIT, max_ack_pending=4 * BATCH
                )
            except Exception as exc:  # an outage, or the stream gone (made again)
                self._stream_ready = False
                logger.warning(
                    "durable_consumer_unavailable", path=path, error=f"{type(exc).__name__}: {exc}"
                )
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            delay = RETRY_INITIAL
            try:
                await _Consumer(self, path, consumer, max_deliver).run()
            except Exception as exc:  # an outage, or the consumer replaced: a fresh one
                logger.warning("durable_consumer_failed", path=path, exc_info=exc)
                await trio.sleep(RETRY_INITIAL)
            finally:
                with trio.CancelScope(shield=True):
                    await consumer.aclose()


class _Consumer:
    """One pull consumer's session: fetch ahead in batches, apply in order."""

    def __init__(
        self, owner: DurableMailboxes, path: str, consumer: NatsPullConsumer, max_deliver: int
    ) -> None:
        self.owner = owner
        self.path = path
        self.consumer = consumer
        self.max_deliver = max_deliver
        self.done = 0  # the last sequence acknowledged or terminated in this session
        self.current: list[Any] | None = None  # the messages being handled
        self.current_since = 0.0

    async def run(self) -> None:
        send, receive = trio.open_memory_channel[Any](BATCH)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch, send)
            nursery.start_soon(self._keep_alive)
            async for message in receive:
                batch = [message]
                while len(batch) < BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                failed_at = None if len(batch) == 1 else await self._apply_batch(batch)
                if failed_at != 0:
                    for one in batch:  # alone; the one that failed in the batch tried once
                        tried = int(failed_at == int(one.metadata.sequence.stream))
                        await self._apply(one, tried)

    async def _fetch(self, send: trio.MemorySendChannel[Any]) -> None:
        async with send:
            while True:
                for message in await self.consumer.fetch(BATCH, FETCH_WAIT):
                    await send.send(message)

    async def _keep_alive(self) -> None:
        """Tell the stream the messages handled for long are still in progress."""
        while True:
            await trio.sleep(ACK_WAIT / 3)
            messages = self.current
            if messages and trio.current_time() - self.current_since >= ACK_WAIT / 3:
                with contextlib.suppress(BackendUnavailable):
                    for message in messages:
                        await self.consumer.in_progress(message)

    async def _apply_batch(self, batch: list[Any]) -> int | None:
        """Apply ``batch`` as one ask and one checkpoint, then acknowledge
        it: 0. Else its messages must be applied one at a time: None (a
        message that does not decode, the actor not running), or the
        sequence of the one whose handler raised."""
        fresh, tells = [], []
        for message in batch:
            sequence = int(message.metadata.sequence.stream)
            if sequence <= self.done:
                continue  # delivered again: acknowledged below
            try:
                request = decode_request(message.data, self._actor_here)
            except Exception:
                return None
            fresh.append(message)
            tells.append(Sequenced(request.message, sequence, request.correlation or 0))
        owner = self.owner
        ref = owner.system.local_ref(self.path)
        if ref is None:
            return None
        if tells:
            self.current, self.current_since = fresh, trio.current_time()
            try:
                applied = await ref.ask(SequencedBatch(tuple(tells)), timeout=math.inf)
            except ActorFailed as exc:
                if isinstance(exc.__cause__, CheckpointConflict):
                    logger.warning(
                        "durable_tell_fenced", path=self.path, sequence=tells[0].sequence
                    )
                    raise CheckpointConflict(f"{self.path}: written by another node now") from exc
                outage = isinstance(exc.__cause__, StoreUnavailable)  # not the tell's failure
                return exc.sequence if isinstance(exc, BatchFailed) and not outage else None
            except (ActorStopped, CircuitOpen, MailboxFull):
                return None
            finally:
                self.current = None
            owner.applied += applied
            owner.duplicates += len(tells) - applied
            self.done = tells[-1].sequence
        await self.consumer.ack_all(batch)
        return 0

    async def _apply(self, message: Any, tried: int = 0) -> None:
        sequence = int(message.metadata.sequence.stream)
        if sequence <= self.done:  # delivered again while this session had it
            await self.consumer.ack(message)
            return
        system = self.owner.system
        try:
            request = decode_request(message.data, self._actor_here)
        except Exception as exc:
            logger.warning(
                "durable_tell_refused", path=self.path, sequence=sequence, error=str(exc)
            )
            system.record_dead_letter(self.path, bytes(message.data), "malformed")
            await self.consumer.term(message)
            self.done = sequence
            return
        self.current, self.current_since = [message], trio.current_time()
        try:
            outcome = await self._ask(request, sequence, tried)
        finally:
            self.current = None
        if outcome is None:
            raise CheckpointConflict(f"{self.path}: written by another node now")
        if outcome == "dead":
            await self.consumer.term(message)
        else:
            await self.consumer.ack(message)
        self.done = sequence

    def _actor_here(self, path: str) -> Any:
        spec = self.owner.specs.get(path)
        return None if spec is None or path != self.path else spec.actor

    def _dead(self, request: Any, sequence: int, attempts: int, error: object) -> str:
        """Give the message up: a dead letter (reason ``max_deliver``)."""
        self.owner.dead_letters += 1
        logger.warning(
            "durable_dead_letter",
            path=self.path,
            sequence=sequence,
            attempts=attempts,
            error=str(error),
        )
        self.owner.system.record_dead_letter(self.path, request.message, "max_deliver")
        return "dead"

    async def _ask(self, request: Any, sequence: int, tried: int) -> str | None:
        """``applied``, ``duplicate`` or ``dead`` (after ``tried`` failed
        attempts already); None when this node may no longer write the
        actor's state."""
        owner, path = self.owner, self.path
        attempts = tried
        if attempts >= self.max_deliver:
            return self._dead(request, sequence, attempts, "its handler raised in a batch")
        delay = RETRY_INITIAL
        while True:
            ref = owner.system.local_ref(path)
            if ref is None:  # not started yet, or given up by its supervisor
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            try:
                with request.context():
                    applied = await ref.ask(
                        Sequenced(request.message, sequence, request.correlation or 0),
                        timeout=math.inf,
                        priority=request.priority,
                    )
            except ActorFailed as exc:
                cause = exc.__cause__
                if isinstance(cause, CheckpointConflict):
                    logger.warning("durable_tell_fenced", path=path, sequence=sequence)
                    return None
                if isinstance(cause, StoreUnavailable):
                    continue  # an outage, not the message's failure
                attempts += 1
                if attempts < self.max_deliver:
                    continue  # its supervisor restarts it; the message is next
                return self._dead(request, sequence, attempts, cause if cause is not None else exc)
            except (ActorStopped, CircuitOpen, MailboxFull):
                await trio.sleep(delay)  # restarting, or the circuit not yet half-open
                delay = min(RETRY_MAX, delay * 2)
                continue
            if applied:
                owner.applied += 1
                return "applied"
            owner.duplicates += 1
            return "duplicate"


class DurableRef(ActorRef[Any]):
    """The ref of an actor with a durable mailbox, on any node: ``tell``
    stores the message in the actor's stream subject; ``ask`` is an
    ordinary ask (in process on its holder, else over NATS)."""

    __slots__ = ("_actor", "_mailboxes", "_path", "_subject")

    def __init__(self, path: str, subject: str, actor: Any, mailboxes: DurableMailboxes) -> None:
        self._path = path
        self._subject = subject
        self._actor = actor
        self._mailboxes = mailboxes

    @property
    def path(self) -> str:
        return self._path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DurableRef) and other._path == self._path

    def __hash__(self) -> int:
        return hash(("durable", self._path))

    def _encode(self, msg: object, priority: str) -> bytes:
        check_priority(priority)
        if type_path(type(msg)) not in accepted_types(self._actor):
            raise UnknownMessage(
                f"{self._path} has no handler for {type(msg).__qualname__} "
                "(a durable mailbox takes only the exact types of its handlers)"
            )
        return encode_request(self._path, msg, priority, None, self._mailboxes.tracing)

    async def tell(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell``: returns once the stream has stored the message
        (an acknowledged tell is applied once, whatever fails after).

        Raises:
            UnknownMessage: not one of its handlers' exact types.
            MailboxFull: the stream could not be reached in time.
        """
        data = self._encode(msg, priority)
        await self._mailboxes.publish(self._path, self._subject, data)

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell_nowait``: queued for this node's sender task (not
        acknowledged: a message the stream cannot take is logged and lost).

        Raises:
            MailboxFull: the sender's queue is full.
        """
        data = self._encode(msg, priority)
        if not self._mailboxes.publish_nowait(self._subject, data):
            raise MailboxFull(f"{self._path}: the queue of durable tells is full")

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        """``ActorRef.ask``, not through the stream (an ask is made at most once)."""
        return await self._mailboxes.direct(self._path).ask(msg, timeout=timeout, priority=priority)

    def statistics(self) -> ActorStatistics:
        return self._mailboxes.direct(self._path).statistics()
