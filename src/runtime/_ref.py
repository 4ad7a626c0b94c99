"""Actor refs: the handle every sender holds, whatever carries its messages.

``ActorRef`` is the public interface; each transport implements it. The
in-process transport (``LocalRef``, in ``_cell``) puts messages straight into
the target's mailbox; a remote transport implements the same four methods
with the same errors and the same timeout semantics, so callers never know
which they hold.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import attrs

__all__ = ["ActorRef", "ActorStatistics"]

M = TypeVar("M")


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
        last_failure: the error of its last crash (``ValueError('boom')``),
            None if it never crashed.
    """

    path: str
    status: str
    incarnation: int
    restarts: int
    mailbox_depth: int
    mailbox_capacity: int
    breaker: str | None
    pending_asks: int
    last_failure: str | None = None


class ActorRef(Generic[M]):
    """A handle to an actor, valid across its restarts.

    ``tell`` and ``ask`` are checkpoints (they may be cancelled before the
    message is queued; once queued, the message stays queued). Refs compare
    equal when they name the same actor.
    """

    __slots__ = ()

    @property
    def path(self) -> str:
        """The actor's path, ``root/.../name``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<ActorRef {self.path}>"

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
            ValueError: ``priority`` is not high, normal or low.
        """
        raise NotImplementedError

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        """Queue ``msg`` without waiting.

        Raises:
            MailboxFull: the mailbox is full under ``block`` or ``reject``.
            UnknownMessage, ActorStopped, CircuitOpen, ValueError: as ``tell``.
        """
        raise NotImplementedError

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
            MailboxFull, CircuitOpen, UnknownMessage, ValueError: refused.
        """
        raise NotImplementedError

    def statistics(self) -> ActorStatistics:
        """The actor's status, counters and mailbox, now."""
        raise NotImplementedError
