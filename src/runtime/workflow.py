"""Workflows: DAGs of steps, each an ask to an agent, journaled so a killed
run resumes without redoing finished steps.

```python
from runtime.workflow import Step, Workflow
wf = Workflow("assess", max_parallel=3, steps=[
    Step("lint", agent="root/auditor", message=Lint(repo="x"), priority="high"),
    Step("review", agent="root/reviewers", message=Review(repo="x"),
         depends_on=["lint"], validate="actors.checks:has_verdict",
         retry=runtime.RetrySpec(attempts=2), fallback=["root/senior"], timeout=120),
])
result = await system.run_workflow(wf, run_id="pr-42")
```

A step is an ``ask`` of its message to its agent (any path ``system.ref``
knows). Ready steps start in priority order, then in the order they are
listed, at most ``max_parallel`` asking at once. An attempt fails when the ask
raises (the handler crashed, a timeout, an open circuit, ...) or when
``validate`` refuses the result by raising ``Invalid(feedback)``; the step is
then tried again (``retry``: attempts per agent, with backoff on the trio
clock; the next message gets ``feedback=`` when its class has that field),
then each ``fallback`` agent in order. A step out of options is
``needs_attention`` when one of its results was refused by ``validate`` (a
person should look), else ``failed``. Either way no further step starts;
steps already running finish and are journaled, and the run ends with that
status (``failed`` first).

The journal of a run (``Journal``) is one entry of the checkpoint store per
step that ended, at ``workflow/<name>/<run_id>/step/<step>``, written (with
the store's version compare-and-set) before any step that depends on it
starts, and the run's own entry at ``workflow/<name>/<run_id>`` (its status).
Steps ending at the same moment reach the store in one transaction (the
store's group commit). A run started again with the same ``run_id`` takes
the steps that succeeded from the journal and runs the others. A step that
was running when the process died runs again: its ask carries the idempotency key
``<run_id>/<step>/<attempt>`` (``current_step_key()``), the same key in the
new process, so an agent can tell a repeated request from a new one.
"""

from __future__ import annotations

import difflib
import heapq
import inspect
import json
import pkgutil
import random
import re
import secrets
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import attrs
import cattrs
import trio

from ._checkpoint import WORKFLOW_PREFIX, CheckpointStore
from ._correlation import CURRENT, CorrelationSlot
from ._durations import Durations
from ._logging import get_logger
from ._priority import PRIORITY_INDEX, check_priority
from ._ref import ActorRef
from ._specs import RetrySpec, WorkflowSpec, to_seconds
from .errors import ActorSystemError

__all__ = [
    "Invalid",
    "RunSummary",
    "Step",
    "StepResult",
    "Workflow",
    "WorkflowResult",
    "WorkflowStatistics",
    "current_step_key",
]

logger = get_logger()

JOURNAL_PREFIX = WORKFLOW_PREFIX
"""Checkpoint-store keys under this prefix are workflow journals, not actors'
checkpoints (a root supervisor may not be named ``workflow``; ``paths()``
leaves them out)."""
STEP_INFIX = "/step/"
"""Between a run's key and a step's name in the step's journal key."""

RUN_STATUSES = ("succeeded", "failed", "needs_attention")
STRATEGIES = ("dag", "sequential", "parallel")
_KEYS_KEPT = 4096
_RECENT_RUNS = 20
_ONE_ATTEMPT = RetrySpec(attempts=1)
_REFERENCE = re.compile(r"\$\{(?P<body>(?:inputs|steps)\.[^}]*)\}")
_INPUT = re.compile(r"inputs\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
_RESULT = re.compile(
    r"steps\.(?P<step>[A-Za-z0-9_.\-]+?)\.result(?P<attrs>(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
)


class Invalid(Exception):
    """Raised by a step's ``validate`` to refuse a result.

    ``feedback`` goes to the next attempt's message (its ``feedback`` field,
    when its class has one) and into the step's ``error``.
    """

    def __init__(self, feedback: str) -> None:
        super().__init__(feedback)
        self.feedback = feedback


# -- the idempotency key ------------------------------------------------------------

# Each attempt's ask starts its own correlation chain; the key is found by
# the chain's id, which every ask and tell made while handling it carries
# on (so the agent's handler, and whatever it asks in turn, see the key).
# The last few thousand keys are kept: a handler that starts after its
# asker gave up still finds its key.
_KEYS: dict[int | str, str] = {}  # by chain id (a string for a chain from another node)


def current_step_key() -> str | None:
    """The idempotency key ``<run_id>/<step>/<attempt>`` of the workflow step
    whose ask is being handled (in the agent's handler, and in handlers of
    messages it sends on), or None outside any step."""
    slot = CURRENT.get()
    if slot is None or not slot.value:
        return None
    return _KEYS.get(slot.value)


def _new_chain(key: str) -> None:
    """Start a correlation chain in this task that carries ``key``."""
    slot = CorrelationSlot()
    CURRENT.set(slot)
    _KEYS[slot.number()] = key
    if len(_KEYS) > _KEYS_KEPT:
        del _KEYS[next(iter(_KEYS))]


# -- definitions -------------------------------------------------------------------


def _to_validator(value: object) -> Callable[[Any], Any] | None:
    if value is None or callable(value):
        return value
    if isinstance(value, str) and ":" in value:
        try:
            found = pkgutil.resolve_name(value)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"validate: cannot import {value!r}: {exc}") from None
        if callable(found):
            return found  # type: ignore[no-any-return]
    raise ValueError(
        f"validate: expected a function or an import path 'package.module:function', got {value!r}"
    )


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _steps(value: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(value)


def _to_retry(value: RetrySpec | Mapping[str, Any] | None) -> RetrySpec | None:
    return RetrySpec(**value) if isinstance(value, Mapping) else value


def _priority(_inst: object, _attr: object, value: str) -> None:
    check_priority(value)


@attrs.frozen
class Step:
    """One step: ask ``agent`` for ``message``.

    Attributes:
        name: unique in its workflow.
        agent: the path of the actor (or pool) asked first.
        message: the message; or a function of the finished steps' results
            (a mapping of name to ``StepResult``) that returns it.
        depends_on: steps that must succeed before this one starts.
        priority: the ask's priority, and the order ready steps start in.
        timeout: seconds each attempt may take.
        retry: attempts per agent and the backoff between them (None: one).
        fallback: agents tried in order once ``agent`` is out of attempts,
            each with the same attempts.
        validate: a function of the result (or its import path
            ``"package.module:function"``), sync or async, that returns
            None or raises ``Invalid(feedback)``.
    """

    name: str
    agent: str
    message: Any
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_names)
    priority: str = attrs.field(default="normal", validator=_priority)
    timeout: float = attrs.field(default=30.0, converter=to_seconds)
    retry: RetrySpec | None = attrs.field(default=None, converter=_to_retry)
    fallback: tuple[str, ...] = attrs.field(default=(), converter=_names)
    validate: Callable[[Any], Any] | None = attrs.field(default=None, converter=_to_validator)

    @property
    def agents(self) -> tuple[str, ...]:
        """``agent``, then the fallbacks."""
        return (self.agent, *self.fallback)


@attrs.frozen
class Workflow:
    """Steps and how they are scheduled.

    Attributes:
        name: names the run's journal (``workflow/<name>/<run_id>``) and its
            metrics.
        steps: the steps, in order.
        max_parallel: most steps asking their agents at once (a step whose
            result is being journaled no longer counts).
        strategy: ``dag`` (the default: by ``depends_on``), ``sequential``
            (in order, one at a time) or ``parallel`` (no dependencies).

    Raises:
        ValueError: duplicate step names, an unknown step in ``depends_on``,
            a cycle, or ``depends_on`` under ``parallel``.
    """

    name: str
    steps: tuple[Step, ...] = attrs.field(converter=_steps)
    max_parallel: int = 8
    strategy: str = "dag"

    def __attrs_post_init__(self) -> None:
        problems = [message for _, message in check_graph(self.strategy, self.steps)]
        if not isinstance(self.max_parallel, int) or self.max_parallel < 1:
            problems.append(f"max_parallel: expected at least 1, got {self.max_parallel!r}")
        if problems:
            raise ValueError(f"workflow {self.name!r}: " + "; ".join(problems))

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each step's prerequisites under the strategy."""
        if self.strategy == "sequential":
            names = [step.name for step in self.steps]
            return {name: tuple(names[:index][-1:]) for index, name in enumerate(names)}
        return {step.name: step.depends_on for step in self.steps}


def check_graph(strategy: str, steps: Sequence[Any]) -> Iterator[tuple[int | None, str]]:
    """``(step index or None, problem)`` for each way ``steps`` is not a DAG:
    duplicate names, unknown prerequisites, a cycle (the first one found)."""
    if strategy not in STRATEGIES:
        yield None, f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}"
    names = [step.name for step in steps]
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield index, f"duplicate step name {name!r}"
        seen.add(name)
    for index, step in enumerate(steps):
        if strategy == "parallel" and step.depends_on:
            yield index, "depends_on: a parallel workflow runs every step at once"
        for needed in step.depends_on:
            if needed not in seen:
                yield index, f"depends_on: unknown step {needed!r}"
    cycle = find_cycle({step.name: [d for d in step.depends_on if d in seen] for step in steps})
    if cycle:
        yield names.index(cycle[0]), "depends_on: a cycle: " + " -> ".join(cycle)


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle of ``graph`` (name -> the names it depends on) as a path that
    ends where it starts, or [] if there is none. Iterative: deep graphs
    do not hit the recursion limit."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in graph:
        if start in state:
            continue
        path = [start]
        stack = [iter(graph[start])]
        state[start] = 1
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(following) == 1:
                return [*path[path.index(following) :], following]
            elif following not in state:
                state[following] = 1
                path.append(following)
                stack.append(iter(graph.get(following, ())))
    return []


@attrs.frozen
class StepResult:
    """How one step ended.

    Attributes:
        status: ``succeeded``, ``failed``, ``needs_attention``, or
            ``pending`` (it never started: a step it needs did not succeed,
            or the run stopped first).
        value: the agent's answer (None unless it succeeded). A value read
            back from the journal is the JSON form of what was answered,
            structured again into its attrs class when it was one.
        attempts: asks made in this run of the step (over every agent).
        agent: the agent of the last attempt.
        error: why the last attempt failed (the error, or ``Invalid``'s
            feedback), None if it succeeded.
    """

    status: str
    value: Any = None
    attempts: int = 0
    agent: str | None = None
    error: str | None = None


@attrs.frozen
class WorkflowResult:
    """How a run ended.

    Attributes:
        workflow: the workflow's name.
        run_id: the run's id (the journal's key is ``workflow/<workflow>/<run_id>``).
        status: ``succeeded``, ``failed`` or ``needs_attention``.
        steps: each step's result, by name, in the workflow's order.
        resumed: the steps taken from the journal, not run again.
    """

    workflow: str
    run_id: str
    status: str
    steps: dict[str, StepResult]
    resumed: tuple[str, ...] = ()


# -- templates -----------------------------------------------------------------------


@attrs.frozen
class MessageTemplate:
    """A message whose fields hold ``${inputs.NAME}`` and
    ``${steps.STEP.result[.attr...]}`` references, built when its step starts.

    A string that is exactly one reference takes the referenced value itself;
    references inside longer strings are replaced by the value's text. Each
    field is then structured with cattrs into the field's type (a value that
    is already of that type is kept).
    """

    type: type
    fields: dict[str, Any]
    inputs: Mapping[str, Any] = attrs.field(factory=dict)

    def build(self, results: Mapping[str, StepResult]) -> Any:
        """The message.

        Raises:
            ValueError: a field does not structure into its type.
        """
        hints = _field_types(self.type)
        built = {}
        for name, raw in self.fields.items():
            value = substitute(raw, self.inputs, results)
            built[name] = _structure(value, hints.get(name, Any), f"{self.type.__name__}.{name}")
        try:
            return self.type(**built)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.type.__name__}: {exc}") from None

    def step_references(self) -> set[str]:
        """The steps whose results the message uses."""
        return {match["step"] for match in _results_in(self.fields)}


def _results_in(value: Any) -> Iterator[re.Match[str]]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _results_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _results_in(item)
    elif isinstance(value, str):
        for reference in _REFERENCE.finditer(value):
            match = _RESULT.fullmatch(reference["body"])
            if match is not None:
                yield match


def _field_types(cls: type) -> dict[str, Any]:
    if attrs.has(cls):
        return {field.name: field.type for field in attrs.fields(attrs.resolve_types(cls))}
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


_converter = cattrs.Converter()


def _structure(value: Any, type_: Any, where: str) -> Any:
    if type_ is Any:
        return value
    try:
        if isinstance(value, type_):
            return value
    except TypeError:
        pass  # a parameterized or union type: cattrs decides
    try:
        return _converter.structure(value, type_)
    except Exception as exc:
        problems = "; ".join(cattrs.transform_error(exc, path=where))
        raise ValueError(f"{problems or where}: cannot take {value!r}") from None


def substitute(raw: Any, inputs: Mapping[str, Any], results: Mapping[str, StepResult]) -> Any:
    """``raw`` with its references replaced (see ``MessageTemplate``)."""
    if isinstance(raw, dict):
        return {key: substitute(item, inputs, results) for key, item in raw.items()}
    if isinstance(raw, list):
        return [substitute(item, inputs, results) for item in raw]
    if not isinstance(raw, str) or "${" not in raw:
        return raw
    whole = _REFERENCE.fullmatch(raw)
    if whole is not None:
        return _resolve(whole["body"], inputs, results)
    return _REFERENCE.sub(lambda m: str(_resolve(m["body"], inputs, results)), raw)


def _resolve(body: str, inputs: Mapping[str, Any], results: Mapping[str, StepResult]) -> Any:
    if (match := _INPUT.fullmatch(body)) is not None:
        return inputs[match["name"]]
    match = _RESULT.fullmatch(body)
    if match is None:
        raise ValueError(f"malformed reference ${{{body}}}")
    value = results[match["step"]].value
    for name in match["attrs"].split(".")[1:]:
        value = value[name] if isinstance(value, dict) else getattr(value, name)
    return value


def template_problems(spec: WorkflowSpec, agents: set[str]) -> Iterator[tuple[str, str]]:
    """``(field path below the template, problem)`` for each way ``spec``
    cannot run: the graph (cycle, unknown step), unknown agents, message
    types that do not import or fields they do not have, references to
    unknown inputs or to steps not run before, and ``validate`` functions
    that do not import."""
    for index, problem in check_graph(spec.strategy, spec.steps):
        where = "" if index is None else f"steps[{index}]."
        field = problem.split(":", 1)[0] if ":" in problem else "name"
        yield f"{where}{field}" if index is not None else field, problem.split(": ", 1)[-1]
    upstream = _upstream(spec)
    for index, step in enumerate(spec.steps):
        at = f"steps[{index}]"
        for field, agent in [("agent", step.agent)] + [
            (f"fallback[{i}]", path) for i, path in enumerate(step.fallback)
        ]:
            if agent not in agents:
                yield f"{at}.{field}", f"no actor at {agent!r}{_nearest(agent, agents)}"
        yield from (
            (f"{at}.message.{field}", problem)
            for field, problem in _message_problems(step.message, spec.inputs)
        )
        for match in _results_in(step.message):
            if match["step"] not in upstream.get(step.name, set()):
                yield (
                    f"{at}.message",
                    f"${{{match[0]}}}: step {match['step']!r} does not run before "
                    f"{step.name!r} (add it to depends_on)",
                )
        if step.validate is not None:
            try:
                _to_validator(step.validate)
            except ValueError as exc:
                yield f"{at}.validate", str(exc).removeprefix("validate: ")


def _nearest(path: str, known: set[str]) -> str:
    close = difflib.get_close_matches(path, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _upstream(spec: WorkflowSpec) -> dict[str, set[str]]:
    """The steps that have ended before each step starts."""
    names = [step.name for step in spec.steps]
    if spec.strategy == "sequential":
        return {name: set(names[:index]) for index, name in enumerate(names)}
    direct = {step.name: set(step.depends_on) for step in spec.steps}
    found: dict[str, set[str]] = {}
    for name in names:
        seen: set[str] = set()
        todo = list(direct.get(name, ()))
        while todo:
            current = todo.pop()
            if current not in seen and current != name:
                seen.add(current)
                todo.extend(direct.get(current, ()))
        found[name] = seen
    return found


def _message_problems(
    message: Mapping[str, Any], inputs: Sequence[str]
) -> Iterator[tuple[str, str]]:
    kind = message.get("type")
    if not isinstance(kind, str) or ":" not in kind:
        yield "type", f"expected the message's import path 'package.module:Class', got {kind!r}"
        return
    try:
        cls = pkgutil.resolve_name(kind)
    except (ImportError, AttributeError, ValueError) as exc:
        yield "type", f"cannot import {kind!r}: {exc}"
        return
    if not isinstance(cls, type):
        yield "type", f"{kind!r} is not a class"
        return
    fields = message_fields(cls)
    for name in message:
        if name != "type" and fields is not None and name not in fields:
            known = ", ".join(fields) or "none"
            yield name, f"{cls.__qualname__} has no field {name!r}; its fields: {known}"
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if field.default is attrs.NOTHING and field.name not in message:
                yield "type", f"{cls.__qualname__} needs {field.name!r}"
    yield from _reference_problems(message, inputs)


def _reference_problems(
    message: Mapping[str, Any], inputs: Sequence[str]
) -> Iterator[tuple[str, str]]:
    for name, value in message.items():
        for reference in _REFERENCE.finditer(value) if isinstance(value, str) else ():
            body = reference["body"]
            if (match := _INPUT.fullmatch(body)) is not None:
                if match["name"] not in inputs:
                    yield name, f"${{{body}}}: no input {match['name']!r} (inputs: {list(inputs)})"
            elif _RESULT.fullmatch(body) is None:
                yield (
                    name,
                    (
                        f"malformed reference ${{{body}}}: write ${{inputs.NAME}} or "
                        "${steps.STEP.result}"
                    ),
                )


def message_fields(cls: type) -> list[str] | None:
    """The fields a message class takes (None: it takes anything)."""
    if attrs.has(cls):
        return [field.name for field in attrs.fields(cls)]
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters]


def from_template(name: str, spec: WorkflowSpec, inputs: Mapping[str, Any]) -> Workflow:
    """The workflow of template ``spec`` for ``inputs``. Messages that use no
    step's result are built now, so a bad input fails here.

    Raises:
        ValueError: an input is missing or unknown, or does not fit a field.
    """
    missing = [key for key in spec.inputs if key not in inputs]
    unknown = [key for key in inputs if key not in spec.inputs]
    if missing or unknown:
        parts = [f"missing input(s): {', '.join(missing)}"] if missing else []
        parts += [f"unknown input(s): {', '.join(unknown)}"] if unknown else []
        declared = ", ".join(spec.inputs) or "none"
        raise ValueError(f"workflow {name!r}: {'; '.join(parts)} (its inputs: {declared})")
    bound = dict(inputs)
    steps = []
    for step in spec.steps:
        fields = {key: value for key, value in step.message.items() if key != "type"}
        template = MessageTemplate(pkgutil.resolve_name(step.message["type"]), fields, bound)
        message: Any = template
        if not template.step_references():
            try:
                message = template.build({})
            except (ValueError, KeyError) as exc:
                raise ValueError(f"workflow {name!r}: step {step.name!r}: {exc}") from None
        steps.append(
            Step(
                step.name,
                step.agent,
                message,
                depends_on=step.depends_on,
                priority=step.priority,
                timeout=step.timeout,
                retry=step.retry,
                fallback=step.fallback,
                validate=step.validate,
            )
        )
    return Workflow(name, steps, max_parallel=spec.max_parallel, strategy=spec.strategy)


# -- the journal ---------------------------------------------------------------------


def journal_key(workflow: str, run_id: str) -> str:
    """Where a run's own journal entry (its status) is kept in the checkpoint store."""
    return f"{JOURNAL_PREFIX}{workflow}/{run_id}"


def step_key(workflow: str, run_id: str, step: str) -> str:
    """Where one step of a run is journaled in the checkpoint store."""
    return f"{JOURNAL_PREFIX}{workflow}/{run_id}{STEP_INFIX}{step}"


def _type_path(value: object) -> str | None:
    cls = type(value)
    return f"{cls.__module__}:{cls.__qualname__}" if attrs.has(cls) else None


_JSON = json.JSONEncoder(sort_keys=True, allow_nan=False)  # one, not one per entry
_PLAIN = (str, int, float, bool, type(None))  # values that are JSON as they are


def encode_step(result: StepResult) -> str:
    """One step's journal entry as JSON text.

    Raises:
        ValueError: the value cannot be written as JSON.
    """
    value = result.value
    plain = type(value) in _PLAIN
    entry = {
        "status": result.status,
        "value": value if plain else _converter.unstructure(value),
        "type": None if plain else _type_path(value),
        "attempts": result.attempts,
        "agent": result.agent,
        "error": result.error,
    }
    return _JSON.encode(entry)


def decode_step(entry: Mapping[str, Any]) -> StepResult:
    """A step's result from its journal entry (the value structured into its
    attrs class when that still imports and fits; else kept as JSON)."""
    value = entry.get("value")
    kind = entry.get("type")
    if isinstance(kind, str):
        try:
            value = _converter.structure(value, pkgutil.resolve_name(kind))
        except Exception:
            logger.warning("workflow_journal_value_kept_as_json", type=kind)
    return StepResult(
        str(entry.get("status")),
        value,
        int(entry.get("attempts") or 0),
        entry.get("agent"),
        entry.get("error"),
    )


class Journal:
    """A run's journal: one store entry per step that ended, and the run's own.

    Each step that ends is written at ``step_key`` (its status, value,
    attempts, agent, error), so a write's size does not grow with the run.
    The run's entry, at ``journal_key``, holds its status; it is written
    before the first step's entry (a run without one has no steps
    journaled, so a new run reads one entry) and when the run ends. The
    step whose end ends the run is written into the run's entry (its
    ``steps``) in that same last write rather than on its own: a one-step
    run makes one write.

    Writes of steps ending at the same time reach the store together (the
    SQLite and PostgreSQL stores commit concurrent writes in one transaction,
    ``GroupCommit``). Each write names the version it read, so two processes
    running one ``run_id`` at once cannot both write an entry: the second
    gets ``CheckpointConflict``.
    """

    def __init__(
        self, store: CheckpointStore, workflow: str, run_id: str, steps: Iterable[str] = ()
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.run_id = run_id
        self.key = journal_key(workflow, run_id)
        self.steps = tuple(steps)  # the names of the workflow's steps
        self.version = 0  # of the run's entry
        self.status = "running"
        self.versions: dict[str, int] = {}  # each step entry's stored version
        self.inline: dict[str, str] = {}  # step -> encoded entry kept in the run's entry
        self.opening: trio.Event | None = None  # set once a write of the run's entry ends

    async def load(self) -> dict[str, StepResult]:
        """The steps the journal has, by name (empty for a new run). A step
        journaled twice (in its own entry and in the run's) is taken as
        succeeded when either says so, else as the run's entry has it."""
        loaded = await self.store.load(self.key)
        if loaded is None:
            return {}
        self.version, text = loaded
        document = json.loads(text)
        self.status = str(document.get("status", "running"))
        inline = document.get("steps") or {}
        results = {name: decode_step(entry) for name, entry in inline.items()}
        for name in self.steps:
            if name in results and results[name].status == "succeeded":
                continue
            found = await self.store.load(step_key(self.workflow, self.run_id, name))
            if found is None:
                continue
            self.versions[name], data = found
            own = decode_step(json.loads(data))
            if name not in results or own.status == "succeeded":
                results[name] = own
        # Only succeeded steps are carried on in the run's entry: the others
        # run again.
        self.inline = {
            name: json.dumps(entry, sort_keys=True)
            for name, entry in inline.items()
            if results[name].status == "succeeded"
        }
        return results

    def text(self) -> str:
        steps = ", ".join(f"{json.dumps(name)}: {entry}" for name, entry in self.inline.items())
        return (
            f'{{"run_id": {json.dumps(self.run_id)}, "workflow": {json.dumps(self.workflow)}, '
            f'"status": {json.dumps(self.status)}, "steps": {{{steps}}}}}'
        )

    async def record_step(self, name: str, entry: str) -> None:
        """Write one step's entry; returns once it is in the store."""
        while not self.version:  # the run's entry first: a load then looks for steps
            if self.opening is not None:
                await self.opening.wait()  # written by another step, or to try again
                continue
            self.opening = opening = trio.Event()
            try:
                self.version = await self.store.save(self.key, self.text(), 0)
            finally:
                self.opening = None
                opening.set()
        key = step_key(self.workflow, self.run_id, name)
        self.versions[name] = await self.store.save(key, entry, self.versions.get(name, 0))

    async def record_end(self, status: str, last: Mapping[str, str]) -> None:
        """Write the run's entry with ``status`` and the steps ``last`` (name
        to encoded entry) whose own entries were not written."""
        if status == self.status and not last:
            return
        self.status = status
        self.inline.update(last)
        self.version = await self.store.save(self.key, self.text(), self.version)


# -- the runs a system has -------------------------------------------------------------


@attrs.frozen
class RunSummary:
    """A run as ``/status`` shows it.

    Attributes:
        workflow, run_id: which run.
        status: ``running``, or how it ended.
        steps: each step's status (``pending``, ``running``, ``succeeded``,
            ``failed``, ``needs_attention``), in the workflow's order.
        started: when it started (``trio.current_time()``).
    """

    workflow: str
    run_id: str
    status: str
    steps: tuple[tuple[str, str], ...]
    started: float


@attrs.frozen
class WorkflowStatistics:
    """What the system's workflow runs did so far.

    Attributes:
        running: the runs in flight.
        recent: the last runs that ended, newest last.
        outcomes: runs ended, by ``(workflow, status)``.
        retries: attempts after a failed one, by workflow.
        fallbacks: fallback agents turned to, by workflow.
        needing_attention: runs that ended ``needs_attention`` and were not
            run again since, by workflow.
    """

    running: tuple[RunSummary, ...]
    recent: tuple[RunSummary, ...]
    outcomes: dict[tuple[str, str], int]
    retries: dict[str, int]
    fallbacks: dict[str, int]
    needing_attention: dict[str, int]


class WorkflowRuns:
    """The runs of one system: those in flight, the last ones, and counters.
    ``statistics()`` reads; the runs update it as they go."""

    def __init__(self) -> None:
        self.running: dict[tuple[str, str], _Run] = {}
        self.recent: deque[RunSummary] = deque(maxlen=_RECENT_RUNS)
        self.outcomes: dict[tuple[str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.fallbacks: dict[str, int] = {}
        self.parked: set[tuple[str, str]] = set()  # needs_attention, not run again
        self.durations: dict[tuple[str, str], Durations] = {}  # by (workflow, step)
        # The workflow of each recent run, by (workflow, run_id): what
        # running it again with the same id (the console's resume) needs.
        self.definitions: dict[tuple[str, str], Workflow] = {}

    def remember(self, key: tuple[str, str], workflow: Workflow) -> None:
        """Keep ``workflow`` as the definition of run ``key`` (the last
        ``_KEYS_KEPT`` runs are kept)."""
        definitions = self.definitions
        definitions.pop(key, None)
        definitions[key] = workflow
        if len(definitions) > _KEYS_KEPT:
            del definitions[next(iter(definitions))]

    def step_ended(self, workflow: str, step: str, seconds: float) -> None:
        durations = self.durations.get((workflow, step))
        if durations is None:
            durations = self.durations[workflow, step] = Durations()
        durations.observe(seconds)

    def count(self, what: dict[str, int], workflow: str) -> None:
        what[workflow] = what.get(workflow, 0) + 1

    def statistics(self) -> WorkflowStatistics:
        needing: dict[str, int] = {}
        for workflow, _ in self.parked:
            needing[workflow] = needing.get(workflow, 0) + 1
        return WorkflowStatistics(
            tuple(run.summary() for run in self.running.values()),
            tuple(self.recent),
            dict(self.outcomes),
            dict(self.retries),
            dict(self.fallbacks),
            needing,
        )

    def parked_runs(self) -> tuple[str, ...]:
        """The runs that ended ``needs_attention`` and were not run again
        since, as ``workflow/run_id``, sorted."""
        return tuple(sorted(f"{workflow}/{run_id}" for workflow, run_id in self.parked))

    def progress(self) -> tuple[tuple[str, int, int], ...]:
        """Each run in flight as ``(workflow/run_id, steps ended, steps)``."""
        return tuple(
            (f"{run.workflow.name}/{run.run_id}", len(run.ended), len(run.workflow.steps))
            for run in self.running.values()
        )


# -- running ---------------------------------------------------------------------------


class Agents(Protocol):
    """How a run finds its agents: ``system.ref``."""

    def __call__(self, path: str) -> ActorRef[Any]: ...


_ASK_ERRORS = (ActorSystemError,)


async def run(
    workflow: Workflow,
    run_id: str | None,
    *,
    ref: Agents,
    store: CheckpointStore,
    runs: WorkflowRuns,
) -> WorkflowResult:
    """Run ``workflow`` as ``run_id`` (a new id when None); see
    ``ActorSystem.run_workflow``."""
    run_id = run_id if run_id is not None else secrets.token_hex(6)
    if "/" in run_id or not run_id:
        raise ValueError(f"run_id: expected a non-empty id without '/', got {run_id!r}")
    for step in workflow.steps:
        for agent in step.agents:
            ref(agent)  # ActorNotFound before anything runs
    key = (workflow.name, run_id)
    if key in runs.running:
        raise ValueError(f"workflow {workflow.name!r} run {run_id!r} is running already")
    journal = Journal(store, workflow.name, run_id, (step.name for step in workflow.steps))
    this = _Run(workflow, run_id, ref, journal, runs)
    runs.running[key] = this
    runs.parked.discard(key)
    runs.remember(key, workflow)
    try:
        result = await this.go()
    finally:
        del runs.running[key]
    runs.recent.append(this.summary())
    outcome = (workflow.name, result.status)
    runs.outcomes[outcome] = runs.outcomes.get(outcome, 0) + 1
    if result.status == "needs_attention":
        runs.parked.add(key)
    return result


class _Run:
    """One run: the schedule of its steps, their attempts, its journal."""

    def __init__(
        self, workflow: Workflow, run_id: str, ref: Agents, journal: Journal, runs: WorkflowRuns
    ) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.ref = ref
        self.journal = journal
        self.runs = runs
        self.by_name = {step.name: step for step in workflow.steps}
        self.ended: dict[str, StepResult] = {}
        self.started_steps: set[str] = set()
        self.started = trio.current_time()
        self.status = "running"
        self.asking = 0  # steps asking their agents (at most max_parallel)
        self.asking_ended = 0  # steps started whose asks ended
        self.halted = False  # a step did not succeed: no further step starts
        self.last: dict[str, str] = {}  # the step that ended the run, for the run's entry
        self.order = {name: index for index, name in enumerate(self.by_name)}
        self.waiting: dict[str, int] = {}  # step -> prerequisites not journaled yet
        self.dependents: dict[str, list[str]] = {}  # step -> the steps that need it
        self.ready: list[tuple[int, int, str]] = []  # a heap: (priority, order, step)
        self.nursery: trio.Nursery | None = None  # the steps' tasks

    def summary(self) -> RunSummary:
        steps = []
        for step in self.workflow.steps:
            result = self.ended.get(step.name)
            if result is not None:
                steps.append((step.name, result.status))
            else:
                running = step.name in self.started_steps
                steps.append((step.name, "running" if running else "pending"))
        return RunSummary(self.workflow.name, self.run_id, self.status, tuple(steps), self.started)

    async def go(self) -> WorkflowResult:
        journaled = await self.journal.load()
        resumed = tuple(
            name
            for name in self.by_name
            if name in journaled and journaled[name].status == "succeeded"
        )
        self.ended = {name: journaled[name] for name in resumed}
        logger.info(
            "workflow_started",
            workflow=self.workflow.name,
            run_id=self.run_id,
            steps=len(self.by_name),
            resumed=len(resumed),
        )
        if len(resumed) < len(self.by_name):
            await self._schedule()
        self.status = _outcome(self.ended.values(), len(self.by_name))
        await self.journal.record_end(self.status, self.last)
        steps = {name: self.ended.get(name, StepResult("pending")) for name in self.by_name}
        logger.info(
            "workflow_ended", workflow=self.workflow.name, run_id=self.run_id, status=self.status
        )
        return WorkflowResult(self.workflow.name, self.run_id, self.status, steps, resumed)

    async def _schedule(self) -> None:
        """Start ready steps, at most ``max_parallel`` asking at once, until
        none is ready and none runs; after a step that did not succeed, start
        none. A step's slot is free once its agent answered; the steps that
        need it start once it is journaled. The steps' own tasks start the
        next ones (no task of the run's in between)."""
        needs = self.workflow.dependencies()
        self.waiting = {
            name: sum(1 for d in needs[name] if d not in self.ended)
            for name in self.by_name
            if name not in self.ended
        }
        for name in self.waiting:
            for needed in needs[name]:
                self.dependents.setdefault(needed, []).append(name)
        for name, count in self.waiting.items():
            if not count:
                self._make_ready(name)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._start_ready()

    def _make_ready(self, name: str) -> None:
        rank = PRIORITY_INDEX[self.by_name[name].priority]
        heapq.heappush(self.ready, (rank, self.order[name], name))

    def _start_ready(self) -> None:
        """Start ready steps, in priority then listed order, while slots are
        free and no step has failed."""
        ready, nursery = self.ready, self.nursery
        assert nursery is not None
        while ready and self.asking < self.workflow.max_parallel and not self.halted:
            name = heapq.heappop(ready)[2]
            self.asking += 1
            self.started_steps.add(name)
            nursery.start_soon(self._step, self.by_name[name])

    async def _step(self, step: Step) -> None:
        started = trio.current_time()
        result = await self._attempts(step)
        self.runs.step_ended(self.workflow.name, step.name, trio.current_time() - started)
        try:
            entry = encode_step(result)
        except (TypeError, ValueError) as exc:
            result = StepResult(
                "failed",
                None,
                result.attempts,
                result.agent,
                f"its result cannot be journaled as JSON: {exc}",
            )
            entry = encode_step(result)
        self.ended[step.name] = result
        if result.status != "succeeded":
            self.halted = True
        self.asking -= 1
        self.asking_ended += 1
        self._start_ready()  # its slot is free
        if self.asking_ended == len(self.started_steps) and (
            self.halted or len(self.ended) == len(self.by_name)
        ):
            # No step starts after this one: the run's last write carries it.
            self.last[step.name] = entry
        else:
            # Durable before a step that needs it starts.
            await self.journal.record_step(step.name, entry)
        logger.info(
            "workflow_step_ended",
            workflow=self.workflow.name,
            run_id=self.run_id,
            step=step.name,
            status=result.status,
            attempts=result.attempts,
            agent=result.agent,
        )
        if result.status == "succeeded":
            waiting = self.waiting
            for dependent in self.dependents.get(step.name, ()):
                waiting[dependent] -= 1
                if not waiting[dependent]:
                    self._make_ready(dependent)
            self._start_ready()

    async def _attempts(self, step: Step) -> StepResult:
        """Ask each agent in turn, ``retry.attempts`` times each, until a result
        passes ``validate``."""
        try:
            message = self._message(step)
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            return StepResult("failed", None, 0, step.agent, f"message: {exc}")
        retry = step.retry or _ONE_ATTEMPT
        attempt = 0
        refused = False
        error: str | None = None
        feedback: str | None = None
        agent = step.agent
        for turn, agent in enumerate(step.agents):
            if turn:
                self.runs.count(self.runs.fallbacks, self.workflow.name)
            for tries in range(retry.attempts):
                if tries:
                    self.runs.count(self.runs.retries, self.workflow.name)
                    await trio.sleep(retry.delay(tries, random.random()))
                attempt += 1
                outcome = await self._attempt(
                    step, agent, _with_feedback(message, feedback), attempt
                )
                if not isinstance(outcome, _Failure):
                    return StepResult("succeeded", outcome, attempt, agent)
                error = f"{agent}: {outcome.error}"
                if outcome.feedback is not None:
                    refused = True
                    feedback = outcome.feedback
        return StepResult("needs_attention" if refused else "failed", None, attempt, agent, error)

    def _message(self, step: Step) -> Any:
        message = step.message
        if isinstance(message, MessageTemplate):
            return message.build(self.ended)
        if isinstance(message, types.FunctionType | types.MethodType):
            return message(dict(self.ended))
        return message

    def _log(
        self, method: Any, event: str, step: Step, agent: str, attempt: int, **more: Any
    ) -> None:
        method(
            event,
            workflow=self.workflow.name,
            run_id=self.run_id,
            step=step.name,
            agent=agent,
            attempt=attempt,
            **more,
        )

    async def _attempt(self, step: Step, agent: str, message: Any, attempt: int) -> Any:
        """One ask and its validation: the value, or a ``_Failure``."""
        key = f"{self.run_id}/{step.name}/{attempt}"
        try:
            # Each step runs in a task of its own: the chain is this task's.
            _new_chain(key)
            value = await self.ref(agent).ask(message, timeout=step.timeout, priority=step.priority)
        except _ASK_ERRORS as exc:
            self._log(
                logger.warning, "workflow_attempt_failed", step, agent, attempt, error=repr(exc)
            )
            return _Failure(repr(exc))
        if step.validate is None:
            return value
        try:
            checked = step.validate(value)
            if inspect.isawaitable(checked):
                await checked
        except Invalid as exc:
            self._log(
                logger.info, "workflow_result_invalid", step, agent, attempt, feedback=exc.feedback
            )
            return _Failure(f"invalid: {exc.feedback}", exc.feedback)
        except Exception as exc:  # a broken check fails the attempt, not the run
            return _Failure(f"validate raised {exc!r}")
        return value


@attrs.frozen
class _Failure:
    error: str
    feedback: str | None = None


def _with_feedback(message: Any, feedback: str | None) -> Any:
    if feedback is None or not attrs.has(type(message)):
        return message
    if "feedback" not in attrs.fields_dict(type(message)):
        return message
    return attrs.evolve(message, feedback=feedback)


def _outcome(results: Any, total: int) -> str:
    statuses = [result.status for result in results]
    if "failed" in statuses:
        return "failed"
    if "needs_attention" in statuses:
        return "needs_attention"
    return "succeeded" if statuses.count("succeeded") == total else "failed"
