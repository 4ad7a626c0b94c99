"""Outages apart from bugs: which failures are a dependency being down.

A crash caused by an unreachable checkpoint store, a resource whose backend
fails (a transient ``ResourceError``) or a dependency's open circuit is an
outage: the crashed code is not at fault and restarting it soon will not
help. Supervisors restart such a crash with backoff (and the child's
breaker counts it), but it does not use up the restart intensity, so a
database blip cannot take a whole agent tree down. A crash of any other
kind is a bug in the crashed code, and the intensity is what stops it from
restarting in a loop.
"""

from __future__ import annotations

from .errors import CircuitOpen, ResourceError, StoreUnavailable

__all__ = ["is_outage"]

_DEPTH = 8  # how far along __cause__ a cause is looked for


def is_outage(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from (``raise ... from``,
    as ``ActorFailed`` carries a handler's error), is an outage. An error
    raised while handling an outage without ``from`` is not: a bug in an
    ``except`` block is still a bug."""
    seen = 0
    while error is not None and seen < _DEPTH:
        if isinstance(error, (StoreUnavailable, CircuitOpen)):
            return True
        if isinstance(error, ResourceError) and error.transient:
            return True
        if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        else:
            error = error.__cause__
        seen += 1
    return False
