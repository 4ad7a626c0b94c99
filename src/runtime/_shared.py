"""Shared resource limits: one resource's concurrency, rate window, priority
order and pauses counted across every process that runs a system of the
same name, through PostgreSQL or NATS JetStream KV.

``SharedLimits`` is what a ``Limiter`` consults when its resource is
``shared: true``: the limiter keeps its local queue (priority order, FIFO
within a priority), breaker, timeout and retries, and before it admits its
head waiter it asks ``acquire`` for a grant. A grant is a concurrency lease
(when ``max_concurrency`` is set) and a start in the shared rate window (when
``rate`` is set), taken in one atomic step at the engine:

- PostgreSQL: one function call in one transaction, serialized per resource
  by an advisory transaction lock; leases and starts are rows (of UNLOGGED
  tables: coordination state, not worth a WAL flush per admission) stamped
  with the server's ``clock_timestamp()``; an expired lease is deleted
  before counting.
- NATS: a key per concurrency slot (``slot.<i>``), taken with ``create``,
  renewed and taken over (once expired) with ``update`` by revision, given
  back with ``delete`` by revision; one key ``rate`` holding the recent
  starts, updated by revision (retried on conflict); the process's wall
  clock; the bucket's TTL removes keys left behind.

A background task (``serve``, run by the resource while it runs) gives
leases back, renews those held every third of ``lease``, writes pauses,
and beats the process's membership (with its best waiting priority).
When the engine cannot be reached the limits fall back to ``limit / known
processes`` locally, until a probe finds the engine again.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ._backends import (
    Backends,
    NatsBackend,
    NatsKV,
    PostgresBackend,
    backend_kind,
    process_identity,
    redacted,
)
from ._logging import get_logger
from ._specs import RateSpec

__all__ = [
    "POLL_INTERVAL",
    "Denial",
    "Grant",
    "NatsEngine",
    "PostgresEngine",
    "SharedEngine",
    "SharedLimits",
    "default_guard",
    "nats_bucket",
]

logger = get_logger()

POLL_INTERVAL = 0.025
"""Seconds a waiter waits before asking again after a refusal that names no
time (the concurrency tokens are all held elsewhere, or another process has
a higher-priority waiter)."""

DEBOUNCE = 0.025
"""Seconds a change of the best waiting priority lasts before it is
published: a waiter admitted at once publishes nothing."""

BUCKET_TTL = 3600.0
"""Seconds a NATS key lives after its last write (keys left by dead
processes; the expiry written in each value is what counts)."""

_CAS_TRIES = 20


def default_guard(period: float) -> float:
    """The guard added to a shared rate period: 2% of it, at least 100 ms
    (what a loaded machine's scheduling may delay one request more than
    another between its admission and its arrival at the backend)."""
    return max(0.1, 0.02 * period)


class Grant:
    """One admission granted by the engine: its lease (None without
    ``max_concurrency``), and on NATS the slot and revision it holds."""

    __slots__ = ("lease", "revision", "slot")

    def __init__(self, lease: str | None = None) -> None:
        self.lease = lease
        self.slot: int | None = None
        self.revision: int | None = None

    def __repr__(self) -> str:
        return f"<Grant {self.lease} slot={self.slot}>"


class Denial:
    """A refusal: ``wait`` seconds before room may come (None: not known,
    ask again after ``POLL_INTERVAL``), and why (``paused``, ``priority``,
    ``concurrency``, ``rate``)."""

    __slots__ = ("reason", "wait")

    def __init__(self, wait: float | None, reason: str) -> None:
        self.wait = wait
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Denial {self.reason} wait={self.wait}>"


class SharedEngine(Protocol):
    """What shared limits need of a coordination engine, for one resource of
    one system. Each method raises ``BackendUnavailable`` when the engine
    cannot be reached."""

    async def acquire(
        self,
        member: str,
        priority: int,
        *,
        max_concurrency: int | None,
        requests: int | None,
        window: float,
        lease: float,
    ) -> Grant | Denial:
        """A grant (a lease if ``max_concurrency``, a start in the window if
        ``requests``), unless a pause is in force, another live member has a
        waiter of a better ``priority`` (0 is high), the leases are all held,
        or the window ``[now - window, now]`` holds ``requests`` starts."""
        ...

    async def renew(self, grants: list[Grant], lease: float) -> None:
        """Extend the leases of ``grants`` to ``lease`` seconds from now."""
        ...

    async def release(self, grants: list[Grant]) -> None:
        """Give the leases of ``grants`` back."""
        ...

    async def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` in every process (a later end wins)."""
        ...

    async def heartbeat(
        self, member: str, node: str, pid: int, waiting: int | None, lease: float
    ) -> int:
        """Register ``member`` live for ``lease`` seconds with its best
        waiting priority; returns the live members, it included."""
        ...

    async def leave(self, member: str, grants: list[Grant]) -> None:
        """Remove ``member`` and give back ``grants``."""
        ...


# -- PostgreSQL ------------------------------------------------------------------

_PG_MIGRATION_LOCK = 7240413  # an advisory lock key: one process migrates at a time

_PG_SCHEMA = """
CREATE UNLOGGED TABLE IF NOT EXISTS runtime_shared_members (
    system text NOT NULL, resource text NOT NULL, member text NOT NULL,
    node text NOT NULL, pid integer NOT NULL, waiting smallint,
    expires timestamptz NOT NULL, PRIMARY KEY (system, resource, member));
CREATE UNLOGGED TABLE IF NOT EXISTS runtime_shared_leases (
    system text NOT NULL, resource text NOT NULL, lease text NOT NULL,
    member text NOT NULL, expires timestamptz NOT NULL,
    PRIMARY KEY (system, resource, lease));
CREATE UNLOGGED TABLE IF NOT EXISTS runtime_shared_starts (
    system text NOT NULL, resource text NOT NULL, at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS runtime_shared_starts_at
    ON runtime_shared_starts (system, resource, at);
CREATE UNLOGGED TABLE IF NOT EXISTS runtime_shared_pauses (
    system text NOT NULL, resource text NOT NULL, until timestamptz NOT NULL,
    PRIMARY KEY (system, resource));
CREATE OR REPLACE FUNCTION runtime_shared_acquire(
    p_system text, p_resource text, p_member text, p_priority integer,
    p_max integer, p_requests integer, p_window double precision,
    p_lease double precision,
    OUT o_granted boolean, OUT o_lease text, OUT o_wait double precision,
    OUT o_reason text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now timestamptz;
    v_until timestamptz;
    v_count integer;
    v_at timestamptz;
BEGIN
    -- One admission at a time per resource, whatever the process.
    PERFORM pg_advisory_xact_lock(
        hashtextextended('runtime_shared:' || p_system || '/' || p_resource, 0));
    v_now := clock_timestamp();
    o_granted := false;
    SELECT p.until INTO v_until FROM runtime_shared_pauses p
        WHERE p.system = p_system AND p.resource = p_resource;
    IF v_until > v_now THEN
        o_wait := extract(epoch FROM v_until - v_now);
        o_reason := 'paused';
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM runtime_shared_members m
               WHERE m.system = p_system AND m.resource = p_resource
                 AND m.member <> p_member AND m.waiting < p_priority
                 AND m.expires > v_now) THEN
        o_reason := 'priority';
        RETURN;
    END IF;
    IF p_max IS NOT NULL THEN
        DELETE FROM runtime_shared_leases l
            WHERE l.system = p_system AND l.resource = p_resource AND l.expires <= v_now;
        SELECT count(*) INTO v_count FROM runtime_shared_leases l
            WHERE l.system = p_system AND l.resource = p_resource;
        IF v_count >= p_max THEN
            o_reason := 'concurrency';
            RETURN;
        END IF;
    END IF;
    IF p_requests IS NOT NULL THEN
        -- A start leaves the window once start + window <= now.
        DELETE FROM runtime_shared_starts s
            WHERE s.system = p_system AND s.resource = p_resource
              AND s.at + make_interval(secs => p_window) <= v_now;
        SELECT count(*) INTO v_count FROM runtime_shared_starts s
            WHERE s.system = p_system AND s.resource = p_resource;
        IF v_count >= p_requests THEN
            SELECT s.at INTO v_at FROM runtime_shared_starts s
                WHERE s.system = p_system AND s.resource = p_resource
                ORDER BY s.at OFFSET v_count - p_requests LIMIT 1;
            o_wait := extract(epoch FROM v_at + make_interval(secs => p_window) - v_now);
            o_reason := 'rate';
            RETURN;
        END IF;
        INSERT INTO runtime_shared_starts VALUES (p_system, p_resource, v_now);
    END IF;
    IF p_max IS NOT NULL THEN
        o_lease := gen_random_uuid()::text;
        INSERT INTO runtime_shared_leases
            VALUES (p_system, p_resource, o_lease, p_member,
                    v_now + make_interval(secs => p_lease));
    END IF;
    o_granted := true;
    o_reason := 'granted';
END
$fn$;
"""


async def _pg_migrate(connection: Any) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
        await connection.execute(_PG_SCHEMA)


class PostgresEngine:
    """Shared limits in PostgreSQL (tables ``runtime_shared_*`` and the
    function ``runtime_shared_acquire``, made on first use)."""

    def __init__(self, backend: PostgresBackend, system: str, resource: str) -> None:
        self.backend = backend
        self.system = system
        self.resource = resource
        backend.migrate_with(_pg_migrate)

    async def acquire(
        self,
        member: str,
        priority: int,
        *,
        max_concurrency: int | None,
        requests: int | None,
        window: float,
        lease: float,
    ) -> Grant | Denial:
        args = (self.system, self.resource, member, priority, max_concurrency, requests)

        async def call(connection: Any) -> Any:
            return await connection.fetchrow(
                "SELECT * FROM runtime_shared_acquire($1, $2, $3, $4, $5, $6, $7, $8)",
                *args,
                window,
                lease,
            )

        row = await self.backend.run(call)
        if row["o_granted"]:
            return Grant(row["o_lease"])
        return Denial(row["o_wait"], row["o_reason"])

    async def renew(self, grants: list[Grant], lease: float) -> None:
        leases = [grant.lease for grant in grants if grant.lease is not None]

        async def call(connection: Any) -> None:
            await connection.execute(
                "UPDATE runtime_shared_leases SET expires = clock_timestamp() "
                "+ make_interval(secs => $4) WHERE system = $1 AND resource = $2 "
                "AND lease = ANY($3::text[])",
                self.system,
                self.resource,
                leases,
                lease,
            )

        if leases:
            await self.backend.run(call)

    async def release(self, grants: list[Grant]) -> None:
        leases = [grant.lease for grant in grants if grant.lease is not None]

        async def call(connection: Any) -> None:
            await connection.execute(
                "DELETE FROM runtime_shared_leases WHERE system = $1 AND resource = $2 "
                "AND lease = ANY($3::text[])",
                self.system,
                self.resource,
                leases,
            )

        if leases:
            await self.backend.run(call)

    async def pause(self, seconds: float) -> None:
        async def call(connection: Any) -> None:
            await connection.execute(
                "INSERT INTO runtime_shared_pauses VALUES ($1, $2, clock_timestamp() "
                "+ make_interval(secs => $3)) ON CONFLICT (system, resource) DO UPDATE "
                "SET until = greatest(runtime_shared_pauses.until, EXCLUDED.until)",
                self.system,
                self.resource,
                seconds,
            )

        await self.backend.run(call)

    async def heartbeat(
        self, member: str, node: str, pid: int, waiting: int | None, lease: float
    ) -> int:
        async def call(connection: Any) -> int:
            return int(
                await connection.fetchval(
                    """
                    WITH beat AS (
                        INSERT INTO runtime_shared_members
                        VALUES ($1, $2, $3, $4, $5, $6,
                                clock_timestamp() + make_interval(secs => $7))
                        ON CONFLICT (system, resource, member) DO UPDATE
                        SET waiting = EXCLUDED.waiting, expires = EXCLUDED.expires
                        RETURNING 1
                    ), gone AS (
                        DELETE FROM runtime_shared_members
                        WHERE system = $1 AND resource = $2
                          AND expires < clock_timestamp() - interval '1 hour'
                    )
                    SELECT (SELECT count(*) FROM beat) + count(*)
                    FROM runtime_shared_members m
                    WHERE m.system = $1 AND m.resource = $2 AND m.member <> $3
                      AND m.expires > clock_timestamp()
                    """,
                    self.system,
                    self.resource,
                    member,
                    node,
                    pid,
                    waiting,
                    lease,
                )
            )

        return await self.backend.run(call)

    async def leave(self, member: str, grants: list[Grant]) -> None:
        async def call(connection: Any) -> None:
            for table in ("runtime_shared_members", "runtime_shared_leases"):
                await connection.execute(
                    f"DELETE FROM {table} WHERE system = $1 AND resource = $2 AND member = $3",
                    self.system,
                    self.resource,
                    member,
                )

        await self.backend.run(call)


# -- NATS ------------------------------------------------------------------------

_BUCKET_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def nats_bucket(system: str, resource: str) -> str:
    """The KV bucket of one resource of one system: the names made safe for
    a bucket, and a hash of them exactly (``a.b`` and ``a_b`` differ)."""
    digest = hashlib.sha256(f"{system}/{resource}".encode()).hexdigest()[:8]
    safe = f"{_BUCKET_UNSAFE.sub('_', system)}_{_BUCKET_UNSAFE.sub('_', resource)}"
    return f"runtime_shared_{safe}_{digest}"


def _live_starts(value: dict[str, Any] | None, now: float, window: float) -> list[float]:
    starts = value.get("starts", []) if value is not None else []
    return sorted(t for t in starts if t + window > now)


def _rate_wait(starts: list[float], now: float, requests: int, window: float) -> float | None:
    """Seconds until the window has room (None: it has room now)."""
    over = len(starts) - requests
    if over < 0:
        return None
    return max(0.0, starts[over] + window - now)


class NatsEngine:
    """Shared limits in a JetStream KV bucket of their own (``nats_bucket``):
    keys ``slot.<i>``, ``rate``, ``pause`` and ``members``."""

    def __init__(self, backend: NatsBackend, system: str, resource: str) -> None:
        self.backend = backend
        self.bucket = nats_bucket(system, resource)
        self._next_scan = -math.inf  # when a slot held elsewhere may have expired

    async def _kv(self) -> NatsKV:
        return await self.backend.kv(self.bucket, ttl=BUCKET_TTL)

    async def acquire(
        self,
        member: str,
        priority: int,
        *,
        max_concurrency: int | None,
        requests: int | None,
        window: float,
        lease: float,
    ) -> Grant | Denial:
        kv = await self._kv()
        found: dict[str, tuple[dict[str, Any], int] | None] = {}

        async def read(key: str) -> None:
            found[key] = await kv.get(key)

        async with trio.open_nursery() as nursery:  # the three reads in one round trip
            for key in ("pause", "members", *(("rate",) if requests is not None else ())):
                nursery.start_soon(read, key)
        now = time.time()
        paused, members, rate = found["pause"], found["members"], found.get("rate")
        if paused is not None and paused[0].get("until", 0.0) > now:
            return Denial(paused[0]["until"] - now, "paused")
        if members is not None and _outranked(members[0], member, priority, now):
            return Denial(None, "priority")
        if requests is not None:
            wait = _rate_wait(_live_starts(rate and rate[0], now, window), now, requests, window)
            if wait is not None:
                return Denial(wait, "rate")
        grant = Grant(secrets.token_hex(8) if max_concurrency is not None else None)
        if max_concurrency is not None and not await self._take_slot(
            kv, grant, member, max_concurrency, lease
        ):
            return Denial(None, "concurrency")
        if requests is not None:
            denial = await self._start(kv, rate, requests, window)
            if denial is not None:
                await self.release([grant])
                return denial
        return grant

    async def _start(
        self, kv: NatsKV, rate: tuple[dict[str, Any], int] | None, requests: int, window: float
    ) -> Denial | None:
        """Add a start to the window by compare-and-set; a Denial if it is full."""
        for _ in range(_CAS_TRIES):
            now = time.time()
            starts = _live_starts(rate and rate[0], now, window)
            wait = _rate_wait(starts, now, requests, window)
            if wait is not None:
                return Denial(wait, "rate")
            value = {"starts": [*starts, now]}
            if rate is None:
                written = await kv.create("rate", value)
            else:
                written = await kv.update("rate", value, rate[1])
            if written is not None:
                return None
            rate = await kv.get("rate")
        return Denial(None, "rate")  # lost every race: ask again soon

    async def _take_slot(
        self, kv: NatsKV, grant: Grant, member: str, slots: int, lease: float
    ) -> bool:
        """Take a free slot (``create``), or one whose lease expired (``update``
        by revision), for ``grant``."""
        value = {"member": member, "lease": grant.lease, "expires": time.time() + lease}
        first = int(hashlib.sha256(member.encode()).hexdigest(), 16) % slots
        for i in (*range(first, slots), *range(first)):
            revision = await kv.create(f"slot.{i}", value)
            if revision is not None:
                grant.slot, grant.revision = i, revision
                return True
        if trio.current_time() < self._next_scan:
            return False
        now = time.time()
        soonest = math.inf
        for i in range(slots):
            found = await kv.get(f"slot.{i}")
            if found is None:
                continue
            held, revision = found
            if held.get("expires", 0.0) > now:
                soonest = min(soonest, held["expires"])
                continue
            taken = await kv.update(f"slot.{i}", value, revision)
            if taken is not None:
                grant.slot, grant.revision = i, taken
                return True
        self._next_scan = trio.current_time() + (soonest - now if soonest < math.inf else 1.0)
        return False

    async def renew(self, grants: list[Grant], lease: float) -> None:
        kv = await self._kv()
        for grant in grants:
            if grant.slot is None or grant.revision is None:
                continue
            value = {"member": "", "lease": grant.lease, "expires": time.time() + lease}
            found = await kv.get(f"slot.{grant.slot}")
            if found is not None:
                value["member"] = found[0].get("member", "")
            revision = await kv.update(f"slot.{grant.slot}", value, grant.revision)
            if revision is None:  # taken over once expired: it is no longer ours
                grant.slot = grant.revision = None
            else:
                grant.revision = revision

    async def release(self, grants: list[Grant]) -> None:
        kv = await self._kv()
        for grant in grants:
            if grant.slot is not None and grant.revision is not None:
                await kv.delete(f"slot.{grant.slot}", grant.revision)
                grant.slot = grant.revision = None

    async def pause(self, seconds: float) -> None:
        kv = await self._kv()
        for _ in range(_CAS_TRIES):
            until = time.time() + seconds
            found = await kv.get("pause")
            if found is None:
                written = await kv.create("pause", {"until": until})
            elif found[0].get("until", 0.0) >= until:
                return
            else:
                written = await kv.update("pause", {"until": until}, found[1])
            if written is not None:
                return

    async def heartbeat(
        self, member: str, node: str, pid: int, waiting: int | None, lease: float
    ) -> int:
        kv = await self._kv()
        for _ in range(_CAS_TRIES):
            now = time.time()
            found = await kv.get("members")
            live = {
                key: entry
                for key, entry in (found[0] if found is not None else {}).items()
                if entry.get("expires", 0.0) > now
            }
            live[member] = {"node": node, "pid": pid, "waiting": waiting, "expires": now + lease}
            if found is None:
                written = await kv.create("members", live)
            else:
                written = await kv.update("members", live, found[1])
            if written is not None:
                return len(live)
        return 1

    async def leave(self, member: str, grants: list[Grant]) -> None:
        await self.release(grants)
        kv = await self._kv()
        for _ in range(_CAS_TRIES):
            found = await kv.get("members")
            if found is None or member not in found[0]:
                return
            rest = {key: entry for key, entry in found[0].items() if key != member}
            if await kv.update("members", rest, found[1]) is not None:
                return


def _outranked(members: dict[str, Any], member: str, priority: int, now: float) -> bool:
    """Whether another live member has a waiter of a better priority."""
    return any(
        key != member
        and entry.get("waiting") is not None
        and entry["waiting"] < priority
        and entry.get("expires", 0.0) > now
        for key, entry in members.items()
    )


# -- the limits of one resource ----------------------------------------------------


def _engine(url: str, backends: Backends, system: str, resource: str) -> SharedEngine:
    kind = backend_kind(url)
    if kind == "postgresql":
        return PostgresEngine(backends.postgres(url), system, resource)
    if kind == "nats":
        return NatsEngine(backends.nats(url), system, resource)
    raise ValueError(f"{redacted(url)}: shared limits need postgresql:// or nats://")


class SharedLimits:
    """The shared side of one resource's limits, in this process.

    Args:
        url: the engine (``postgresql://...`` or ``nats://...``).
        backends: the system's connections.
        system, resource: what the state is keyed by on the engine.
        lease: seconds a lease and the membership last without renewal.
        guard: seconds added to the rate period at the engine (None:
            ``default_guard``).
        name: shown in logs.
        engine: an engine to use instead of the one ``url`` names.

    Attributes:
        mode: ``backend`` (the engine counts) or ``fallback`` (this process
            admits ``limit / members`` on its own).
        members: the live processes last counted on the engine (1 before).
    """

    def __init__(
        self,
        url: str,
        backends: Backends,
        *,
        system: str,
        resource: str,
        lease: float = 10.0,
        guard: float | None = None,
        name: str = "limiter",
        engine: SharedEngine | None = None,
    ) -> None:
        self.url = url
        self.engine = engine if engine is not None else _engine(url, backends, system, resource)
        self.system = system
        self.resource = resource
        self.lease = lease
        self.guard = guard
        self.name = name
        self.node, self.pid, process = process_identity()
        # One member per instance: two systems of one name in a process are two members.
        self.member = f"{process}-{secrets.token_hex(2)}"
        self.mode = "backend"
        self.members = 1
        self.fallbacks = 0  # times it fell back
        self.on_change: Callable[[], None] = _nothing  # the limiter: share or leases changed
        self.on_pause: Callable[[float], None] = _ignore_pause  # the limiter: pause locally too
        self._held: set[Grant] = set()
        self._to_release: list[Grant] = []
        self._pause_until: float | None = None  # a pause to write (trio time it ends)
        self._waiting: int | None = None  # the best waiting priority here (0 high)
        self._waiting_since = -math.inf
        self._published: int | None = None
        self._next_beat = -math.inf
        self._next_renew = -math.inf
        self._wake = trio.Event()

    # -- what the limiter calls ------------------------------------------------

    def window(self, rate: RateSpec) -> float:
        """The rate period at the engine: the period and its guard."""
        guard = self.guard if self.guard is not None else default_guard(rate.period)
        return rate.period + guard

    async def acquire(
        self, priority: int, max_concurrency: int | None, rate: RateSpec | None
    ) -> Grant | float | None:
        """A grant for one admission at ``priority`` (0 high); or seconds to
        wait before asking again; or None: the engine is unreachable, the
        limits fell back to this process's share."""
        if self.mode != "backend":
            return None
        try:
            # Shielded and bounded: an answer lost to a cancellation would be a leaked lease.
            with trio.CancelScope(shield=True) as scope:
                scope.relative_deadline = 4 * _op_timeout(self.engine)
                result = await self.engine.acquire(
                    self.member,
                    priority,
                    max_concurrency=max_concurrency,
                    requests=rate.requests if rate is not None else None,
                    window=self.window(rate) if rate is not None else 0.0,
                    lease=self.lease,
                )
        except Exception as exc:  # unreachable, or failing: the local share serves
            self._fall_back(exc)
            return None
        if scope.cancelled_caught:
            self._fall_back(TimeoutError("the engine did not answer in time"))
            return None
        if isinstance(result, Grant):
            if result.lease is not None:
                self._held.add(result)
            return result
        if result.reason == "paused" and result.wait is not None:
            self.on_pause(result.wait)
        return result.wait if result.wait is not None else POLL_INTERVAL

    def release(self, grant: object) -> None:
        """Give ``grant`` back (the background task tells the engine)."""
        if grant in self._held:
            assert isinstance(grant, Grant)
            self._held.discard(grant)
            self._to_release.append(grant)
            self._wake.set()

    def pause(self, seconds: float) -> None:
        """Pause every process for ``seconds`` (written by the background task)."""
        until = trio.current_time() + seconds
        if self._pause_until is None or until > self._pause_until:
            self._pause_until = until
            self._wake.set()

    def set_waiting(self, best: int | None) -> None:
        """The best priority waiting here now (None: nobody waits)."""
        if best != self._waiting:
            self._waiting = best
            self._waiting_since = trio.current_time()
            self._wake.set()

    # -- the background task ---------------------------------------------------

    async def serve(self) -> None:
        """Give leases back, renew those held, write pauses, beat the
        membership (and probe the engine in fallback), until cancelled; then
        leave the membership and give back what is held."""
        try:
            while True:
                self._wake = trio.Event()
                await self._work()
                with trio.move_on_at(self._due()):
                    await self._wake.wait()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.relative_deadline = 2 * _op_timeout(self.engine)
                held = [*self._held, *self._to_release]
                self._held.clear()
                self._to_release.clear()
                with contextlib.suppress(Exception):  # else the leases expire on their own
                    await self.engine.leave(self.member, held)

    def _due(self) -> float:
        due = self._next_beat
        if self.mode == "backend":
            if self._held:
                due = min(due, self._next_renew)
            if self._waiting != self._published:
                due = min(due, self._waiting_since + DEBOUNCE)
        return due

    async def _work(self) -> None:
        now = trio.current_time()
        try:
            if self.mode != "backend":
                if now >= self._next_beat:
                    await self._beat(now)
                return
            released, self._to_release = self._to_release, []
            if released:
                try:
                    await self.engine.release(released)
                except BaseException:
                    self._to_release[:0] = released
                    raise
                self.on_change()  # a waiter here may take the lease now
            until, self._pause_until = self._pause_until, None
            if until is not None and until > now:
                await self.engine.pause(until - now)
            if self._held and now >= self._next_renew:
                self._next_renew = now + self.lease / 3
                await self.engine.renew(list(self._held), self.lease)
            if now >= self._next_beat or (
                self._waiting != self._published and now >= self._waiting_since + DEBOUNCE
            ):
                await self._beat(now)
        except Exception as exc:
            self._fall_back(exc)

    async def _beat(self, now: float) -> None:
        waiting = self._waiting
        members = await self.engine.heartbeat(self.member, self.node, self.pid, waiting, self.lease)
        self._published = waiting
        self.members = max(1, members)
        self._next_beat = now + self.lease / 3
        if self.mode != "backend":
            self.mode = "backend"
            self._next_renew = -math.inf
            logger.info(
                "shared_limit_recovered",
                resource=self.name,
                engine=redacted(self.url),
                members=self.members,
            )
            self.on_change()

    def _fall_back(self, error: BaseException) -> None:
        now = trio.current_time()
        self._next_beat = now + min(1.0, self.lease / 3)  # the next probe
        if self.mode == "fallback":
            return
        self.mode = "fallback"
        self.fallbacks += 1
        self._held.clear()  # lost with the engine: they expire there
        self._published = None
        logger.warning(
            "shared_limit_fallback",
            resource=self.name,
            engine=redacted(self.url),
            members=self.members,
            error=repr(error),
        )
        self.on_change()
        self._wake.set()


def _op_timeout(engine: SharedEngine) -> float:
    backend = getattr(engine, "backend", None)
    return float(getattr(backend, "op_timeout", 2.0))


def _nothing() -> None:
    pass


def _ignore_pause(_seconds: float) -> None:
    pass
