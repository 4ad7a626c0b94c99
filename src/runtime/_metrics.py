"""Prometheus metrics of a running system, read at scrape time.

Nothing here runs per message except ``Durations.observe`` on sampled
messages: counters and gauges are read from the statistics the runtime keeps
anyway (``ActorStatistics``, ``LimiterStatistics``, checkpoint counters,
dead letters) by a custom collector registered in the registry given to
``open_system``. Names follow Prometheus conventions: prefix ``runtime_``,
base units, ``_total`` on counters; labels are bounded by the topology
(actor paths, resource names, fixed sets of reasons and outcomes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ._locks import OUTCOMES

if TYPE_CHECKING:
    from ._system import ActorSystem

__all__ = ["RuntimeCollector"]

_STATUSES = ("starting", "running", "restarting", "stopped", "circuit_open")
_BREAKER_STATES = ("closed", "half_open", "open")
_POOL_METRICS = (  # (family, name, help, the PoolStatistics field it reads)
    (GaugeMetricFamily, "runtime_pool_size", "Workers taking routes, by pool.", "size"),
    (
        GaugeMetricFamily,
        "runtime_pool_available_workers",
        "Workers running with their circuit closed (routing picks among them).",
        "available",
    ),
    (
        GaugeMetricFamily,
        "runtime_pool_draining_workers",
        "Workers a resize removed, still handling their queue.",
        "draining",
    ),
    (
        GaugeMetricFamily,
        "runtime_pool_mailbox_depth",
        "Messages queued, summed over the workers.",
        "mailbox_depth",
    ),
    (
        CounterMetricFamily,
        "runtime_pool_routed",
        "Messages routed to a worker (a broadcast counts each worker reached).",
        "routed",
    ),
    (
        CounterMetricFamily,
        "runtime_pool_refused",
        "Messages refused with CircuitOpen because no worker could take them.",
        "refused",
    ),
)


class RuntimeCollector(Collector):
    """Every metric of one system, computed from its statistics at scrape time."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system

    def describe(self) -> list[Metric]:
        return []  # the label sets follow the running tree: collected only

    def collect(self) -> Iterator[Metric]:
        system = self.system
        yield from self._actors(system)
        yield from self._pools(system)
        yield from self._resources(system)
        yield from self._spending(system)
        yield from self._checkpoints(system)
        yield from self._locks(system)
        yield from self._workflows(system)
        dead = CounterMetricFamily(
            "runtime_dead_letters",
            "Messages accepted but never handled, by reason.",
            labels=["reason"],
        )
        for reason in ("mailbox_full", "stopped", "circuit_open"):
            dead.add_metric([reason], system.dead_letter_reasons.get(reason, 0))
        yield dead
        up = GaugeMetricFamily(
            "runtime_up",
            "1 while the root supervisor runs, 0 while it starts, stops or has failed.",
            labels=["system"],
        )
        up.add_metric([system.name], 1.0 if system.healthy() else 0.0)
        yield up
        if system.cluster is not None:
            yield from self._cluster(system.cluster.statistics())
            yield from self._streams(system.cluster)

    # -- cluster ------------------------------------------------------------------

    def _cluster(self, stats: Any) -> Iterator[Metric]:
        nodes = GaugeMetricFamily("runtime_cluster_nodes", "Live nodes of the cluster.")
        nodes.add_metric([], len(stats.nodes))
        yield nodes
        epoch = GaugeMetricFamily(
            "runtime_cluster_unit_epoch",
            "The lease epoch of each unit, by the node holding it.",
            labels=["unit", "node"],
        )
        for place in stats.placement:
            if place.node is not None and place.epoch is not None:
                epoch.add_metric([place.unit, place.node], place.epoch)
        yield epoch
        held = GaugeMetricFamily("runtime_cluster_units_held", "Units this node runs.")
        held.add_metric([], len(stats.held))
        yield held
        moves = CounterMetricFamily(
            "runtime_cluster_unit_moves",
            "Units this node took over from a gone node (failover), handed over, or lost.",
            labels=["kind"],
        )
        moves.add_metric(["failover"], stats.failovers)
        moves.add_metric(["handover"], stats.handovers)
        moves.add_metric(["lost"], stats.lost)
        yield moves
        gap = GaugeMetricFamily(
            "runtime_cluster_renewal_gap_max_seconds",
            "The longest time between two renewals of this node's membership entry "
            "or of a lease it held (the entry expires at the cluster's lease).",
        )
        gap.add_metric([], stats.renewal_gap_max)
        yield gap
        asks = HistogramMetricFamily(
            "runtime_cluster_remote_ask_seconds",
            "Remote asks sent from this node, from send to reply (retries included).",
        )
        buckets = [
            (str(bound), count)
            for bound, count in zip(stats.ask_bounds, stats.ask_buckets, strict=True)
        ]
        asks.add_metric([], [*buckets, ("+Inf", stats.ask_count)], stats.ask_seconds)
        yield asks

    def _streams(self, cluster: Any) -> Iterator[Metric]:
        durable = cluster.durable.statistics()
        tells = CounterMetricFamily(
            "runtime_cluster_durable_tells",
            "Durable tells on this node: stored in the stream from here (published), "
            "applied here, acknowledged again without handling (duplicate), "
            "dead-lettered after max_deliver attempts, tell_nowait lost.",
            labels=["outcome"],
        )
        tells.add_metric(["published"], durable.published)
        tells.add_metric(["applied"], durable.applied)
        tells.add_metric(["duplicate"], durable.duplicates)
        tells.add_metric(["dead_letter"], durable.dead_letters)
        tells.add_metric(["lost"], durable.lost_tells)
        yield tells
        topics = cluster.topics.statistics()
        events = CounterMetricFamily(
            "runtime_cluster_topic_events",
            "Topic events sent to the other nodes, received from them, or not sent.",
            labels=["direction"],
        )
        events.add_metric(["sent"], topics.sent)
        events.add_metric(["received"], topics.received)
        events.add_metric(["dropped"], topics.dropped)
        yield events

    # -- actors -----------------------------------------------------------------

    def _actors(self, system: ActorSystem) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            "runtime_messages_handled",
            "Messages handled, by actor and outcome (ok: the handler returned; error: it raised).",
            labels=["actor", "outcome"],
        )
        duration = HistogramMetricFamily(
            "runtime_message_duration_seconds",
            "Time to handle one message, by actor. Handlers faster than 100 us "
            "have one message in 16 timed, counted 16 times.",
            labels=["actor"],
        )
        depth = GaugeMetricFamily(
            "runtime_mailbox_depth", "Messages queued in the mailbox.", labels=["actor"]
        )
        capacity = GaugeMetricFamily(
            "runtime_mailbox_capacity", "Messages the mailbox holds.", labels=["actor"]
        )
        pending = GaugeMetricFamily(
            "runtime_pending_asks", "Askers waiting on the actor.", labels=["actor"]
        )
        status = GaugeMetricFamily(
            "runtime_actor_status", "1 for the actor's current status.", labels=["actor", "status"]
        )
        breaker = GaugeMetricFamily(
            "runtime_circuit_breaker_state",
            "1 for the state of the actor's circuit breaker (actors that have one).",
            labels=["actor", "state"],
        )
        restarts = CounterMetricFamily(
            "runtime_restarts",
            "Restarts by actor or supervisor and reason (crash, normal_exit: it "
            "ended and is permanent; group: a sibling's restart took it along; "
            "supervisor: its supervisor was restarted; half_open: a circuit trial; "
            "manual: system.restart, the console's restart).",
            labels=["actor", "reason"],
        )
        for cell in system.cells():
            path = cell.path
            handled.add_metric([path, "ok"], cell.handled)
            handled.add_metric([path, "error"], cell.failed)
            timings = cell.durations
            if timings is not None:
                duration.add_metric([path], timings.cumulative(), timings.sum)
            depth.add_metric([path], cell.mailbox.size)
            capacity.add_metric([path], cell.mailbox.capacity)
            pending.add_metric([path], cell.pending_asks)
            for name in _STATUSES:
                status.add_metric([path, name], 1.0 if cell.status == name else 0.0)
            if cell.breaker is not None:
                for name in _BREAKER_STATES:
                    breaker.add_metric([path, name], 1.0 if cell.breaker == name else 0.0)
        for node in system.children_and_supervisors():
            reasons = {"crash": 0, **(node.record.reasons or {})}  # a series from the start
            for reason, count in reasons.items():
                restarts.add_metric([node.path, reason], count)
        yield from (handled, duration, depth, capacity, pending, status, breaker, restarts)

    # -- pools ---------------------------------------------------------------------------

    def _pools(self, system: ActorSystem) -> Iterator[Metric]:
        """Each pool's figures (its workers have the actor metrics of their own)."""
        pools = system.pool_statistics()
        for kind, name, doc, field in _POOL_METRICS:
            family = kind(name, doc, labels=["pool"])
            for path, stats in pools.items():
                family.add_metric([path], getattr(stats, field))
            yield family

    # -- resources -------------------------------------------------------------------

    def _resources(self, system: ActorSystem) -> Iterator[Metric]:
        families: dict[str, Any] = {}

        def family(kind: type, name: str, doc: str, labels: list[str]) -> Any:
            if name not in families:
                families[name] = kind(name, doc, labels=labels)
            return families[name]

        for name, stats in system.resource_statistics().items():
            limiter = stats.limiter
            gauge = GaugeMetricFamily
            counter = CounterMetricFamily
            family(gauge, "runtime_limiter_tokens_in_use", "Calls in flight.", ["resource"])
            families["runtime_limiter_tokens_in_use"].add_metric([name], limiter.tokens_in_use)
            if limiter.max_concurrency is not None:
                family(
                    gauge, "runtime_limiter_tokens", "Calls allowed at once.", ["resource"]
                ).add_metric([name], limiter.max_concurrency)
            waiting = family(
                gauge,
                "runtime_limiter_waiting",
                "Requests waiting for admission, by priority.",
                ["resource", "priority"],
            )
            for priority, count in limiter.waiting.items():
                waiting.add_metric([name, priority], count)
            if limiter.rate is not None:
                family(
                    gauge,
                    "runtime_limiter_rate_limit",
                    "Admissions allowed per rate window.",
                    ["resource"],
                ).add_metric([name], limiter.rate.requests)
                family(
                    gauge,
                    "runtime_limiter_rate_window_seconds",
                    "The rate window's length.",
                    ["resource"],
                ).add_metric([name], limiter.rate.period)
                family(
                    gauge,
                    "runtime_limiter_rate_window_admissions",
                    "Admissions in the current rate window.",
                    ["resource"],
                ).add_metric([name], limiter.in_window)
            if limiter.shared is not None:
                family(
                    gauge,
                    "runtime_resource_shared_fallback",
                    "1 while a shared resource's coordination engine cannot be reached "
                    "and this process admits its share (limit / members) alone.",
                    ["resource"],
                ).add_metric([name], 1.0 if limiter.shared == "fallback" else 0.0)
                family(
                    gauge,
                    "runtime_resource_shared_members",
                    "Processes sharing the resource's limits, as last counted on the engine.",
                    ["resource"],
                ).add_metric([name], limiter.members or 1)
            family(
                gauge,
                "runtime_limiter_paused_seconds",
                "Seconds left of a pause (Retry-After).",
                ["resource"],
            ).add_metric([name], limiter.paused_for)
            family(
                SummaryMetricFamily,
                "runtime_limiter_wait_seconds",
                "Time requests waited for admission (requests that waited).",
                ["resource"],
            ).add_metric([name], limiter.waited, limiter.wait_seconds)
            for metric, doc, value in (
                ("runtime_limiter_admitted", "Admissions, retries included.", limiter.admitted),
                (
                    "runtime_limiter_rejected",
                    "Requests refused with CircuitOpen by the breaker.",
                    limiter.rejected,
                ),
                (
                    "runtime_limiter_rate_waits",
                    "Admissions that waited for room in the rate window.",
                    limiter.rate_waits,
                ),
                ("runtime_limiter_retries", "Attempts after a transient failure.", limiter.retries),
                ("runtime_limiter_timeouts", "Attempts past the timeout.", limiter.timeouts),
                ("runtime_limiter_failures", "Attempts that failed.", limiter.failures),
            ):
                family(counter, metric, doc, ["resource"]).add_metric([name], value)
            if limiter.breaker is not None:
                states = family(
                    gauge,
                    "runtime_limiter_breaker_state",
                    "1 for the state of the resource's backend breaker.",
                    ["resource", "state"],
                )
                for state in _BREAKER_STATES:
                    states.add_metric([name, state], 1.0 if limiter.breaker == state else 0.0)
            requests = family(
                counter,
                "runtime_resource_requests",
                "Requests answered by the resource, by outcome.",
                ["resource", "outcome"],
            )
            requests.add_metric([name, "ok"], stats.requests - stats.failures)
            requests.add_metric([name, "error"], stats.failures)
            backend = dict(stats.backend)
            if "in_use" in backend and "max_size" in backend:
                family(
                    gauge,
                    "runtime_pool_connections_in_use",
                    "Pool connections lent out.",
                    ["resource"],
                ).add_metric([name], backend.pop("in_use"))
                family(
                    gauge, "runtime_pool_connections_max", "The pool's size.", ["resource"]
                ).add_metric([name], backend.pop("max_size"))
            responses = {
                key: backend.pop(key) for key in list(backend) if key.startswith("responses_")
            }
            if responses:
                answered = family(
                    counter,
                    "runtime_resource_responses",
                    "Backend answers by class (2xx, 429, 5xx, other), for kinds that speak HTTP.",
                    ["resource", "class"],
                )
                for key, answers in sorted(responses.items()):
                    answered.add_metric([name, key.removeprefix("responses_")], answers)
            figures = family(
                gauge,
                "runtime_resource_backend",
                "The resource kind's own figures (see its documentation).",
                ["resource", "figure"],
            )
            for figure, reading in sorted(backend.items()):
                figures.add_metric([name, figure], float(reading))
        yield from families.values()

    # -- locks ---------------------------------------------------------------------------

    def _locks(self, system: ActorSystem) -> Iterator[Metric]:
        manager = system.lock_manager
        counters = manager.counters
        acquisitions = CounterMetricFamily(
            "runtime_lock_acquisitions",
            "Lock acquisitions by outcome (acquired, timeout, tried: refused at once "
            "under wait_timeout=0, lost: lost while held, error: backend unreachable), "
            "by the lock name's prefix.",
            labels=["prefix", "outcome"],
        )
        wait = HistogramMetricFamily(
            "runtime_lock_wait_seconds",
            "Time from asking for a lock to its grant or refusal, by prefix.",
            labels=["prefix"],
        )
        contentions = CounterMetricFamily(
            "runtime_lock_contentions",
            "Acquisitions that found the lock held (they waited or were refused), by prefix.",
            labels=["prefix"],
        )
        held = GaugeMetricFamily(
            "runtime_locks_held", "Locks this system holds now, by prefix.", labels=["prefix"]
        )
        waiting = GaugeMetricFamily(
            "runtime_locks_waiting", "Acquisitions waiting now, by prefix.", labels=["prefix"]
        )
        held_now = manager.held_by_prefix()
        for prefix, durations in sorted(counters.waits.items()):
            for outcome in OUTCOMES:
                acquisitions.add_metric(
                    [prefix, outcome], counters.outcomes.get((prefix, outcome), 0)
                )
            wait.add_metric([prefix], durations.cumulative(), durations.sum)
            contentions.add_metric([prefix], counters.contentions.get(prefix, 0))
            held.add_metric([prefix], held_now.get(prefix, 0))
            waiting.add_metric([prefix], counters.waiting.get(prefix, 0))
        yield from (acquisitions, wait, contentions, held, waiting)

    # -- tokens, costs and budgets ------------------------------------------------------

    def _spending(self, system: ActorSystem) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "runtime_llm_tokens",
            "Tokens of answered requests, by resource, asking agent (a path of the "
            "topology, or (system)) and direction (input, output).",
            labels=["resource", "agent", "direction"],
        )
        cost = CounterMetricFamily(
            "runtime_llm_cost_dollars",
            "Cost of answered requests in dollars, from the resource's pricing, by "
            "resource and asking agent.",
            labels=["resource", "agent"],
        )
        for usage in system.usage_statistics():
            tokens.add_metric([usage.resource, usage.agent, "input"], usage.input_tokens)
            tokens.add_metric([usage.resource, usage.agent, "output"], usage.output_tokens)
            cost.add_metric([usage.resource, usage.agent], usage.dollars)
        spent = GaugeMetricFamily(
            "runtime_budget_spent",
            "Spent in the budget's current window, by scope and unit (tokens, dollars).",
            labels=["scope", "unit"],
        )
        limit = GaugeMetricFamily(
            "runtime_budget_limit", "The budget's limit per window.", labels=["scope", "unit"]
        )
        period = GaugeMetricFamily(
            "runtime_budget_period_seconds", "The budget's window.", labels=["scope"]
        )
        resets = GaugeMetricFamily(
            "runtime_budget_resets_at_seconds",
            "When the budget's current window ends (Unix time).",
            labels=["scope"],
        )
        refusals = CounterMetricFamily(
            "runtime_budget_refusals",
            "Requests refused with BudgetExceeded.",
            labels=["scope"],
        )
        waits = CounterMetricFamily(
            "runtime_budget_waits",
            "Requests that waited for the budget's next window.",
            labels=["scope"],
        )
        for scope, stats in system.budget_statistics().items():
            for unit, used, most in (
                ("tokens", stats.tokens_spent, stats.tokens_limit),
                ("dollars", stats.dollars_spent, stats.dollars_limit),
            ):
                if most is not None:
                    spent.add_metric([scope, unit], used)
                    limit.add_metric([scope, unit], most)
            period.add_metric([scope], stats.period)
            resets.add_metric([scope], stats.resets_at.timestamp())
            refusals.add_metric([scope], stats.refusals)
            waits.add_metric([scope], stats.waits)
        yield from (tokens, cost, spent, limit, period, resets, refusals, waits)

    # -- checkpoints -----------------------------------------------------------------

    def _checkpoints(self, system: ActorSystem) -> Iterator[Metric]:
        stats = system.checkpoint_stats
        write = HistogramMetricFamily(
            "runtime_checkpoint_write_duration_seconds",
            "Time to write one checkpoint.",
        )
        write.add_metric([], stats.write_durations.cumulative(), stats.write_durations.sum)
        size = HistogramMetricFamily(
            "runtime_checkpoint_size_bytes", "Size of each checkpoint written (JSON)."
        )
        size.add_metric([], stats.sizes.cumulative(), stats.sizes.sum)
        read = SummaryMetricFamily(
            "runtime_checkpoint_read_seconds", "Checkpoints read at actor starts, and the time."
        )
        read.add_metric([], stats.reads, stats.read_seconds)
        errors = CounterMetricFamily(
            "runtime_checkpoint_errors",
            "Checkpoint writes that failed, by kind (conflict: another incarnation wrote first).",
            labels=["kind"],
        )
        errors.add_metric(["conflict"], stats.conflicts)
        errors.add_metric(["failure"], stats.failures)
        yield from (write, size, read, errors)

    # -- workflows -------------------------------------------------------------------

    def _workflows(self, system: ActorSystem) -> Iterator[Metric]:
        runs = system.workflow_runs
        outcomes = CounterMetricFamily(
            "runtime_workflow_runs",
            "Workflow runs ended, by workflow and outcome (succeeded, failed, needs_attention).",
            labels=["workflow", "outcome"],
        )
        for (workflow, outcome), count in sorted(runs.outcomes.items()):
            outcomes.add_metric([workflow, outcome], count)
        running = GaugeMetricFamily(
            "runtime_workflow_runs_running", "Workflow runs in flight.", labels=["workflow"]
        )
        in_flight: dict[str, int] = {}
        for workflow, _ in runs.running:
            in_flight[workflow] = in_flight.get(workflow, 0) + 1
        for workflow, count in sorted(in_flight.items()):
            running.add_metric([workflow], count)
        attention = GaugeMetricFamily(
            "runtime_workflow_runs_needing_attention",
            "Runs that ended needs_attention and were not run again since.",
            labels=["workflow"],
        )
        for workflow, count in sorted(runs.statistics().needing_attention.items()):
            attention.add_metric([workflow], count)
        counters = []
        for name, doc, counts in (
            (
                "runtime_workflow_step_retries",
                "Step attempts after a failed or refused one, by workflow.",
                runs.retries,
            ),
            (
                "runtime_workflow_step_fallbacks",
                "Fallback agents turned to, by workflow.",
                runs.fallbacks,
            ),
        ):
            counter = CounterMetricFamily(name, doc, labels=["workflow"])
            for workflow, count in sorted(counts.items()):
                counter.add_metric([workflow], count)
            counters.append(counter)
        durations = HistogramMetricFamily(
            "runtime_workflow_step_duration_seconds",
            "Time from a step's start to its end (every attempt and backoff).",
            labels=["workflow", "step"],
        )
        for (workflow, step), timings in sorted(runs.durations.items()):
            durations.add_metric([workflow, step], timings.cumulative(), timings.sum)
        yield from (outcomes, running, attention, *counters, durations)
