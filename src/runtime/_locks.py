"""Locks with leases: ``ctx.lock`` and ``system.lock``.

``LockManager`` serves the locks of one system over one backend
(``_lock_backends``): it waits for a lock (polling the backend with a short
backoff, and woken at once when a holder in this process releases it),
renews a held lease every ttl/3 in a task of its own, cancels the holder's
body when the lease cannot be renewed before it expires, and counts what
happens for ``lock_statistics()`` and the metrics.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import attrs
import trio

from ._backends import BackendUnavailable, process_identity
from ._durations import Durations
from ._lock_backends import Grant, Holding, LockBackend, MemoryLocks, Owner
from ._logging import get_logger
from .errors import LockHeld, LockLost, StoreUnavailable

__all__ = [
    "LOCK_WAIT_BUCKETS",
    "OUTCOMES",
    "HeldLock",
    "Hold",
    "Lease",
    "LockCounters",
    "LockManager",
    "LockStatistics",
    "prefix_of",
]

logger = get_logger()

OUTCOMES = ("acquired", "timeout", "tried", "lost", "error")
"""How an acquisition ends: granted; ``LockHeld`` after waiting; ``LockHeld``
at once (``wait_timeout=0``); granted, then lost while held; the backend
could not be reached (or failed) before ``wait_timeout``."""

LOCK_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Wait-time buckets in seconds: from an uncontended grant to minutes behind a holder."""

PREFIXES_KEPT = 100
"""Distinct ``prefix`` label values; names with further prefixes count as ``other``."""

PREFIX_LENGTH = 64
"""Characters of a prefix kept as its label value."""

FIRST_POLL = 0.005
"""The first wait of a waiter between two tries of the backend; it doubles
up to the backend's ``poll`` (0.2 s for SQLite, PostgreSQL and NATS)."""

SWEEP_EVERY = 60.0
"""Seconds between two sweeps of expired leases from the backend."""

NAMES_KEPT = 1024
"""Lock names whose counters a manager keeps at hand for its fast path."""

OWNERS_KEPT = 1024
"""Holders' ``Owner`` records kept by a manager (the actors' paths)."""

RELEASE_TIMEOUT = 5.0
"""Seconds a release may take (shielded from cancellation) before the lease
is left to expire."""


def prefix_of(name: str) -> str:
    """The part of ``name`` before its first ``:`` (the whole name without
    one), cut to ``PREFIX_LENGTH`` characters."""
    return name.partition(":")[0][:PREFIX_LENGTH]


@attrs.frozen
class HeldLock:
    """A lock held by this system now.

    Attributes:
        name: the lock's name.
        holder: the holder's path.
        token: the lease's fencing token.
        expires_in: seconds until the lease ends unless renewed.
    """

    name: str
    holder: str
    token: int
    expires_in: float


@attrs.frozen
class LockStatistics:
    """A snapshot of a system's locks.

    Attributes:
        backend: ``memory``, ``sqlite``, ``postgresql`` or ``nats``.
        url: the backend's URL (without a password).
        held: the locks this system holds now, by name.
        waiting: acquisitions waiting now.
        acquired: grants so far.
        timeouts: acquisitions that waited past ``wait_timeout`` (``LockHeld``).
        tried: ``wait_timeout=0`` acquisitions refused at once (``LockHeld``).
        lost: leases lost while held (``LockLost``).
        errors: acquisitions that failed on the backend (unreachable, or an error).
        contentions: acquisitions that found the lock held (they waited or were refused).
        wait_seconds: the time acquisitions spent waiting, in all.
    """

    backend: str
    url: str
    held: tuple[HeldLock, ...]
    waiting: int
    acquired: int
    timeouts: int
    tried: int
    lost: int
    errors: int
    contentions: int
    wait_seconds: float


class Lease:
    """A held lock, as ``async with ctx.lock(...) as lease`` gives it.

    Attributes:
        name: the lock's name.
        token: the fencing token: greater than every token granted for this
            name before (in every process using the backend). Pass it to
            what the lock protects, which refuses a token lower than the
            greatest it has seen.
        holder: the holder's path.
        ttl: the lease's length; it is renewed every ``ttl / 3``.
    """

    __slots__ = (
        "_expires_at",
        "body",
        "holder",
        "lost",
        "name",
        "released",
        "revision",
        "token",
        "ttl",
    )

    def __init__(  # noqa: PLR0917 (made by the manager only)
        self,
        name: str,
        token: int,
        revision: int,
        holder: str,
        ttl: float,
        expires_at: float | None,
    ) -> None:
        self.name = name
        self.token = token
        self.revision = revision
        self.holder = holder
        self.ttl = ttl
        # None: held in process (memory://), where nothing expires while
        # the block runs: its end is always ttl ahead.
        self._expires_at = expires_at
        self.lost: str | None = None  # why, once lost
        self.released = False
        self.body: trio.CancelScope | None = None  # the holder's block, cancelled if lost

    @property
    def expires_at(self) -> float:
        """When the lease ends unless renewed, on trio's clock
        (``trio.current_time()``): measured from before the last grant or
        renewal was sent, so never later than the backend's own expiry."""
        if self._expires_at is None:
            return trio.current_time() + self.ttl
        return self._expires_at

    @expires_at.setter
    def expires_at(self, value: float) -> None:
        self._expires_at = value

    @property
    def expires_in(self) -> float:
        """Seconds until the lease ends unless renewed (0 once lost or released)."""
        if not self.held:
            return 0.0
        return max(0.0, self.expires_at - trio.current_time())

    @property
    def held(self) -> bool:
        """Whether the lock is still held: not released, not lost, and its
        lease not past ``expires_at``."""
        if self.lost is not None or self.released:
            return False
        return self._expires_at is None or trio.current_time() < self._expires_at

    def __repr__(self) -> str:
        return f"<Lease {self.name!r} token={self.token} holder={self.holder!r}>"


class LockCounters:
    """What the metrics read, per prefix: outcomes, contentions, wait times,
    and the waiters now. Prefixes beyond ``PREFIXES_KEPT`` count as ``other``."""

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], int] = {}
        self.contentions: dict[str, int] = {}
        self.waits: dict[str, Durations] = {}
        self.waiting: dict[str, int] = {}
        # name -> its outcome key for a grant, and its wait histogram
        self._granted: dict[str, tuple[tuple[str, str], Durations]] = {}

    def label(self, name: str) -> str:
        """The ``prefix`` label of the lock ``name``."""
        prefix = prefix_of(name)
        if prefix in self.waits or len(self.waits) < PREFIXES_KEPT:
            return prefix
        return "other"

    def count(self, prefix: str, outcome: str, waited: float | None = None) -> None:
        key = (prefix, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        durations = self.waits.get(prefix)
        if durations is None:
            durations = self.waits[prefix] = Durations(LOCK_WAIT_BUCKETS)
        if waited is not None:
            durations.observe(waited)

    def count_granted(self, name: str) -> None:
        """Count a grant with no wait: ``count(label(name), "acquired", 0.0)``,
        with the name's counters looked up once."""
        found = self._granted.get(name)
        if found is None:
            prefix = self.label(name)
            self.count(prefix, "acquired", 0.0)
            if len(self._granted) >= NAMES_KEPT:
                self._granted.clear()
            self._granted[name] = ((prefix, "acquired"), self.waits[prefix])
            return
        key, durations = found
        self.outcomes[key] += 1
        durations.counts[0] += 1  # a wait of 0 s: the first bucket

    def total(self, outcome: str) -> int:
        return sum(count for (_, kind), count in self.outcomes.items() if kind == outcome)


@attrs.define
class _Acquisition:
    """One call waiting for a lock, and what its tries found."""

    name: str
    owner: Owner
    ttl: float
    prefix: str
    start: float
    deadline: float
    tries: int = 0
    found: Holding | None = None
    outage: BackendUnavailable | None = None


class LockManager:
    """The locks of one system over one backend.

    ``open()`` runs the tasks that renew held leases and sweep expired ones:
    locks can be taken while it is open.
    """

    def __init__(self, backend: LockBackend, *, system: str) -> None:
        self.backend = backend
        self.system = system
        self.counters = LockCounters()
        self.held: dict[str, Lease] = {}
        self._nursery: trio.Nursery | None = None
        self._sweeping = False  # the sweeper starts with the first lock taken
        self._released: dict[str, trio.Event] = {}  # local waiters, woken on release
        self._wait_seconds = 0.0
        self._owners: dict[str, Owner] = {}
        self._due: list[tuple[float, int, Lease]] = []  # renewals: (when, order, lease)
        self._order = itertools.count()
        self._renewing = False  # the renewing task starts with the first lease
        self._wakeup: trio.CancelScope | None = None  # its sleep until the next renewal
        self._watched: set[int] = set()  # backend sessions watched for their end

    @asynccontextmanager
    async def open(self) -> AsyncIterator[LockManager]:
        """Run the renewals and the sweeper until the block ends; then close
        the backend."""
        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield self
                except trio.Cancelled:
                    raise
                except BaseException as exc:
                    # Raised below as itself, not wrapped in the nursery's group.
                    body_error = exc
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.backend.aclose()
        if body_error is not None:
            raise body_error

    # -- taking and holding ----------------------------------------------------------

    def lock(
        self, name: str, *, holder: str, ttl: float = 30.0, wait_timeout: float | None = None
    ) -> Hold:
        """Hold the lock ``name`` for an ``async with`` block (see ``ActorContext.lock``).

        Raises:
            LockHeld: another holder kept it past ``wait_timeout``.
            LockLost: the lease could not be renewed; the block was cancelled.
            StoreUnavailable: the backend could not be reached in time.
            ValueError: a bad ``ttl`` or ``wait_timeout``.
        """
        _check(name, ttl, wait_timeout)
        return Hold(self, name, holder, ttl, wait_timeout)

    def owner(self, holder: str) -> Owner:
        """The ``Owner`` record of ``holder`` in this process (kept: one per path)."""
        owner = self._owners.get(holder)
        if owner is None:
            if len(self._owners) >= OWNERS_KEPT:
                self._owners.clear()
            owner = self._owners[holder] = Owner(holder, *process_identity())
        return owner

    def start_service(self) -> trio.Nursery:
        """The nursery of renewals (the sweeper started on the first lock).

        Raises:
            RuntimeError: the system does not run.
        """
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError("locks are served only while the system runs")
        if not self._sweeping:
            # A system that never takes a lock never touches its backend.
            self._sweeping = True
            nursery.start_soon(self._sweep_every, SWEEP_EVERY)
        return nursery

    def grant_in_process(self, name: str, holder: str, ttl: float) -> Lease | None:
        """The lease of ``name`` if the in-process backend grants it now
        (no wait, no renewal: the lease lasts while the block runs); None
        if it is held."""
        backend = self.backend
        if not isinstance(backend, MemoryLocks):
            return None
        token = backend.grant_nowait(name, self.owner(holder), ttl)
        if token is None:
            return None
        self.counters.count_granted(name)
        lease = Lease(name, token, token, holder, ttl, None)
        self.held[name] = lease
        return lease

    def release_in_process(self, lease: Lease) -> None:
        """Release an in-process lease (no wait: nothing to reach)."""
        name = lease.name
        lease.released = True
        lease._expires_at = trio.current_time()
        if self.held.get(name) is lease:
            del self.held[name]
        backend = self.backend
        if isinstance(backend, MemoryLocks):
            backend.release_nowait(name, lease.token)
        if name in self._released:
            self._wake(name)

    async def acquire(
        self, name: str, holder: str, ttl: float, wait_timeout: float | None
    ) -> Lease:
        """Wait for the lock and take it; the caller releases it (``lock``
        does). Cancellation while waiting takes nothing."""
        owner = self.owner(holder)
        start = trio.current_time()
        deadline = math.inf if wait_timeout is None else start + wait_timeout
        ask = _Acquisition(name, owner, ttl, self.counters.label(name), start, deadline)
        waiting = self.counters.waiting
        waiting[ask.prefix] = waiting.get(ask.prefix, 0) + 1
        try:
            return await self._wait_for(ask)
        finally:
            waiting[ask.prefix] -= 1

    async def _wait_for(self, ask: _Acquisition) -> Lease:
        # Waiters in process need no polling: a release wakes them.
        delay = FIRST_POLL if math.isfinite(self.backend.poll) else math.inf
        while True:
            sent = trio.current_time()
            try:
                result = await self.backend.try_acquire(ask.name, ask.owner, ask.ttl)
            except BackendUnavailable as exc:
                result, ask.outage = None, exc
                if ask.tries == 0:
                    logger.warning("lock_backend_unavailable", lock=ask.name, error=str(exc))
            except Exception:
                self.counters.count(ask.prefix, "error", trio.current_time() - ask.start)
                raise
            else:
                ask.outage = None
            ask.tries += 1
            if isinstance(result, Grant):
                return self._granted(ask, result, sent)
            if isinstance(result, Holding):
                ask.found = result
            now = trio.current_time()
            if now >= ask.deadline:
                raise await self._refused(ask, now - ask.start)
            wait = min(delay * random.uniform(0.5, 1.0), ask.deadline - now)
            if ask.found is not None:
                wait = min(wait, ask.found.expires_in)
            await self._sleep_unless_released(ask.name, max(wait, 0.0))
            delay = min(delay * 2, self.backend.poll)

    def _granted(self, ask: _Acquisition, grant: Grant, sent: float) -> Lease:
        counters = self.counters
        waited = sent - ask.start if ask.tries > 1 else 0.0
        if ask.tries > 1:
            counters.contentions[ask.prefix] = counters.contentions.get(ask.prefix, 0) + 1
            self._wait_seconds += waited
        counters.count(ask.prefix, "acquired", waited)
        expires_at = None if self.backend.in_process else sent + ask.ttl
        lease = Lease(ask.name, grant.token, grant.revision, ask.owner.path, ask.ttl, expires_at)
        self.held[ask.name] = lease
        return lease

    async def _refused(self, ask: _Acquisition, waited: float) -> Exception:
        """The error for an acquisition that ends without the lock, counted."""
        counters = self.counters
        if ask.outage is not None:
            counters.count(ask.prefix, "error", waited)
            return StoreUnavailable(
                f"lock {ask.name!r}: the lock backend {self.backend.url} "
                f"could not be reached: {ask.outage}"
            )
        counters.contentions[ask.prefix] = counters.contentions.get(ask.prefix, 0) + 1
        outcome = "tried" if ask.deadline == ask.start else "timeout"
        counters.count(ask.prefix, outcome, waited)
        self._wait_seconds += waited
        found = ask.found
        if found is None:
            try:
                found = await self.backend.holder(ask.name)
            except BackendUnavailable:
                found = None
        return _lock_held(ask.name, found, outcome, waited)

    async def _sleep_unless_released(self, name: str, seconds: float) -> None:
        event = self._released.get(name)
        if event is None:
            event = self._released[name] = trio.Event()
        with trio.move_on_after(seconds):
            await event.wait()
        if not event.is_set() and event.statistics().tasks_waiting == 0:
            self._released.pop(name, None)  # nobody waits on it now: keep nothing

    def _wake(self, name: str) -> None:
        event = self._released.pop(name, None)
        if event is not None:
            event.set()

    def hold(self, lease: Lease, body: trio.CancelScope) -> None:
        """Keep ``lease`` renewed while it is held; cancel ``body`` if it is lost.

        One task renews every held lease when it is due (ttl/3 after its
        last renewal), so taking a lock starts no task of its own.
        """
        lease.body = body
        self._schedule(lease, lease.expires_at - lease.ttl * 2 / 3)
        if self.backend.sessions and lease.revision not in self._watched:
            self._watched.add(lease.revision)
            self.start_service().start_soon(self._watch_session, lease.revision)

    def _schedule(self, lease: Lease, at: float) -> None:
        due = self._due
        if len(due) > 64 and len(due) > 4 * len(self.held):
            # Entries of released leases wait for their time: drop them now.
            due[:] = [entry for entry in due if _renewable(entry[2])]
            heapq.heapify(due)
        heapq.heappush(due, (at, next(self._order), lease))
        wakeup = self._wakeup
        if wakeup is not None and at < wakeup.deadline:
            wakeup.deadline = at
        if not self._renewing:
            self._renewing = True
            self.start_service().start_soon(self._renew_due)

    async def _renew_due(self) -> None:
        """Start the renewal of each held lease when it is due."""
        due = self._due
        while True:
            with trio.CancelScope(deadline=due[0][0] if due else math.inf) as wakeup:
                self._wakeup = wakeup
                await trio.sleep_forever()
            self._wakeup = None
            now = trio.current_time()
            while due and due[0][0] <= now:
                lease = heapq.heappop(due)[2]
                if _renewable(lease):
                    self.start_service().start_soon(self._renew, lease)

    async def _renew(self, lease: Lease) -> None:
        """Renew ``lease`` once (trying again every ``min(ttl/3, 1 s) / 3``
        until it expires), then schedule the next renewal; lose it if that fails."""
        owner = self.owner(lease.holder)
        retry = min(lease.ttl / 3, 1.0) / 3
        while _renewable(lease):
            sent = trio.current_time()
            if sent >= lease.expires_at:
                self._lose(lease, "the lease expired before it could be renewed")
                return
            revision: int | None = -1  # -1: no answer before the lease expired
            try:
                with trio.move_on_after(lease.expires_at - sent):
                    revision = await self.backend.renew(
                        lease.name, owner, lease.token, lease.revision, lease.ttl
                    )
            except Exception as exc:  # unreachable, or failing: try again until it expires
                logger.warning("lock_renewal_failed", lock=lease.name, error=repr(exc))
                await trio.sleep_until(min(trio.current_time() + retry, lease.expires_at))
                continue
            if not _renewable(lease):
                return  # released (or lost) meanwhile
            if revision is None:
                self._lose(lease, "the lease was taken over or removed on the backend")
            elif revision == -1:
                self._lose(lease, "the lease expired before it could be renewed")
            else:
                lease.revision = revision
                lease.expires_at = sent + lease.ttl
                self._schedule(lease, sent + lease.ttl / 3)
            return

    async def _watch_session(self, revision: int) -> None:
        """Lose every lease granted in the backend session ``revision`` when it ends."""
        await self.backend.wait_lost(revision)
        self._watched.discard(revision)
        for lease in list(self.held.values()):
            if lease.revision == revision and _renewable(lease):
                self._lose(lease, "the backend ended the session that held it")

    def _lose(self, lease: Lease, why: str) -> None:
        lease.lost = why
        if self.held.get(lease.name) is lease:
            del self.held[lease.name]
        self.counters.count(self.counters.label(lease.name), "lost")
        logger.warning("lock_lost", lock=lease.name, token=lease.token, holder=lease.holder,
                       reason=why)  # fmt: skip
        if lease.body is not None:
            lease.body.cancel()
        self._wake(lease.name)

    async def release(self, lease: Lease) -> None:
        """Release the lease on the backend (shielded: a cancelled holder
        releases too); a failure leaves it to expire."""
        if self.held.get(lease.name) is lease:
            del self.held[lease.name]
        lease.released = True
        if lease.lost is None:
            with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
                try:
                    await self.backend.release(lease.name, lease.token, lease.revision)
                except Exception as exc:  # the lease expires by itself
                    logger.warning("lock_release_failed", lock=lease.name, error=repr(exc))
        self._wake(lease.name)

    # -- reading ---------------------------------------------------------------------

    async def is_locked(self, name: str) -> bool:
        """Whether anyone holds ``name`` now (a lease that has not expired).

        Raises:
            StoreUnavailable: the backend could not be reached.
        """
        try:
            return await self.backend.holder(name) is not None
        except BackendUnavailable as exc:
            raise StoreUnavailable(f"lock {name!r}: {exc}") from exc

    def statistics(self) -> LockStatistics:
        """A snapshot: the locks held now and the counts so far."""
        counters = self.counters
        now = trio.current_time()
        held = tuple(
            HeldLock(name, lease.holder, lease.token, max(0.0, lease.expires_at - now))
            for name, lease in sorted(self.held.items())
        )
        return LockStatistics(
            backend=self.backend.kind,
            url=self.backend.url,
            held=held,
            waiting=sum(counters.waiting.values()),
            acquired=counters.total("acquired"),
            timeouts=counters.total("timeout"),
            tried=counters.total("tried"),
            lost=counters.total("lost"),
            errors=counters.total("error"),
            contentions=sum(counters.contentions.values()),
            wait_seconds=self._wait_seconds,
        )

    def held_by_prefix(self) -> dict[str, int]:
        """Locks held now, by ``prefix`` label."""
        found: dict[str, int] = {}
        for name in self.held:
            prefix = self.counters.label(name)
            found[prefix] = found.get(prefix, 0) + 1
        return found

    async def _sweep_every(self, period: float) -> None:
        while True:
            await trio.sleep(period)
            try:
                swept = await self.backend.sweep()
            except Exception as exc:  # the next sweep tries again
                logger.warning("locks_sweep_failed", error=repr(exc))
                continue
            if swept:
                logger.info("locks_swept", expired=swept)


class Hold:
    """``async with manager.lock(...) as lease``: waits for the lock and
    takes it on entry, releases it on exit.

    In process (``memory://``) a free lock is granted and released with no
    task and no wait beyond one checkpoint on entry, as ``trio.Lock``: the
    holder is in this process, so there is nothing to renew. On the other
    backends a task renews the lease while the block runs and cancels the
    block if the lease is lost (``LockLost`` is raised out of it then).
    """

    __slots__ = ("_body", "_holder", "_lease", "_manager", "_name", "_ttl", "_wait")

    def __init__(
        self, manager: LockManager, name: str, holder: str, ttl: float, wait: float | None
    ) -> None:
        self._manager = manager
        self._name = name
        self._holder = holder
        self._ttl = ttl
        self._wait = wait
        self._lease: Lease | None = None
        self._body: trio.CancelScope | None = None

    async def __aenter__(self) -> Lease:
        manager = self._manager
        manager.start_service()
        if manager.backend.in_process:
            await trio.lowlevel.checkpoint_if_cancelled()
            lease = manager.grant_in_process(self._name, self._holder, self._ttl)
            if lease is not None:
                self._lease = lease
                await trio.lowlevel.cancel_shielded_checkpoint()
                return lease
        lease = await manager.acquire(self._name, self._holder, self._ttl, self._wait)
        self._lease = lease
        if not manager.backend.in_process:
            self._body = body = trio.CancelScope()
            manager.hold(lease, body)
            body.__enter__()
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        lease, body = self._lease, self._body
        assert lease is not None
        if body is None:
            self._manager.release_in_process(lease)
            return False
        try:
            handled = body.__exit__(exc_type, exc, traceback)
        finally:
            await self._manager.release(lease)
        if lease.lost is not None and (exc is None or handled):
            raise LockLost(
                f"lock {lease.name!r} (token {lease.token}) was lost by {lease.holder}: "
                f"{lease.lost}; the block was cancelled",
                name=lease.name,
                token=lease.token,
            )
        return handled


def _renewable(lease: Lease) -> bool:
    return lease.lost is None and not lease.released


def _check(name: str, ttl: float, wait_timeout: float | None) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a lock's name is a non-empty string, got {name!r}")
    if not (isinstance(ttl, (int, float)) and 0 < ttl < math.inf):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    if wait_timeout is not None and not (
        isinstance(wait_timeout, (int, float)) and wait_timeout >= 0
    ):
        raise ValueError(f"wait_timeout must be None or seconds >= 0, got {wait_timeout!r}")


def _lock_held(name: str, found: Holding | None, outcome: str, waited: float) -> LockHeld:
    how = "tried once" if outcome == "tried" else f"waited {waited:.3g} s"
    if found is None:
        return LockHeld(f"lock {name!r} is held by another holder ({how})", name=name)
    return LockHeld(
        f"lock {name!r} is held by {found.path} (node {found.node}, pid {found.pid}); "
        f"its lease ends in {found.expires_in:.3g} s unless renewed ({how})",
        name=name,
        holder=found.path,
        node=found.node,
        pid=found.pid,
        expires_in=found.expires_in,
    )
