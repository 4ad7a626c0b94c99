"""Routing decisions of a pool, as pure functions of what they read.

A pool (``_pool``) asks these which worker takes a message; they know
nothing of actors: a worker is an index, and what the pool knows of it
(whether it takes messages, how loaded it is) is passed in as a function of
the index. Each is tested alone (``tests/test_pools_routing.py``).
(``least_busy`` reads each worker's mailbox and is written inline in the
pool's ref: a call per worker per message would cost more than the pick.)

``consistent_hash`` is rendezvous (highest random weight) hashing: a key goes
to the worker whose ``score(key, worker)`` is highest. Adding a worker moves
exactly the keys the new worker now wins (a fraction ``1/(n+1)`` of them on
average), removing one moves only the keys it had, and a worker that cannot
take a message is skipped for the next highest score, without moving any
other key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

__all__ = ["key_hash", "next_usable", "rendezvous", "score", "worker_salt"]

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64's finalizer: a bijection of 64-bit integers that spreads
    every input bit over the output."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def key_hash(key: object) -> int:
    """A 64-bit hash of ``key``, the same in every process (unlike ``hash``
    of a string): integers are mixed, strings and bytes hashed with BLAKE2b,
    anything else by its ``repr``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return _mix(key & _MASK)
    if not isinstance(key, bytes):
        key = (key if isinstance(key, str) else repr(key)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def worker_salt(index: int) -> int:
    """The fixed 64-bit salt of worker ``index`` (workers are named by index)."""
    return _mix((index + 1) * 0x9E3779B97F4A7C15 & _MASK)


def score(key: int, salt: int) -> int:
    """The rendezvous weight of a key hash for one worker's salt."""
    return _mix(key ^ salt)


def rendezvous(key: int, salts: list[int], usable: Callable[[int], bool]) -> int | None:
    """The usable worker with the highest score for ``key``; None if none is usable."""
    best = None
    best_score = -1
    for index, salt in enumerate(salts):
        weight = _mix(key ^ salt)
        if weight > best_score and usable(index):
            best, best_score = index, weight
    return best


def next_usable(count: int, start: int, usable: Callable[[int], bool]) -> int | None:
    """The first usable worker from ``start`` on, wrapping around; None if none."""
    for step in range(count):
        index = (start + step) % count
        if usable(index):
            return index
    return None
