"""A self-healing loop: monitor, diagnose, fix, verify, quarantine.

A simulated system of three backends (``database``, ``cache``, ``queue``)
goes through a seeded fault drill, and a monitor repairs what breaks:

- ``Infrastructure`` simulates the backends and runs the drill: a schedule
  of faults drawn from ``seed``, keyed by the monitor's tick, so that a run
  is reproducible. One backend is *flapping*: after every reset it fails
  again at once, until an operator replaces it.
- ``Component`` is the runtime's handle on one backend, a supervised actor
  with a circuit breaker. Its health check asks the infrastructure and
  raises (the actor crashes) when the backend is faulty; its supervisor
  restarts it with backoff.
- ``Monitor`` ticks on a timer (``schedule_every``). Each tick advances the
  drill and probes every component. A probe that crashes opens an incident
  (one item for ``ctx.progress``), repaired in attempts: the ``Diagnoser``
  asks the LLM resource for a diagnosis, the ``Fixer`` resets the backend,
  the ``Verifier`` probes the component again.
- A flapping component crashes on every verification. After
  ``circuit_breaker.failures`` crashes in a row its circuit opens: it is
  not restarted again, and the next verification fails fast with
  ``CircuitOpen``. The monitor quarantines it rather than retrying in a
  loop. After ``reset_timeout`` the supervisor starts one trial incarnation
  (half-open) and the monitor's next probe is the trial: still broken, the
  circuit opens again and the monitor pages the ``Operator``, who replaces
  the backend a little later; the next trial succeeds and closes the
  circuit.

When the drill is over and every incident is closed, the monitor writes a
report, stops itself, and ``runtime start --until-idle`` ends with a summary.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import cattrs
import structlog
import trio

import runtime
from runtime.errors import ActorFailed, ActorStopped, CircuitOpen, ResourceError
from runtime.resources.llm import Chat

log = structlog.get_logger("self_healing")

ASK_TIMEOUT = 30.0  # seconds; LLM retries and Retry-After pauses included

SYMPTOMS: dict[str, tuple[str, ...]] = {
    "database": ("connection pool exhausted", "replication lag over 30 s", "lock wait timeouts"),
    "cache": ("eviction storm", "stale keys served after failover", "memory fragmentation"),
    "queue": ("consumers disconnected", "broker partition lost"),
}
FLAPPING_SYMPTOM = "failed again right after the reset"

Verdict = Literal["healthy", "failing", "circuit_open"]


# -- messages -----------------------------------------------------------------


@attrs.frozen
class Advance:
    """Move the drill to ``tick``: inject the faults due then."""

    tick: int


@attrs.frozen
class DrillStatus:
    """What is left of the drill after a tick."""

    faults_left: int
    over: bool


@attrs.frozen
class Condition:
    """Ask the infrastructure for a backend's fault (None: healthy)."""

    backend: str


@attrs.frozen
class ResetBackend:
    """The remedy the fixer applies: clear the backend's fault."""

    backend: str


@attrs.frozen
class ReplaceBackend:
    """An operator's remedy: a new backend, which does not flap."""

    backend: str


@attrs.frozen
class Probe:
    """A component's health check; the component crashes if its backend is faulty."""


@attrs.frozen
class Diagnose:
    """Ask for a diagnosis of a failed health check."""

    component: str
    symptom: str
    attempt: int


@attrs.frozen
class Fix:
    """Reset a component's backend."""

    component: str


@attrs.frozen
class Verify:
    """Probe the component at ``path`` again after a fix."""

    path: str


@attrs.frozen
class Page:
    """Hand an incident the automation could not close to the on-call operator."""

    component: str
    incident: int
    note: str


@attrs.frozen
class Intervene:
    """The operator, ``response_time`` after a page, replaces the backend."""

    component: str


@attrs.frozen
class Tick:
    """The monitor's periodic sweep."""


@attrs.frozen
class Deadline:
    """The drill has run too long: finish with what is still open."""


@attrs.frozen
class Finish:
    """Write the report and stop (sent at low priority, after queued ticks)."""


class ComponentFault(RuntimeError):
    """A component's health check found its backend faulty."""


# -- the simulated infrastructure -------------------------------------------------


@attrs.frozen
class Fault:
    """One entry of the drill: at ``tick``, ``backend`` starts failing."""

    tick: int
    backend: str
    symptom: str
    flapping: bool = False


def drill_schedule(
    backends: Sequence[str],
    flapping: str,
    *,
    faults: int,
    fault_window: int,
    flap_at: int,
    seed: int,
) -> list[Fault]:
    """The drill's faults in tick order: ``faults`` on distinct ticks from 1 to
    ``fault_window`` (never ``flap_at``), each on a backend other than
    ``flapping``, and ``flapping`` starts to flap at ``flap_at``. The same
    arguments give the same schedule."""
    rng = random.Random(seed)
    steady = [name for name in backends if name != flapping]
    ticks = sorted(rng.sample([t for t in range(1, fault_window + 1) if t != flap_at], faults))
    schedule = []
    for tick in ticks:
        backend = rng.choice(steady)
        schedule.append(Fault(tick, backend, rng.choice(SYMPTOMS.get(backend, ("unhealthy",)))))
    if flapping:
        symptom = rng.choice(SYMPTOMS.get(flapping, ("unhealthy",)))
        schedule.append(Fault(flap_at, flapping, symptom, flapping=True))
    return sorted(schedule, key=lambda fault: fault.tick)


@attrs.define
class InfraState:
    faults: dict[str, str] = attrs.Factory(dict)  # backend -> symptom, while faulty
    flapping: list[str] = attrs.Factory(list)  # backends that fail again after a reset


class Infrastructure(runtime.Actor[InfraState]):
    """The simulated backends and the fault drill.

    In a real deployment this actor does not exist: the backends fail on
    their own, and the fixer calls their operations API.
    """

    def __init__(
        self,
        *,
        backends: Sequence[str],
        flapping: str = "",
        faults: int = 6,
        fault_window: int = 20,
        flap_at: int = 3,
        ticks: int = 25,
        seed: int = 3,
    ) -> None:
        self.schedule = drill_schedule(
            list(backends),
            str(flapping),
            faults=int(faults),
            fault_window=int(fault_window),
            flap_at=int(flap_at),
            seed=int(seed),
        )
        self.ticks = int(ticks)  # the drill's length

    @runtime.handler
    async def advance(self, msg: Advance) -> DrillStatus:
        for fault in self.schedule:
            if fault.tick == msg.tick:
                self.state.faults[fault.backend] = fault.symptom
                if fault.flapping and fault.backend not in self.state.flapping:
                    self.state.flapping.append(fault.backend)
                log.info(
                    "fault_injected",
                    backend=fault.backend,
                    symptom=fault.symptom,
                    tick=msg.tick,
                    flapping=fault.flapping,
                )
        left = sum(1 for fault in self.schedule if fault.tick > msg.tick)
        return DrillStatus(faults_left=left, over=msg.tick >= self.ticks)

    @runtime.handler
    async def condition(self, msg: Condition) -> str | None:
        return self.state.faults.get(msg.backend)

    @runtime.handler
    async def reset(self, msg: ResetBackend) -> None:
        self.state.faults.pop(msg.backend, None)
        if msg.backend in self.state.flapping:
            self.state.faults[msg.backend] = FLAPPING_SYMPTOM  # right after the reset

    @runtime.handler
    async def replace(self, msg: ReplaceBackend) -> None:
        self.state.faults.pop(msg.backend, None)
        if msg.backend in self.state.flapping:
            self.state.flapping.remove(msg.backend)


# -- the components ---------------------------------------------------------


class Component(runtime.Actor[None]):
    """The runtime's handle on one backend (named by the actor's own name).

    Its health check crashes the actor when the backend is faulty: the
    supervisor then restarts it (with backoff), and its circuit breaker
    stops the restarts of one that keeps crashing.
    """

    def __init__(self, *, infra: str) -> None:
        self.infra = self.ctx.ref(infra)
        self.backend = self.ctx.path.rsplit("/", 1)[-1]

    @runtime.handler
    async def probe(self, msg: Probe) -> str:
        fault = await self.infra.ask(Condition(self.backend), timeout=ASK_TIMEOUT)
        if fault is not None:
            raise ComponentFault(fault)
        return "healthy"


# -- the repair agents --------------------------------------------------------


class Diagnoser(runtime.Actor[None]):
    """Asks the ``llm`` resource what is wrong and what to do."""

    SYSTEM = (
        "You are the on-call SRE assistant. Given a failed health check, "
        "name the most likely cause and the safest remedy in two sentences."
    )

    @runtime.handler
    async def diagnose(self, msg: Diagnose) -> str:
        prompt = (
            f"Component {msg.component} failed its health check (attempt {msg.attempt}): "
            f"{msg.symptom}"
        )
        try:
            result = await self.ctx.resource("llm").ask(
                Chat.prompt(prompt, system=self.SYSTEM, max_tokens=200), timeout=ASK_TIMEOUT
            )
        except (ResourceError, CircuitOpen, TimeoutError) as exc:
            # A repair must not wait for the model: the standard remedy still applies.
            log.warning("diagnosis_unavailable", component=msg.component, error=repr(exc))
            return f"no diagnosis ({type(exc).__name__})"
        return str(result.text)


class Fixer(runtime.Actor[None]):
    """Applies the standard remedy: reset the component's backend."""

    def __init__(self, *, infra: str) -> None:
        self.infra = self.ctx.ref(infra)

    @runtime.handler
    async def fix(self, msg: Fix) -> None:
        await self.infra.ask(ResetBackend(msg.component), timeout=ASK_TIMEOUT)
        log.info("backend_reset", component=msg.component)


class Verifier(runtime.Actor[None]):
    """Probes a component after a fix; a component that crashes is still failing."""

    @runtime.handler
    async def verify(self, msg: Verify) -> Verdict:
        try:
            await self.ctx.ref(msg.path).ask(Probe(), timeout=ASK_TIMEOUT)
        except CircuitOpen:
            return "circuit_open"
        except (ActorFailed, ActorStopped):
            return "failing"
        return "healthy"


class Operator(runtime.Actor[None]):
    """The on-call human, simulated: replaces a paged backend ``response_time`` seconds later."""

    def __init__(self, *, infra: str, response_time: float = 0.2) -> None:
        self.infra = self.ctx.ref(infra)
        self.response_time = float(response_time)

    @runtime.handler
    async def page(self, msg: Page) -> None:
        log.warning("operator_paged", component=msg.component, incident=msg.incident, note=msg.note)
        self.ctx.schedule(self.response_time, Intervene(msg.component))

    @runtime.handler
    async def intervene(self, msg: Intervene) -> None:
        await self.infra.ask(ReplaceBackend(msg.component), timeout=ASK_TIMEOUT)
        log.info("backend_replaced", component=msg.component)


# -- the monitor --------------------------------------------------------------


@attrs.define
class Incident:
    """One detected fault, from its first failed probe to its close.

    ``status``: ``repairing``; ``quarantined`` (its circuit opened, or the
    repair attempts ran out); ``repaired`` (a fix was verified); ``recovered``
    (a probe after the quarantine, such as the half-open trial, succeeded);
    ``unresolved`` (still open when the drill ended).
    """

    number: int
    component: str
    symptom: str
    opened_tick: int
    status: str = "repairing"
    attempts: int = 0
    trials: int = 0
    paged: bool = False
    diagnosis: str = ""
    closed_tick: int = 0


@attrs.define
class MonitorState:
    drill: int = 1
    tick: int = 0
    incidents: list[Incident] = attrs.Factory(list)
    finished: bool = False


class Monitor(runtime.Actor[MonitorState]):
    """Watches the components on a timer and drives their repair.

    Its state (the tick and the incident log) is checkpointed: a monitor
    that crashes resumes its drill; a start after a finished drill begins a
    new one.
    """

    def __init__(
        self,
        *,
        components: Sequence[str],
        infra: str,
        diagnoser: str,
        fixer: str,
        verifier: str,
        operator: str,
        period: float = 0.1,
        max_attempts: int = 5,
        deadline: float = 30.0,
        report: str = "",
    ) -> None:
        self.components = [self.ctx.ref(path) for path in components]
        self.infra = self.ctx.ref(infra)
        self.diagnoser = self.ctx.ref(diagnoser)
        self.fixer = self.ctx.ref(fixer)
        self.verifier = self.ctx.ref(verifier)
        self.operator = self.ctx.ref(operator)
        self.period = float(period)
        self.max_attempts = int(max_attempts)
        self.deadline = float(deadline)
        self.report = str(report)
        self.finishing = False

    async def on_start(self) -> None:
        if self.state.finished:
            self.state = MonitorState(drill=self.state.drill + 1)
        elif self.state.tick:
            log.info("drill_resumed", drill=self.state.drill, tick=self.state.tick)
        # Set, not added: a restarted monitor counts its incident log once.
        self._count_incidents()
        self.timer = self.ctx.schedule_every(self.period, Tick())
        # A pending one-shot timer also tells `--until-idle` that the drill
        # is not over: it does not wait for `schedule_every` timers.
        self.deadline_timer = self.ctx.schedule(self.deadline, Deadline())

    @runtime.handler
    async def tick(self, msg: Tick) -> None:
        if self.finishing:
            return  # a tick queued before the timer was cancelled
        self.state.tick += 1
        drill = await self.infra.ask(Advance(self.state.tick), timeout=ASK_TIMEOUT)
        for component in self.components:
            await self._check(component)
        if drill.over and drill.faults_left == 0 and not self._open_incidents():
            self._finish()

    @runtime.handler
    async def deadline_passed(self, msg: Deadline) -> None:
        if not self.finishing:
            log.warning("drill_deadline", tick=self.state.tick, open=len(self._open_incidents()))
            self._finish()

    @runtime.handler
    async def finish(self, msg: Finish) -> None:
        for incident in self._open_incidents():
            incident.status = "unresolved"
        report = self._report()
        if self.report:
            path = trio.Path(self.report)
            await path.parent.mkdir(parents=True, exist_ok=True)
            await path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        log.info(
            "drill_finished",
            drill=self.state.drill,
            ticks=self.state.tick,
            **{name: len(items) for name, items in report["outcomes"].items()},
        )
        self.state.finished = True
        self.ctx.stop()

    # -- one sweep ------------------------------------------------------------

    async def _check(self, component: runtime.ActorRef[Any]) -> None:
        name = component.path.rsplit("/", 1)[-1]
        incident = next((i for i in self._open_incidents() if i.component == name), None)
        if incident is None:
            try:
                symptom = await self._probe(component)
            except CircuitOpen as exc:
                symptom = str(exc)  # opened by crashes of another caller's making
            if symptom is None:
                return
            incident = Incident(len(self.state.incidents) + 1, name, symptom, self.state.tick)
            self.state.incidents.append(incident)
            self._count_incidents()
            log.warning(
                "incident_opened", incident=incident.number, component=name, symptom=symptom
            )
        if incident.status == "quarantined":
            await self._watch(incident, component)
        else:
            await self._repair(incident, component)

    async def _probe(self, component: runtime.ActorRef[Any]) -> str | None:
        """None if the component passes its health check, else the symptom of its crash.

        Raises:
            CircuitOpen: the component's circuit is open.
        """
        try:
            await component.ask(Probe(), timeout=ASK_TIMEOUT)
        except (ActorFailed, ActorStopped) as exc:
            return str(exc.__cause__ or exc)
        return None

    async def _repair(self, incident: Incident, component: runtime.ActorRef[Any]) -> None:
        """Diagnose, fix and verify until the fix holds, the circuit opens or
        the attempts run out; the last two quarantine the component."""
        verdict: Verdict = "failing"
        while incident.attempts < self.max_attempts:
            incident.attempts += 1
            if incident.attempts > 1:
                self.ctx.progress(retried=1)
            incident.diagnosis = await self.diagnoser.ask(
                Diagnose(incident.component, incident.symptom, incident.attempts),
                timeout=ASK_TIMEOUT,
            )
            await self.fixer.ask(Fix(incident.component), timeout=ASK_TIMEOUT)
            verdict = await self.verifier.ask(Verify(component.path), timeout=ASK_TIMEOUT)
            if verdict == "healthy":
                self._close(incident, "repaired")
                return
            if verdict == "circuit_open":
                break
            log.warning(
                "repair_failed",
                incident=incident.number,
                component=incident.component,
                attempt=incident.attempts,
            )
        incident.status = "quarantined"
        log.warning(
            "component_quarantined",
            incident=incident.number,
            component=incident.component,
            attempts=incident.attempts,
            reason="circuit open" if verdict == "circuit_open" else "repair attempts ran out",
        )

    async def _watch(self, incident: Incident, component: runtime.ActorRef[Any]) -> None:
        """A quarantined component is left alone while its circuit is open;
        once half-open, the probe is the trial that shows whether it still fails."""
        if component.statistics().status == "circuit_open":
            return
        try:
            symptom = await self._probe(component)
        except CircuitOpen:
            return  # the trial is taken: the circuit is about to open again
        incident.trials += 1
        if symptom is None:
            self._close(incident, "recovered")
            return
        log.warning(
            "trial_failed",
            incident=incident.number,
            component=incident.component,
            trial=incident.trials,
        )
        if not incident.paged:
            incident.paged = True
            note = f"{incident.component} quarantined after {incident.attempts} repairs: {symptom}"
            await self.operator.tell(Page(incident.component, incident.number, note))

    def _close(self, incident: Incident, status: str) -> None:
        incident.status = status
        incident.closed_tick = self.state.tick
        self._count_incidents()
        log.info(
            "incident_closed",
            incident=incident.number,
            component=incident.component,
            status=status,
            attempts=incident.attempts,
            trials=incident.trials,
        )

    def _count_incidents(self) -> None:
        """Each incident is an item, done once closed."""
        incidents = self.state.incidents
        closed = sum(1 for i in incidents if not self._is_open(i))
        self.ctx.set_progress(total=len(incidents), done=closed)

    def _finish(self) -> None:
        self.finishing = True
        self.timer.cancel()
        self.deadline_timer.cancel()
        # Low priority: ticks already queued are handled (as no-ops) first.
        self.ctx.self_ref.tell_nowait(Finish(), priority="low")

    # -- bookkeeping ----------------------------------------------------------

    @staticmethod
    def _is_open(incident: Incident) -> bool:
        return incident.status in ("repairing", "quarantined")

    def _open_incidents(self) -> list[Incident]:
        return [i for i in self.state.incidents if self._is_open(i)]

    def _report(self) -> dict[str, Any]:
        outcomes: dict[str, list[int]] = {}
        for incident in self.state.incidents:
            outcomes.setdefault(incident.status, []).append(incident.number)
        components = {}
        for component in self.components:
            name = component.path.rsplit("/", 1)[-1]
            stats = component.statistics()
            mine = [i for i in self.state.incidents if i.component == name]
            components[name] = {
                "incidents": len(mine),
                "outcomes": sorted({i.status for i in mine}),
                "restarts": stats.restarts,
                "breaker": stats.breaker,
            }
        return {
            "drill": self.state.drill,
            "ticks": self.state.tick,
            "outcomes": outcomes,
            "components": components,
            "incidents": [cattrs.unstructure(i) for i in self.state.incidents],
        }
