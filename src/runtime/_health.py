"""Health: what is wrong with a running system, node by node, and why.

The decisions are pure functions of statistics snapshots (``TreeNode``,
``ResourceStatistics``), so the endpoint (``/healthz``, ``/readyz``,
``/status``), ``runtime status`` and the summary of ``runtime start`` all say
the same thing. A system is *degraded* while it runs with a problem: an
actor or a resource whose circuit is open (or half-open, on trial), a
resource that is not running (it never came up, or is restarting), or a
resource whose backend breaker (its limiter's) is open. It is *ready* when it
runs with no problem.

Warnings are reported beside the problems but change neither: a budget that
is spent for its window (its requests are refused, or wait) is the budget
working as configured, not the system failing, so ``/readyz`` stays 200 and
``/healthz`` says ``running``; ``/status``, ``runtime status`` and the run
summary name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._budget import BudgetStatistics
    from ._resource import ResourceStatistics
    from ._system import ActorSystem, TreeNode

__all__ = [
    "Health",
    "Problem",
    "actor_problems",
    "budget_warnings",
    "health_of",
    "problems_of",
    "resource_problems",
]

_OPEN = ("open", "half_open")


@attrs.frozen
class Problem:
    """One reason a node is not fully healthy.

    Attributes:
        kind: ``resource``, ``actor`` or ``budget``.
        name: the resource's name, the actor's path, or the budget's scope.
        condition: what is wrong: ``never_came_up``, ``starting``,
            ``restarting``, ``stopped``, ``circuit_open``, ``circuit_half_open``,
            ``backend_breaker_open`` or ``backend_breaker_half_open``; for a
            warning ``budget_exhausted`` (requests are refused) or
            ``budget_exhausted_waiting`` (requests wait for the next window).
        reason: the last failure that explains it (the repr of a crash),
            None when none is known.
    """

    kind: str
    name: str
    condition: str
    reason: str | None = None

    @property
    def line(self) -> str:
        """``resource llm: never came up: ResourceError('...')``."""
        text = f"{self.kind} {self.name}: {_WORDS.get(self.condition, self.condition)}"
        return f"{text}: {self.reason}" if self.reason is not None else text

    def as_dict(self) -> dict[str, Any]:
        """The problem as JSON values, its ``line`` as ``message``."""
        return {**attrs.asdict(self), "message": self.line}


_AFTER_UP = {"starting": "restarting"}

_WORDS = {
    "never_came_up": "never came up",
    "circuit_open": "circuit open",
    "circuit_half_open": "circuit half-open (on trial)",
    "backend_breaker_open": "backend breaker open",
    "backend_breaker_half_open": "backend breaker half-open (on trial)",
    "budget_exhausted": "exhausted, requests refused",
    "budget_exhausted_waiting": "exhausted, requests wait for the next window",
}


def resource_problems(stats: ResourceStatistics) -> list[Problem]:
    """What is wrong with one resource: at most one problem with the
    resource actor (not up, or its circuit), and one with its backend breaker."""
    problems = []
    reason = stats.last_failure
    if not stats.came_up:
        # Its first start is still running (no failure yet), or every start failed.
        condition = "never_came_up" if reason is not None else "starting"
        problems.append(Problem("resource", stats.name, condition, reason))
    elif stats.circuit in _OPEN:
        problems.append(Problem("resource", stats.name, f"circuit_{stats.circuit}", reason))
    elif not stats.up:
        # Between two incarnations (restarting), or stopped for good.
        condition = _AFTER_UP.get(stats.status, stats.status)
        problems.append(Problem("resource", stats.name, condition, reason))
    breaker = stats.limiter.breaker
    if breaker in _OPEN:
        problems.append(
            Problem("resource", stats.name, f"backend_breaker_{breaker}", stats.backend_failure)
        )
    return problems


def actor_problems(node: TreeNode) -> Iterator[Problem]:
    """The actors below ``node`` (itself included) whose circuit is open or half-open."""
    stats = node.stats
    if node.kind == "actor" and stats.breaker in _OPEN:
        yield Problem("actor", node.path, f"circuit_{stats.breaker}", stats.last_failure)
    for child in node.children:
        yield from actor_problems(child)


def budget_warnings(budgets: Iterable[BudgetStatistics]) -> Iterator[Problem]:
    """The budgets spent for their window: what they refuse (or hold), and until when."""
    for stats in budgets:
        if not stats.exhausted:
            continue
        spent = [
            f"{stats.tokens_spent:,} of {stats.tokens_limit:,} tokens"
            if stats.tokens_limit is not None
            else "",
            f"${stats.dollars_spent:,.2f} of ${stats.dollars_limit:,.2f}"
            if stats.dollars_limit is not None
            else "",
        ]
        reason = (
            f"{', '.join(part for part in spent if part)} spent; "
            f"resets at {stats.resets_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        waits = stats.on_exhausted == "wait"
        condition = "budget_exhausted_waiting" if waits else "budget_exhausted"
        yield Problem("budget", stats.scope, condition, reason)


@attrs.frozen
class Health:
    """A system's health, now.

    Attributes:
        state: ``system.state()``: ``starting``, ``running``, ``stopping``,
            ``stopped`` or ``failed``.
        problems: what is wrong, resources first, then actors in tree order.
        warnings: what deserves a look but is not wrong (a spent budget):
            neither ``ready`` nor ``status`` depends on them.
    """

    state: str
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def live(self) -> bool:
        """Whether the system runs (``/healthz`` answers 200)."""
        return self.state == "running"

    @property
    def ready(self) -> bool:
        """Whether it runs with no problem (``/readyz`` answers 200)."""
        return self.live and not self.problems

    @property
    def status(self) -> str:
        """``ok``, ``degraded`` (running, with problems), or the state
        when the system does not run."""
        if not self.live:
            return self.state
        return "degraded" if self.problems else "ok"

    def as_dict(self) -> dict[str, Any]:
        """JSON values: ``status``, ``state``, ``ready``, the ``problems``
        and the ``warnings``."""
        return {
            "status": self.status,
            "state": self.state,
            "ready": self.ready,
            "problems": [problem.as_dict() for problem in self.problems],
            "warnings": [warning.as_dict() for warning in self.warnings],
        }


def problems_of(
    resources: Iterable[ResourceStatistics], tree: TreeNode | None
) -> tuple[Problem, ...]:
    """Every problem of these resources and of the actors in ``tree``."""
    found = [problem for stats in resources for problem in resource_problems(stats)]
    if tree is not None:
        found.extend(actor_problems(tree))
    return tuple(found)


def health_of(system: ActorSystem, tree: TreeNode | None = None) -> Health:
    """The health of ``system`` now (a snapshot: it does not wait); ``tree``:
    ``system.tree()`` if the caller has just taken it."""
    problems = problems_of(
        system.resource_statistics().values(), system.tree() if tree is None else tree
    )
    warnings = tuple(budget_warnings(system.budget_statistics().values()))
    return Health(system.state(), problems, warnings)
