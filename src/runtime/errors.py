"""Public exceptions.

Every exception the runtime raises on purpose descends from one base, and each
class is one way a caller reacts. Where a builtin already means the same thing
the class also subclasses it, so generic handlers keep working::

    ActorSystemError
    ├── MailboxFull             the target's mailbox refused the message
    ├── AskTimeout              (also TimeoutError) no reply within the timeout
    ├── ActorFailed             the handler raised; the original is __cause__
    │   ├── SupervisorGaveUp    restart intensity exceeded; the last crash is __cause__
    │   └── StartFailed         an actor could not be started; the error is __cause__
    ├── ActorStopped            the target stopped for good before replying
    ├── ActorNotFound           (also LookupError) no actor at that path
    ├── UnknownMessage          (also TypeError) the target has no handler for the type
    ├── CircuitOpen             the target's circuit breaker is open
    ├── ResourceError           a resource's backend refused or failed a request
    ├── BudgetExceeded          a spending budget is used up for its window
    ├── TopologyError           (also ValueError) an invalid topology: file, line, field
    ├── CheckpointConflict      a checkpoint write lost against a newer version
    ├── StoreUnavailable        (also ConnectionError) the checkpoint store (or the
    │                           lock backend) cannot be reached
    ├── LockHeld                (also TimeoutError) another holder kept the lock past
    │                           wait_timeout: names it and when its lease ends
    ├── LockLost                a held lock's lease could not be renewed: the body
    │                           was cancelled
    └── StateError              (also ValueError) state that cannot be checkpointed,
                                or a checkpoint that cannot be read back
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

__all__ = [
    "ActorFailed",
    "ActorNotFound",
    "ActorStopped",
    "ActorSystemError",
    "AskTimeout",
    "BudgetExceeded",
    "CheckpointConflict",
    "CircuitOpen",
    "LockHeld",
    "LockLost",
    "MailboxFull",
    "ResourceError",
    "StartFailed",
    "StateError",
    "StoreUnavailable",
    "SupervisorGaveUp",
    "TopologyError",
    "UnknownMessage",
]


class ActorSystemError(Exception):
    """Base class of every error raised by the runtime."""


class MailboxFull(ActorSystemError):
    """The mailbox is full and its overflow policy refused the message.

    Raised by ``tell_nowait`` under ``block``, by ``tell``/``ask`` under
    ``reject``, and to an asker whose message was evicted by ``drop_oldest``
    or ``drop_newest``.
    """


class AskTimeout(ActorSystemError, TimeoutError):
    """``ask`` got no reply within its timeout."""


class ActorFailed(ActorSystemError):
    """The handler raised while handling the message; ``__cause__`` is the original."""


class SupervisorGaveUp(ActorFailed):
    """A supervisor exceeded its restart intensity and stopped all its children.

    Raised out of ``open_system`` when the root supervisor gives up; the crash
    that exhausted the intensity is ``__cause__``.
    """


class StartFailed(ActorFailed):
    """An actor could not be started: ``on_start`` raised, or its checkpoint
    could not be read. ``__cause__`` is the error.

    Raised by ``system.spawn`` (the actor is not added, as OTP's
    ``start_child``), and out of ``open_system`` when a ``temporary`` child of
    the tree fails its first start. Other children's failed first starts
    are restarted under the policy until they run, their circuit opens, or
    the intensity is exceeded (``SupervisorGaveUp``).
    """


class ActorStopped(ActorSystemError):
    """The actor has stopped for good (or stopped before handling the message)."""


class ActorNotFound(ActorSystemError, LookupError):
    """No actor lives at that path."""


class UnknownMessage(ActorSystemError, TypeError):
    """The target actor has no handler for the message's type."""


class CircuitOpen(ActorSystemError):
    """The target's circuit breaker is open (or half-open with its trial taken)."""


class ResourceError(ActorSystemError):
    """A resource's backend failed a request: an HTTP error status from an
    LLM API, an MCP server that exited or answered with an error, no pool
    connection within the timeout. The backend's own exception, if any, is
    ``__cause__``.

    Attributes:
        resource: the resource's name.
        transient: whether trying again later may succeed (the resource has
            already retried as its ``retry`` allows).
        status: the HTTP status, where there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        resource: str = "",
        transient: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.resource = resource
        self.transient = transient
        self.status = status


class BudgetExceeded(ActorSystemError):
    """A budget (``budget:`` on a resource or a supervisor, with
    ``on_exhausted: refuse``) has been spent for its current window: the
    request was not sent. It is the asker's answer only: the resource goes
    on serving, and neither its breaker nor its limiter counts it.

    Attributes:
        scope: whose budget: ``resources/<name>`` or a supervisor's path.
        unit: the limit reached: ``tokens`` or ``dollars``.
        spent: what the window has spent, in that unit.
        limit: the budget's limit, in that unit.
        resets_at: when the next window begins (a UTC ``datetime``).
    """

    def __init__(
        self,
        message: str,
        *,
        scope: str = "",
        unit: str = "tokens",
        spent: float = 0.0,
        limit: float = 0.0,
        resets_at: datetime.datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.unit = unit
        self.spent = spent
        self.limit = limit
        self.resets_at = resets_at


class CheckpointConflict(ActorSystemError):
    """A checkpoint write was made against a version older than the stored one."""


class StoreUnavailable(ActorSystemError, ConnectionError):
    """The checkpoint store cannot be reached (connection refused or lost,
    the server shutting down, a locked or unwritable database file). Also
    raised by ``ctx.lock``/``system.lock`` when the lock backend could not
    be reached before ``wait_timeout`` ran out.

    An actor whose write meets it holds its reply and retries with backoff
    for ``STORE_OUTAGE_DEADLINE`` seconds before it crashes with it; such a
    crash is an outage, not a bug: its restart does not count toward its
    supervisor's restart intensity. The store's own error is ``__cause__``.
    """


class LockHeld(ActorSystemError, TimeoutError):
    """``ctx.lock``/``system.lock`` gave up: another holder kept the lock
    past ``wait_timeout`` (at once for ``wait_timeout=0``).

    The message names the holder and when its lease ends.

    Attributes:
        name: the lock's name.
        holder: the holder's path (an actor path, or the system's name for
            ``system.lock``); None when the backend could not say.
        node, pid: the holder's host name and process id (None if unknown).
        expires_in: seconds until the holder's lease ends unless it is
            renewed (None if unknown).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str,
        holder: str | None = None,
        node: str | None = None,
        pid: int | None = None,
        expires_in: float | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.holder = holder
        self.node = node
        self.pid = pid
        self.expires_in = expires_in


class LockLost(ActorSystemError):
    """A lock was lost while held: its lease could not be renewed before it
    expired (the backend was unreachable), or another holder took it over
    after it expired. The body of the ``async with`` was cancelled and this
    is raised out of it; work done under the lock may have overlapped with
    the next holder's (fencing tokens guard against that, see docs/locks.md).

    Attributes:
        name: the lock's name.
        token: the fencing token of the lost lease.
    """

    def __init__(self, message: str, *, name: str, token: int) -> None:
        super().__init__(message)
        self.name = name
        self.token = token


class StateError(ActorSystemError, ValueError):
    """State that cannot be written as JSON, a checkpoint that cannot be read
    back into the state class, or a checkpoint asked of an actor with
    checkpointing off. The message names the actor's path (and the fields)."""


class TopologyError(ActorSystemError, ValueError):
    """The topology is invalid. ``errors`` holds one line per problem.

    Each line reads ``file:line: field.path: what is wrong``.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))
