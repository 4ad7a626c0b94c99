"""What cells and supervisors need from the system around them.

The tree's lower layers (actor cells, resource cells, supervisors) never
import the system: each is given a ``Host`` when it is built, and reaches
dead letters, topics, the checkpoint store, tracing and the building of
new children only through it. A test can build a cell or a supervisor on a
fake host, without ``open_system`` (see ``tests/fakehost.py``).

``Child`` is what a supervisor needs of a child, an actor cell or a nested
supervisor alike; ``RestartRecord`` is the supervisor's bookkeeping about one
child (OTP's child record), kept on the child so that it outlives the
supervisor's own incarnations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from ._backends import Backends
    from ._budget import Ledger
    from ._checkpoint import CheckpointCounters, CheckpointStore
    from ._locks import LockManager
    from ._ref import ActorRef, ActorStatistics
    from ._specs import ChildSpec, SupervisorSpec

__all__ = ["Child", "Host", "RestartRecord"]


class RestartRecord:
    """A supervisor's record of one child: restarts so far and by reason,
    the restart decision it waits for, and its consecutive crashes."""

    __slots__ = ("consecutive_crashes", "pending_reason", "pending_seq", "reasons", "restarts")

    def __init__(self) -> None:
        self.restarts = 0
        self.reasons: dict[str, int] | None = None  # made at the first restart
        self.pending_seq = 0  # which restart decision of its supervisor it waits for
        self.pending_reason = "crash"  # why that restart happens
        self.consecutive_crashes = 0

    def count(self, reason: str) -> None:
        """Count one restart, and why."""
        self.restarts += 1
        reasons = self.reasons
        if reasons is None:
            reasons = self.reasons = {}
        reasons[reason] = reasons.get(reason, 0) + 1


class Child(Protocol):
    """A node a supervisor starts, stops and restarts."""

    kind: str
    name: str
    path: str
    status: str
    incarnation: int
    record: RestartRecord
    task: trio.lowlevel.Task | None

    @property
    def done(self) -> trio.Event:
        """Set once the running incarnation has ended (set when none runs)."""
        ...

    @property
    def restart(self) -> str: ...

    @property
    def shutdown_timeout(self) -> float: ...

    @property
    def starts_at_once(self) -> bool:
        """Whether nothing of its start can fail or wait (no code of the
        actor's own, nothing read): ``begin()`` then starts it at once."""
        ...

    def begin(self) -> None:
        """Start an incarnation in the caller's task (``starts_at_once`` only);
        ``run_incarnation(begun=True)`` then serves it."""
        ...

    async def run_incarnation(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED, *, begun: bool = False
    ) -> BaseException | None:
        """Run one incarnation; None after a stop, else the crash's error."""
        ...

    def request_stop(self, for_restart: bool = False) -> None:
        """Ask the running incarnation to end gracefully."""
        ...

    def kill(self) -> None:
        """Cancel the running incarnation now (its shutdown_timeout passed)."""
        ...

    def retire(self, reason: str) -> None:
        """Mark the child stopped for good: what it had queued is dead letters."""
        ...

    def reset_breaker(self) -> None:
        """Close its circuit (its supervisor restarted) and forget its crashes."""
        ...

    def open_circuit(self, error: BaseException | None) -> float | None:
        """Open its circuit after too many crashes; returns the reset timeout,
        or None when it has no breaker (nothing opened)."""
        ...

    def half_open(self) -> bool:
        """Let one trial incarnation start; False when the circuit is not open."""
        ...

    def is_idle(self) -> bool: ...

    def statistics(self) -> ActorStatistics: ...


class Host(Protocol):
    """The system as the tree's cells and supervisors see it."""

    name: str
    tracer: Any  # OpenTelemetry's tracer, with metrics.tracing; else None
    timed: bool  # whether handling times are kept (metrics are on)
    checkpoints: CheckpointCounters
    backends: Backends  # connections to the coordination engines (PostgreSQL, NATS)
    locks: LockManager  # ctx.lock
    ledger: Ledger  # tokens and costs by resource and agent, and the budgets

    @property
    def system(self) -> Any:
        """The public ``ActorSystem`` (``ctx.system``)."""
        ...

    def trace_context(self) -> Any:
        """The sender's OpenTelemetry context, carried with a message."""
        ...

    def dead_letter(self, path: str, message: object, reason: str) -> None: ...

    def checkpoint_store(self) -> CheckpointStore: ...

    def ref(self, path: str) -> ActorRef[Any]: ...

    def resource(self, name: str) -> ActorRef[Any]: ...

    def find(self, tag: str) -> list[ActorRef[Any]]:
        """The refs of the running actors and pools tagged ``tag``."""
        ...

    def subscribe(self, topic: str, subscriber: Any, message_type: type) -> None: ...

    def unsubscribe(self, topic: str, subscriber: Any, message_type: type | None) -> None: ...

    def unsubscribe_all(self, subscriber: Any) -> None: ...

    async def publish(self, topic: str, event: object) -> None: ...

    def count_progress(self, total: int, done: int, retried: int) -> None:
        """Add to the system's counts of work items (``ctx.progress``)."""
        ...

    def set_progress(
        self, path: str, total: int | None, done: int | None, retried: int | None
    ) -> None:
        """Set the counts of the actor at ``path`` (``ctx.set_progress``);
        None keeps a count as it was."""
        ...

    def build(self, spec: ChildSpec | SupervisorSpec, prefix: str) -> Child:
        """Make the child ``spec`` describes, registered at ``prefix + name``."""
        ...

    def forget(self, child: Child) -> None:
        """Unregister a child removed from the tree (and its subtree)."""
        ...
