"""Topics across the nodes of a cluster (DESIGN 6.5).

``publish`` delivers to the subscribers of its own process first, as on a
single node, then sends the event once on the topic's NATS subject under the
cluster's prefix (``<prefix>.<system>.t.<topic>``). Every node listens to
all of them and delivers what another node published to its own
subscribers; a node skips what it sent itself (each event carries its
sender's member id), so each subscriber gets an event once.

An event crosses the wire as JSON with its type's import path, like a remote
message; the receiving node structures it only as a type its subscribers of
that topic subscribed to or have a handler for (nothing is imported on the
strength of the wire). Delivery to the other nodes is at most once: a node
that is unreachable or restarting at the time misses the event.
"""

from __future__ import annotations

import json
from typing import Any, cast

import attrs
import trio

from ._backends import BackendUnavailable, NatsBackend, subject_token
from ._checkpoint import json_converter
from ._logging import get_logger
from ._remote import accepted_types, type_path
from ._system import ActorSystem

__all__ = ["ClusterTopics", "TopicStatistics"]

logger = get_logger()


@attrs.frozen
class TopicStatistics:
    """This node's topic events across nodes, since it started.

    Attributes:
        sent: events sent to the other nodes.
        received: events from other nodes delivered here.
        dropped: events not sent (not JSON, or NATS unreachable).
    """

    sent: int
    received: int
    dropped: int


class ClusterTopics:
    """This node's side of the cluster-wide topics.

    Args:
        system: this node's system.
        backend: the cluster's NATS connection.
        prefix: the cluster's subject prefix for this system.
        member: this process's unique member id.
        retry: seconds between attempts to subscribe while NATS is unreachable.
    """

    def __init__(
        self, system: ActorSystem, backend: NatsBackend, prefix: str, member: str, retry: float
    ) -> None:
        self.system = system
        self.backend = backend
        self.prefix = prefix
        self.member = member
        self.retry = retry
        self.sent = self.received = self.dropped = 0

    def statistics(self) -> TopicStatistics:
        return TopicStatistics(self.sent, self.received, self.dropped)

    def subject(self, topic: str) -> str:
        return f"{self.prefix}.t.{subject_token(topic)}"

    async def relay(self, topic: str, event: object) -> None:
        """Send ``event`` to the other nodes (the local subscribers had it)."""
        try:
            body = {
                "o": self.member,
                "n": topic,
                "t": type_path(type(event)),
                "m": json_converter().unstructure(event),
            }
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            self.dropped += 1
            logger.warning(
                "topic_event_local_only", topic=topic, type=type(event).__qualname__, error=str(exc)
            )
            return
        try:
            await self.backend.publish(self.subject(topic), data)
            self.sent += 1
        except BackendUnavailable as exc:
            self.dropped += 1
            logger.warning("topic_event_not_sent", topic=topic, error=str(exc))

    async def run(self) -> None:
        """Deliver the events other nodes publish, until cancelled."""
        self.system.relay_topics(self.relay)
        try:
            while True:
                try:
                    subscription = await self.backend.subscribe(f"{self.prefix}.t.>")
                except BackendUnavailable:
                    await trio.sleep(self.retry)
                    continue
                async for message in subscription.messages:
                    await self._receive(message.data)
                await trio.sleep(self.retry)
        finally:
            self.system.relay_topics(None)

    async def _receive(self, data: bytes) -> None:
        try:
            body = json.loads(data)
            if body.get("o") == self.member:
                return  # this node's own: its subscribers had it
            topic, name = body["n"], body["t"]
            known = self._types(topic)
            cls = known.get(name)
            if cls is None:
                return  # nobody here takes it
            event: object = json_converter().structure(body["m"], cls)
        except Exception as exc:
            logger.warning("topic_event_refused", error=f"{type(exc).__name__}: {exc}")
            return
        self.received += 1
        await self.system.publish_here(topic, event)

    def _types(self, topic: str) -> dict[str, type]:
        """The event types this node's subscribers of ``topic`` take, by path."""
        found: dict[str, type] = {}
        for actor, types in self.system.topic_subscribers(topic).items():
            found.update(accepted_types(cast(Any, actor)))
            found.update((type_path(t), t) for t in types)
        return found
