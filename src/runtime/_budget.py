"""Token and cost accounting, and budgets, for the requests resources serve.

The ``Ledger`` of a system counts what every request cost (input and output
tokens, and dollars where the resource has a price for the model) by
resource and by asking agent, and keeps the budgets (``budget:`` on a
resource or a supervisor). It belongs to the system, not to a resource's
incarnation: a restart of a resource forgets none of it.

Agents are named by their path, bounded by the topology: an actor that the
topology does not declare (spawned at run time) counts under its nearest
declared ancestor, and a request from outside every actor under
``(system)``. So the statistics and the metrics' ``agent`` label have at
most one entry per path of the topology file, however many actors run.

A budget limits the spending of one window of ``period`` seconds, windows
aligned to the Unix epoch in UTC (``1d``: each calendar day, UTC). It is
checked before each request: once a window's spending has reached a limit,
requests are refused (``BudgetExceeded``) or wait for the next window. The
request that crosses the limit is let through, so a window can overshoot by
at most one request per caller in flight at the time.

Spending is kept in the checkpoint store, one record per budget and window
under ``__budget__/<system>/<scope>/<window start>``, written by
compare-and-set (load, add, save against the version read; retried on a
conflict). Requests add to a local count; the ``Ledger`` adds it to the
record every ``FLUSH_INTERVAL`` seconds and when the system stops, reading
back the record's total, which includes what other processes of the same
system added. A process that dies loses at most the spending of its last
interval; a process sees other processes' spending at most one interval
late.
"""

from __future__ import annotations

import datetime
import json
import math
import random
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs
import trio

from ._checkpoint import RESERVED_PREFIX
from ._logging import get_logger
from ._specs import BudgetSpec, SupervisorSpec, Topology
from .errors import BudgetExceeded, CheckpointConflict

if TYPE_CHECKING:
    from ._checkpoint import CheckpointStore

__all__ = [
    "BUDGET_PREFIX",
    "FLUSH_INTERVAL",
    "SYSTEM_AGENT",
    "Account",
    "Budget",
    "BudgetStatistics",
    "Ledger",
    "UsageStatistics",
    "wall_clock",
]

logger = get_logger()

SYSTEM_AGENT = "(system)"
"""The agent of requests asked from outside every actor (the host program)."""

BUDGET_PREFIX = RESERVED_PREFIX
"""Where budget records live in the checkpoint store (left out of ``paths()``)."""

FLUSH_INTERVAL = 1.0
"""Seconds between two writes of the spending to the store."""

_CAS_ATTEMPTS = 50


def wall_clock() -> float:
    """Seconds since the Unix epoch: read once per ledger, to align windows
    to calendar time (trio's clock measures every interval after that)."""
    return time.time()


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


@attrs.frozen
class UsageStatistics:
    """What one agent's requests to one resource cost so far.

    Attributes:
        resource: the resource's name.
        agent: the asking actor's path, bounded by the topology (see
            ``Ledger``), or ``(system)``.
        requests: requests answered with a usage.
        input_tokens, output_tokens: as the backend reported them.
        dollars: the cost, from the resource's ``pricing``; requests whose
            model has no price add nothing.
        unpriced_requests: requests whose model had no price.
    """

    resource: str
    agent: str
    requests: int
    input_tokens: int
    output_tokens: int
    dollars: float
    unpriced_requests: int

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@attrs.frozen
class BudgetStatistics:
    """A snapshot of one budget in its current window.

    Attributes:
        scope: ``resources/<name>`` or the supervisor's path.
        tokens_spent, dollars_spent: spent in the current window, in this
            process and, as of the last flush, in every other.
        tokens_limit, dollars_limit: the limits (None: none in that unit).
        period: the window's length in seconds.
        on_exhausted: ``refuse`` or ``wait``.
        window_start, resets_at: the current window (UTC).
        exhausted: whether a limit is reached: requests are refused or wait.
        refusals: requests refused with ``BudgetExceeded`` so far.
        waits: requests that waited for a window so far.
        unflushed_tokens, unflushed_dollars: spent here, not yet in the store.
        flush_error: the last failed write to the store (None after a success).
    """

    scope: str
    tokens_spent: int
    dollars_spent: float
    tokens_limit: int | None
    dollars_limit: float | None
    period: float
    on_exhausted: str
    window_start: datetime.datetime
    resets_at: datetime.datetime
    exhausted: bool
    refusals: int
    waits: int
    unflushed_tokens: int = 0
    unflushed_dollars: float = 0.0
    flush_error: str | None = None


class Account:
    """What one agent spent on one resource, and the budgets its requests
    there spend (made once per resource and agent, then reused)."""

    __slots__ = ("budgets", "dollars", "input_tokens", "output_tokens", "requests", "unpriced")

    def __init__(self, budgets: tuple[Budget, ...]) -> None:
        self.budgets = budgets
        self.requests = self.input_tokens = self.output_tokens = self.unpriced = 0
        self.dollars = 0.0


class Budget:
    """One budget's spending in its current window: what the store held at
    the last flush, what is being written, and what is not written yet."""

    def __init__(self, system: str, scope: str, spec: BudgetSpec) -> None:
        self.system = system
        self.scope = scope
        self.spec = spec
        self.window = -math.inf  # the current window's start (wall seconds)
        self.window_end = -math.inf
        self.stored = [0, 0.0]  # the record's tokens and dollars, as last read
        # The current window's spending: stored + being written + not written.
        self.tokens = 0
        self.dollars = 0.0
        self.writing: dict[float, list[float]] = {}  # being added to the store, by window
        self.pending: dict[float, list[float]] = {}  # not yet written, by window
        self.refusals = 0
        self.waits = 0
        self.flush_error: str | None = None
        self.pruned = -math.inf  # the window whose old records were last deleted

    def key(self, window: float) -> str:
        """The store path of the record of ``window``."""
        return f"{BUDGET_PREFIX}{self.system}/{self.scope}/{int(window)}"

    def roll(self, now: float) -> None:
        """Move to the window holding ``now``; a new window starts at zero
        (until the next flush reads what other processes spent in it)."""
        if self.window <= now < self.window_end:
            return
        period = self.spec.period
        self.window = math.floor(now / period) * period
        self.window_end = self.window + period
        self.stored = [0, 0.0]
        self._recount()

    def _recount(self) -> None:
        """The current window's running total, from its parts."""
        tokens, dollars = self.stored
        for part in (self.writing, self.pending):
            extra = part.get(self.window)
            if extra is not None:
                tokens += extra[0]
                dollars += extra[1]
        self.tokens, self.dollars = int(tokens), dollars

    def spent(self, now: float) -> tuple[int, float]:
        """Tokens and dollars spent in the window of ``now``."""
        self.roll(now)
        return self.tokens, self.dollars

    def reached(self, now: float) -> tuple[str, float, float] | None:
        """The limit reached at ``now`` (unit, spent, limit), or None."""
        self.roll(now)
        spec = self.spec
        if spec.tokens is not None and self.tokens >= spec.tokens:
            return "tokens", float(self.tokens), float(spec.tokens)
        if spec.dollars is not None and self.dollars >= spec.dollars:
            return "dollars", self.dollars, spec.dollars
        return None

    def resets_at(self, now: float) -> float:
        """When the window of ``now`` ends (wall seconds)."""
        self.roll(now)
        return self.window_end

    def charge(self, tokens: int, dollars: float, now: float) -> None:
        """Add one request's spending to the window of ``now``."""
        self.roll(now)
        entry = self.pending.get(self.window)
        if entry is None:
            entry = self.pending[self.window] = [0, 0.0]
        entry[0] += tokens
        entry[1] += dollars
        self.tokens += tokens
        self.dollars += dollars

    def refusal(self, now: float, unit: str, spent: float, limit: float) -> BudgetExceeded:
        """The error of a request refused at ``now``."""
        resets = _utc(self.resets_at(now))
        left = max(0.0, self.resets_at(now) - now)
        shown = (
            f"{int(spent):,} of {int(limit):,} tokens"
            if unit == "tokens"
            else f"${spent:,.4f} of ${limit:,.2f}"
        )
        return BudgetExceeded(
            f"budget of {self.scope} exhausted: {shown} spent in this window; it resets at "
            f"{resets:%Y-%m-%d %H:%M:%S} UTC (in {_duration(left)})",
            scope=self.scope,
            unit=unit,
            spent=spent,
            limit=limit,
            resets_at=resets,
        )

    async def flush(self, store: CheckpointStore, now: float) -> None:
        """Add what is not written yet to the store's records (compare-and-set),
        and read back the current window's total.

        What is being written counts as spent meanwhile; if the write fails
        it is put back with what is not written, for the next flush.
        """
        self.roll(now)
        windows = sorted({*self.pending, self.window})
        for window in windows:
            delta = self.pending.pop(window, None) or [0, 0.0]
            self.writing[window] = delta
            try:
                total = await self._add(store, self.key(window), delta)
            except BaseException:
                del self.writing[window]
                entry = self.pending.setdefault(window, [0, 0.0])
                entry[0] += delta[0]
                entry[1] += delta[1]
                raise
            del self.writing[window]
            if window == self.window:
                self.stored = total
                self._recount()
        if self.pruned != self.window:
            # The window before the previous one is done with in every
            # process (each is at most one interval late): its record goes.
            await store.delete(self.key(self.window - 2 * self.spec.period))
            self.pruned = self.window
        self.flush_error = None

    async def _add(self, store: CheckpointStore, key: str, delta: list[float]) -> list[float]:
        """Add ``delta`` to the record ``key``; returns its new total."""
        for _ in range(_CAS_ATTEMPTS):
            loaded = await store.load(key)
            version, total = (0, [0, 0.0]) if loaded is None else (loaded[0], _decode(loaded[1]))
            if not delta[0] and not delta[1]:
                return total
            total = [total[0] + delta[0], total[1] + delta[1]]
            record = json.dumps(
                {"tokens": total[0], "dollars": total[1], "period": self.spec.period}
            )
            try:
                await store.save(key, record, version)
            except CheckpointConflict:
                # Another process wrote first: read its total and add again.
                await trio.sleep(random.random() * 0.01)
                continue
            return total
        raise CheckpointConflict(f"{key}: lost {_CAS_ATTEMPTS} writes in a row to other writers")

    def statistics(self, now: float) -> BudgetStatistics:
        tokens, dollars = self.spent(now)
        unflushed = self.pending.get(self.window) or [0, 0.0]
        spec = self.spec
        return BudgetStatistics(
            scope=self.scope,
            tokens_spent=tokens,
            dollars_spent=dollars,
            tokens_limit=spec.tokens,
            dollars_limit=spec.dollars,
            period=spec.period,
            on_exhausted=spec.on_exhausted,
            window_start=_utc(self.window),
            resets_at=_utc(self.window + spec.period),
            exhausted=self.reached(now) is not None,
            refusals=self.refusals,
            waits=self.waits,
            unflushed_tokens=int(unflushed[0]),
            unflushed_dollars=unflushed[1],
            flush_error=self.flush_error,
        )


def _decode(data: str) -> list[float]:
    record = json.loads(data)
    return [int(record["tokens"]), float(record["dollars"])]


def _duration(seconds: float) -> str:
    """``3h12m``, ``4m05s`` or ``12s``."""
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _walk(spec: SupervisorSpec, prefix: str = "") -> Iterator[tuple[str, SupervisorSpec | None]]:
    """Every path of the tree below ``spec`` (itself included), with the
    supervisor's spec for supervisors."""
    path = f"{prefix}{spec.name}"
    yield path, spec
    for child in spec.children:
        if isinstance(child, SupervisorSpec):
            yield from _walk(child, f"{path}/")
        else:
            yield f"{path}/{child.name}", None


class Ledger:
    """A system's usage by resource and agent, and its budgets.

    Args:
        system: the system's name (budget records are kept under it).
        topology: its topology: the paths agents are named by, and the
            budgets of its resources and supervisors.
    """

    def __init__(self, system: str, topology: Topology | None = None) -> None:
        self.system = system
        self._accounts: dict[tuple[str, str], Account] = {}
        self.known: set[str] = set()
        self.resource_budgets: dict[str, Budget] = {}
        self.supervisor_budgets: dict[str, Budget] = {}
        if topology is not None:
            for path, supervisor in _walk(topology.supervisor):
                self.known.add(path)
                if supervisor is not None and supervisor.budget is not None:
                    self.supervisor_budgets[path] = Budget(system, path, supervisor.budget)
            for name, spec in topology.resources.items():
                self.known.add(f"resources/{name}")
                self.set_resource_budget(name, spec.budget)
        self._offset: float | None = None  # wall clock minus trio's clock
        self._lock = trio.Lock()

    # -- time ------------------------------------------------------------------

    def now(self) -> float:
        """The wall clock (seconds since the epoch), advanced by trio's clock."""
        if self._offset is None:
            self._offset = wall_clock() - trio.current_time()
        return trio.current_time() + self._offset

    def trio_time(self, wall: float) -> float:
        """The trio clock's reading at the wall time ``wall``."""
        self.now()
        assert self._offset is not None
        return wall - self._offset

    # -- budgets -----------------------------------------------------------------

    @property
    def budgets(self) -> list[Budget]:
        """Every budget, resources' first."""
        return [*self.resource_budgets.values(), *self.supervisor_budgets.values()]

    def may_limit(self, resource: str) -> bool:
        """Whether any budget may apply to a request to ``resource``: its
        own, or some supervisor's (False: a request needs no account looked up
        to be admitted)."""
        return bool(self.supervisor_budgets) or resource in self.resource_budgets

    def set_resource_budget(self, name: str, spec: BudgetSpec | None) -> None:
        """Set (or remove, with None) the budget of resource ``name``; a
        budget that changes keeps what its window has spent."""
        old = self.resource_budgets.get(name)
        if spec is None:
            self.resource_budgets.pop(name, None)
        elif old is None:
            self.resource_budgets[name] = Budget(self.system, f"resources/{name}", spec)
        else:
            old.spec = spec
            old.window = old.window_end = -math.inf  # the period may have changed
            old.stored = [0, 0.0]
        for (resource, agent), account in self._accounts.items():
            account.budgets = self._budgets_for(resource, agent)

    def _budgets_for(self, resource: str, agent: str) -> tuple[Budget, ...]:
        """The budgets a request of ``agent`` to ``resource`` spends: the
        resource's, and each supervisor's at or above the agent's path."""
        found = []
        budget = self.resource_budgets.get(resource)
        if budget is not None:
            found.append(budget)
        path = agent if self.supervisor_budgets and agent != SYSTEM_AGENT else ""
        while path:
            budget = self.supervisor_budgets.get(path)
            if budget is not None:
                found.append(budget)
            path = path.rpartition("/")[0]
        return tuple(found)

    def account(self, resource: str, asker: str | None) -> Account:
        """The account of ``asker`` (an actor's path, None outside every
        actor) at ``resource``: its counts and the budgets it spends there.

        An actor spawned below a supervisor spends that supervisor's
        budget: it counts under its nearest declared ancestor, and budgets
        belong to declared supervisors.
        """
        key = (resource, self.agent(asker))
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = Account(self._budgets_for(*key))
        return account

    async def admit(self, budgets: tuple[Budget, ...]) -> None:
        """Return once none of ``budgets`` is exhausted.

        Waits for the next window of a ``wait`` budget (with ``trio.sleep``:
        cancelling the caller, as an ask's timeout does, ends the wait).

        Raises:
            BudgetExceeded: a ``refuse`` budget is exhausted.
        """
        waited: set[Budget] = set()
        while True:
            now = self.now()
            for budget in budgets:
                reached = budget.reached(now)
                if reached is None:
                    continue
                if budget.spec.on_exhausted == "refuse":
                    budget.refusals += 1
                    raise budget.refusal(now, *reached)
                if budget not in waited:
                    waited.add(budget)
                    budget.waits += 1
                await trio.sleep_until(self.trio_time(budget.resets_at(now)))
                break
            else:
                return

    # -- usage -------------------------------------------------------------------

    def agent(self, path: str | None) -> str:
        """The name ``path`` is counted under: itself if the topology
        declares it, else its nearest declared ancestor; ``(system)`` for
        None (outside every actor)."""
        while path:
            if path in self.known:
                return path
            path = path.rpartition("/")[0]
        return SYSTEM_AGENT

    def charge(
        self, account: Account, input_tokens: int, output_tokens: int, dollars: float | None
    ) -> None:
        """Count one answered request: to ``account`` and its budgets
        (``dollars`` None: the model has no price)."""
        account.requests += 1
        account.input_tokens += input_tokens
        account.output_tokens += output_tokens
        if dollars is None:
            account.unpriced += 1
        else:
            account.dollars += dollars
        if account.budgets:
            now = self.now()
            for budget in account.budgets:
                budget.charge(input_tokens + output_tokens, dollars or 0.0, now)

    def usage(self, resource: str | None = None) -> list[UsageStatistics]:
        """Usage so far by resource and agent (of ``resource`` only, if given),
        sorted by resource and agent; agents with no answered request are left out."""
        return [
            UsageStatistics(
                resource=name,
                agent=agent,
                requests=account.requests,
                input_tokens=account.input_tokens,
                output_tokens=account.output_tokens,
                dollars=account.dollars,
                unpriced_requests=account.unpriced,
            )
            for (name, agent), account in sorted(self._accounts.items())
            if (resource is None or name == resource) and account.requests
        ]

    def statistics(self) -> dict[str, BudgetStatistics]:
        """Each budget's spending in its current window, by scope."""
        now = self.now()
        return {budget.scope: budget.statistics(now) for budget in self.budgets}

    # -- persistence -------------------------------------------------------------

    async def flush(self, store: CheckpointStore) -> bool:
        """Write every budget's unwritten spending to ``store`` and read back
        the totals; returns whether every write succeeded. A failure is
        logged and kept in the budget's statistics; its spending waits for
        the next flush. One flush runs at a time."""
        ok = True
        async with self._lock:
            for budget in self.budgets:
                try:
                    await budget.flush(store, self.now())
                except Exception as exc:
                    ok = False
                    budget.flush_error = repr(exc)
                    logger.warning("budget_flush_failed", scope=budget.scope, error=repr(exc))
        return ok

    async def run(
        self,
        store: CheckpointStore,
        done: trio.Event,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        """Read the budgets' spending from ``store``, report started, then
        flush every ``interval`` seconds until ``done`` is set, and once
        more then (shielded from cancellation, for at most 5 s)."""
        await self.flush(store)
        task_status.started()
        try:
            while True:
                with trio.move_on_after(interval):
                    await done.wait()
                if done.is_set():
                    break
                await self.flush(store)
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5.0
                await self.flush(store)
