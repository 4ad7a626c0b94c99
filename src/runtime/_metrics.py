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

if TYPE_CHECKING:
    from ._system import ActorSystem

__all__ = ["RuntimeCollector"]

_STATUSES = ("starting", "running", "restarting", "stopped", "circuit_open")
_BREAKER_STATES = ("closed", "half_open", "open")


class RuntimeCollector(Collector):
    """Every metric of one system, computed from its statistics at scrape time."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system

    def describe(self) -> list[Metric]:
        return []  # the label sets follow the running tree: collected only

    def collect(self) -> Iterator[Metric]:
        system = self.system
        yield from self._actors(system)
        yield from self._resources(system)
        yield from self._checkpoints(system)
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
            "supervisor: its supervisor was restarted; half_open: a circuit trial).",
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
