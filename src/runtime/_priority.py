"""Message priorities: the three levels, their order, and their validation.

Mailboxes dequeue a higher priority first; a resource's limiter admits its
waiters in the same order. Every public call that takes ``priority=``
validates it here, so the error is the same wherever it is raised.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PRIORITIES", "PRIORITY_INDEX", "check_priority"]

PRIORITIES: Final = ("high", "normal", "low")
"""From the first served to the last."""

PRIORITY_INDEX: Final = {priority: index for index, priority in enumerate(PRIORITIES)}
"""Each priority's rank: 0 is served first."""

PRIORITY_ERROR: Final = "priority must be 'high', 'normal' or 'low'"


def check_priority(priority: str) -> int:
    """The rank of ``priority``.

    Raises:
        ValueError: not ``high``, ``normal`` or ``low``.
    """
    try:
        return PRIORITY_INDEX[priority]
    except (KeyError, TypeError):
        raise ValueError(PRIORITY_ERROR) from None
