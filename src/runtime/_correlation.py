"""Correlation ids: one per chain of messages, carried by every message.

A message sent from outside any handler starts a chain; a message sent while
a handler (or ``on_start``, or a task it started) runs carries that
handler's message's id. Ids are made lazily: a chain that nobody logs from
or sends on never makes one. The structlog processor ``add_correlation_id``
(in the ``runtime start`` configuration; add it to your own) puts it in
every log line written while a handler runs, the runtime's and the
application's.
"""

from __future__ import annotations

import contextvars
import itertools
import secrets
from collections.abc import MutableMapping
from typing import Any

__all__ = [
    "ACTOR_PATH",
    "CURRENT",
    "CorrelationSlot",
    "add_correlation_id",
    "correlation_id",
    "current",
    "current_actor",
]

_PREFIX = secrets.token_hex(3)  # tells this process's ids from another's
_ids = itertools.count(1)


class CorrelationSlot:
    """The correlation of what a task is handling now (one slot per task,
    updated per message); ``value`` 0 until an id is needed, or the id
    itself (a string) for a chain that came from another process."""

    __slots__ = ("value",)

    def __init__(self, value: int | str = 0) -> None:
        self.value = value

    def number(self) -> int | str:
        if not self.value:
            self.value = next(_ids)
        return self.value

    def __repr__(self) -> str:
        number = self.number()
        return number if isinstance(number, str) else format_id(number)

    __str__ = __repr__


CURRENT: contextvars.ContextVar[CorrelationSlot | None] = contextvars.ContextVar(
    "runtime_correlation", default=None
)


ACTOR_PATH: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "runtime_actor_path", default=None
)
"""The path of the actor whose task this is: set once per incarnation in its
own task, so its handlers, ``on_start``, ``on_stop`` and the tasks of its
``ctx.nursery`` all see it. A resource reads it to know who asks."""


def current_actor() -> str | None:
    """The path of the actor running this task, or None outside every actor."""
    return ACTOR_PATH.get()


def format_id(number: int) -> str:
    return f"{_PREFIX}-{number:x}"


def current() -> int | str:
    """The current chain's id as a number (its id, for a chain from another
    process); 0 outside any handler."""
    slot = CURRENT.get()
    return 0 if slot is None else slot.number()


def correlation_id() -> str | None:
    """The correlation id of the message being handled, or None outside a
    handler (``on_start`` and ``on_stop`` are not messages)."""
    slot = CURRENT.get()
    return None if slot is None else repr(slot)


def add_correlation_id(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add ``correlation_id`` to events logged while a
    handler runs (a value the event already has is kept)."""
    slot = CURRENT.get()
    if slot is not None:
        event_dict.setdefault("correlation_id", repr(slot))
    return event_dict
