"""Specs: the attrs classes a topology is made of, the same in code and YAML.

Enumerated fields take their YAML strings (``strategy="one_for_all"``),
durations take seconds or strings such as ``"500ms"``, ``"5s"``, ``"2m"``,
and ``actor`` takes a class or an import path ``"package.module:Class"``.
Each converter below is also the cattrs structure hook of its field's type, so
a bad value is reported against the field it came from.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Mapping
from typing import Any, Literal, NewType, Union

import attrs

__all__ = [
    "BackoffSpec",
    "BreakerSpec",
    "BudgetSpec",
    "ChildSpec",
    "ClusterSpec",
    "MailboxSpec",
    "MetricsSpec",
    "PoolSpec",
    "RateSpec",
    "ResourceSpec",
    "RetrySpec",
    "StepSpec",
    "SupervisorSpec",
    "Topology",
    "WorkflowSpec",
    "renamed",
]

Seconds = NewType("Seconds", float)
"""A duration in seconds; structured from a number or a string such as
``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"`` or ``"1d"``."""

CheckpointPolicy = Union[str, float]  # noqa: UP007
"""``"off"``, ``"message"``, ``"manual"`` or a period in seconds."""

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
Overflow = Literal["block", "reject", "drop_oldest", "drop_newest"]
ROUTINGS = ("round_robin", "least_busy", "random", "consistent_hash", "broadcast")
"""How a pool routes each message to one of its workers (``PoolSpec.routing``)."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def to_seconds(value: object) -> Seconds:
    """Convert a number of seconds or a duration string to seconds.

    Raises:
        ValueError: not a non-negative number nor a duration string.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 5, 500ms, 5s or 2m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    else:
        raise ValueError(f"expected a duration such as 5, 500ms, 5s or 2m, got {value!r}")
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"a duration must be zero or more, got {value!r}")
    return Seconds(seconds)


def to_checkpoint_policy(value: object) -> str | float:
    """Convert ``off``/``message``/``manual`` or a period to a checkpoint policy."""
    if value is False:  # YAML 1.1 reads a bare `off` as false
        return "off"
    if value in ("off", "message", "manual"):
        return str(value)
    try:
        period = to_seconds(value)
    except ValueError:
        raise ValueError(
            f"expected off, message, manual or a period such as 30s, got {value!r}"
        ) from None
    if period <= 0:
        raise ValueError(f"a checkpoint period must be more than zero, got {value!r}")
    return period


def _import_path(value: str) -> Any:
    module_name, sep, qualname = value.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"expected an import path 'package.module:Class', got {value!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {qualname!r}") from None
    return obj


def _class_name(value: object) -> str:
    return f"{value.__module__}:{value.__qualname__}" if isinstance(value, type) else repr(value)


def _marked(value: object, marker: str) -> bool:
    """Whether ``value`` is a class carrying ``marker`` (set on ``runtime.Actor``
    and ``runtime.Resource``): specs are plain data and import neither."""
    return isinstance(value, type) and getattr(value, marker, False) is True


def import_actor(value: object) -> type[Any]:
    """Resolve an actor class, or an import path ``"package.module:Class"`` to one.

    Raises:
        ValueError: the path is malformed, cannot be imported, or does not
            name a subclass of ``runtime.Actor``.
    """
    if isinstance(value, str):
        value = _import_path(value)
    if not _marked(value, "__runtime_actor__"):
        raise ValueError(f"{_class_name(value)} is not a subclass of runtime.Actor")
    assert isinstance(value, type)
    return value


RESOURCE_KINDS = {
    "postgres": "runtime.resources.postgres:Postgres",
    "llm": "runtime.resources.llm:LLM",
    "mcp": "runtime.resources.mcp:MCP",
}
"""The built-in resource kinds and the classes that implement them."""

ResourceKind = NewType("ResourceKind", type)
"""A ``runtime.Resource`` subclass; structured from a kind name or an import path."""


def import_resource(value: object) -> ResourceKind:
    """Resolve ``postgres``, ``llm``, ``mcp``, an import path or a class to a
    ``runtime.Resource`` subclass.

    Raises:
        ValueError: not a known kind, or not a subclass of ``runtime.Resource``.
    """
    if isinstance(value, str):
        if value in RESOURCE_KINDS:
            value = RESOURCE_KINDS[value]
        elif ":" not in value:
            raise ValueError(
                f"expected postgres, llm, mcp or an import path 'package.module:Class'; "
                f"got {value!r}"
            )
        value = _import_path(value)
    if not _marked(value, "__runtime_resource__"):
        raise ValueError(f"{_class_name(value)} is not a subclass of runtime.Resource")
    assert isinstance(value, type)
    return ResourceKind(value)


class FieldError(ValueError):
    """A validator's complaint about one field (``field`` may be a dotted/indexed path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def one_of(*choices: str) -> Any:
    def check(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FieldError(
                attr.name, f"expected one of {', '.join(choices)}; got {value!r}{hint}"
            )

    return check


def at_least(minimum: int) -> Any:
    def check(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise FieldError(
                attr.name, f"expected a whole number of at least {minimum}; got {value!r}"
            )

    return check


def _name(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise FieldError(
            attr.name, f"a name is letters, digits, '_', '-' or '.' (no '/'); got {value!r}"
        )


@attrs.frozen
class MailboxSpec:
    """A bounded mailbox.

    Attributes:
        capacity: how many messages it holds (all priorities together).
        overflow: what a full mailbox does with one more message: ``block``
            (``tell`` waits), ``reject`` (``MailboxFull`` at once),
            ``drop_oldest`` or ``drop_newest`` (the evicted message becomes a
            dead letter).
        durable: in a cluster, tells go through a JetStream stream and are
            acknowledged there once handled and checkpointed (needs
            ``cluster:`` and ``checkpoint: message``; DESIGN 6.5).
        max_deliver: with ``durable``, how many times a tell is handled
            before a handler that keeps failing on it makes it a dead
            letter (reason ``max_deliver``); keep it at most the
            supervisor's ``max_restarts``, or the supervisor gives up first.
    """

    capacity: int = attrs.field(default=100, validator=at_least(1))
    overflow: Overflow = attrs.field(
        default="block",
        validator=one_of("block", "reject", "drop_oldest", "drop_newest"),
    )
    durable: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    max_deliver: int = attrs.field(default=3, validator=at_least(1))


@attrs.frozen
class BackoffSpec:
    """Delay before a restart: the n-th consecutive one waits
    ``min(max, initial * multiplier**(n-1))`` plus up to ``jitter`` times that."""

    initial: Seconds = attrs.field(default=Seconds(0.1), converter=to_seconds)
    max: Seconds = attrs.field(default=Seconds(30.0), converter=to_seconds)
    multiplier: float = attrs.field(default=2.0, converter=float)
    jitter: float = attrs.field(default=0.1, converter=float)

    @multiplier.validator
    def _check_multiplier(self, _attr: object, value: float) -> None:
        if value < 1:
            raise FieldError("multiplier", f"expected at least 1; got {value!r}")

    @jitter.validator
    def _check_jitter(self, _attr: object, value: float) -> None:
        if not 0 <= value <= 1:
            raise FieldError("jitter", f"expected a fraction between 0 and 1; got {value!r}")

    def delay(self, n: int, random_fraction: float) -> float:
        """Seconds to wait before the ``n``-th consecutive restart (``n >= 1``)."""
        base = min(self.max, self.initial * self.multiplier ** (n - 1))
        return base + base * self.jitter * random_fraction


@attrs.frozen
class BreakerSpec:
    """A per-child circuit breaker: after ``failures`` consecutive crashes the
    child is not restarted until ``reset_timeout`` has passed."""

    failures: int = attrs.field(default=5, validator=at_least(1))
    reset_timeout: Seconds = attrs.field(default=Seconds(60.0), converter=to_seconds)


@attrs.frozen
class RateSpec:
    """At most ``requests`` admissions in every window of ``period`` seconds
    (``[t, t + period)`` for every ``t``, from the first request on)."""

    requests: int = attrs.field(validator=at_least(1))
    period: Seconds = attrs.field(converter=to_seconds)

    @period.validator
    def _check_period(self, _attr: object, value: float) -> None:
        if value <= 0:
            raise FieldError("period", f"expected a period longer than zero; got {value!r}")


@attrs.frozen
class RetrySpec:
    """Up to ``attempts`` tries in all; the n-th retry waits a random time in
    ``[0, min(max, initial * multiplier**(n-1))]`` (full jitter)."""

    attempts: int = attrs.field(default=3, validator=at_least(1))
    initial: Seconds = attrs.field(default=Seconds(0.5), converter=to_seconds)
    multiplier: float = attrs.field(default=2.0, converter=float)
    max: Seconds = attrs.field(default=Seconds(30.0), converter=to_seconds)

    @multiplier.validator
    def _check_multiplier(self, _attr: object, value: float) -> None:
        if value < 1:
            raise FieldError("multiplier", f"expected at least 1; got {value!r}")

    def delay(self, retry: int, random_fraction: float) -> float:
        """Seconds to wait before the ``retry``-th retry (1-based)."""
        return random_fraction * min(self.max, self.initial * self.multiplier ** (retry - 1))


def _optional_positive(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FieldError(attr.name, f"expected a number above zero; got {value!r}")


def _whole(value: Any) -> Any:
    """A token count: a whole number (a float such as 1e6 that is one, too)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@attrs.frozen
class BudgetSpec:
    """A spending limit per period: on an ``llm`` resource (every request it
    serves) or on a supervisor (every request of every actor below it, on
    any resource).

    Attributes:
        tokens: input plus output tokens per period (None: no token limit).
        dollars: the cost per period, from the resource's ``pricing``
            (None: no dollar limit). At least one of the two is set.
        period: the window's length; windows are aligned to the Unix epoch
            in UTC (``1d``: each calendar day, UTC; ``1h``: each hour).
        on_exhausted: what a request finds once the window's spending has
            reached a limit: ``refuse`` (``BudgetExceeded``) or ``wait``
            (until the next window, within the ask's timeout).
    """

    tokens: int | None = attrs.field(
        default=None, converter=_whole, validator=attrs.validators.optional(at_least(1))
    )
    dollars: float | None = attrs.field(default=None, validator=_optional_positive)
    period: Seconds = attrs.field(default=Seconds(86400.0), converter=to_seconds)
    on_exhausted: Literal["refuse", "wait"] = attrs.field(
        default="refuse", validator=one_of("refuse", "wait")
    )

    @period.validator
    def _check_period(self, _attr: object, value: float) -> None:
        if value <= 0:
            raise FieldError("period", f"expected a period longer than zero; got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.tokens is None and self.dollars is None:
            raise FieldError("tokens", "a budget needs tokens:, dollars: or both")


DEFAULT_MAILBOX = MailboxSpec()
"""The default mailbox (frozen, so every spec without one shares it)."""

# Code may give a nested spec as a dict of its fields, as YAML does.


def _to_pool(value: PoolSpec | dict[str, Any] | None) -> PoolSpec | None:
    return PoolSpec(**value) if isinstance(value, dict) else value


def _to_tags(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise FieldError("tags", f"expected a list of tags, e.g. [review]; got {value!r}")
    for tag in value:
        if not isinstance(tag, str) or not _NAME.match(tag):
            raise FieldError(
                "tags", f"a tag is letters, digits, '_', '-' or '.' (no '/'); got {tag!r}"
            )
    return tuple(value)


def _to_mailbox(value: MailboxSpec | dict[str, Any]) -> MailboxSpec:
    return MailboxSpec(**value) if isinstance(value, dict) else value


def _to_breaker(value: BreakerSpec | dict[str, Any] | None) -> BreakerSpec | None:
    return BreakerSpec(**value) if isinstance(value, dict) else value


def _to_rate(value: RateSpec | dict[str, Any] | None) -> RateSpec | None:
    return RateSpec(**value) if isinstance(value, dict) else value


def _to_retry(value: RetrySpec | dict[str, Any] | None) -> RetrySpec | None:
    return RetrySpec(**value) if isinstance(value, dict) else value


def _to_backoff(value: BackoffSpec | dict[str, Any] | None) -> BackoffSpec | None:
    return BackoffSpec(**value) if isinstance(value, dict) else value


def _to_budget(value: BudgetSpec | dict[str, Any] | None) -> BudgetSpec | None:
    return BudgetSpec(**value) if isinstance(value, dict) else value


_OPTIONAL_BUDGET = attrs.validators.optional(attrs.validators.instance_of(BudgetSpec))


@attrs.frozen
class PoolSpec:
    """A pool of identical workers behind one path (``ChildSpec.pool``).

    Attributes:
        size: how many workers (``<path>/0`` .. ``<path>/<size-1>``).
        routing: how each message sent to the pool's path picks a worker:
            ``round_robin``, ``least_busy`` (the shortest mailbox, then the
            fewest messages in hand), ``random``, ``consistent_hash`` (by the
            message attribute named by ``hash_key``: one key, one worker) or
            ``broadcast`` (a tell reaches every worker; ask is refused).
        hash_key: the message attribute ``consistent_hash`` routes by.
    """

    size: int = attrs.field(validator=at_least(1))
    routing: str = attrs.field(default="round_robin", validator=one_of(*ROUTINGS))
    hash_key: str | None = attrs.field(default=None)

    @hash_key.validator
    def _check_hash_key(self, _attr: object, value: str | None) -> None:
        routing = self.routing
        if routing == "consistent_hash" and not value:
            raise FieldError(
                "hash_key",
                "routing: consistent_hash needs hash_key: the message attribute to route by",
            )
        if value is not None and routing != "consistent_hash":
            raise FieldError(
                "hash_key", f"hash_key is read by routing: consistent_hash only (not {routing})"
            )


@attrs.frozen
class ChildSpec:
    """One actor under a supervisor.

    Attributes:
        name: unique among its siblings; the last part of the actor's path.
        actor: the ``Actor`` subclass, or its import path ``"pkg.module:Class"``.
        restart: ``permanent`` (always restarted), ``transient`` (only after a
            crash) or ``temporary`` (never).
        mailbox: capacity and overflow policy.
        checkpoint: ``off``, ``message``, ``manual`` or a period in seconds.
        circuit_breaker: optional; see ``BreakerSpec``.
        shutdown_timeout: seconds a graceful stop waits before cancelling.
        concurrency: how many messages are handled at once.
        args: keyword arguments for the actor's constructor.
        pool: optional; a pool of ``pool.size`` such actors under a pool
            supervisor at this path (see ``PoolSpec``).
        tags: names ``ActorSystem.find`` and ``ctx.find`` look the actor up by.
    """

    name: str = attrs.field(validator=_name)
    actor: type[Any] = attrs.field(converter=import_actor)
    restart: RestartType = attrs.field(
        default="permanent",
        validator=one_of("permanent", "transient", "temporary"),
    )
    mailbox: MailboxSpec = attrs.field(
        default=DEFAULT_MAILBOX,
        converter=_to_mailbox,
        validator=attrs.validators.instance_of(MailboxSpec),
    )
    checkpoint: CheckpointPolicy = attrs.field(default="off", converter=to_checkpoint_policy)
    circuit_breaker: BreakerSpec | None = attrs.field(
        default=None,
        converter=_to_breaker,
        validator=attrs.validators.optional(attrs.validators.instance_of(BreakerSpec)),
    )
    shutdown_timeout: Seconds = attrs.field(default=Seconds(5.0), converter=to_seconds)
    concurrency: int = attrs.field(default=1, validator=at_least(1))
    args: dict[str, Any] = attrs.field(factory=dict)
    pool: PoolSpec | None = attrs.field(
        default=None,
        converter=_to_pool,
        validator=attrs.validators.optional(attrs.validators.instance_of(PoolSpec)),
    )
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)


def renamed(spec: ChildSpec, name: str) -> ChildSpec:
    """``spec`` under another ``name``, only the name checked: the other
    fields were checked when ``spec`` was made (``attrs.evolve`` would
    check them all again; ``spawn`` of many actors of one class uses this).

    Raises:
        FieldError: not a valid name.
    """
    _name(spec, _NAME_FIELD, name)
    copy = object.__new__(ChildSpec)
    for field in _CHILD_FIELDS:
        object.__setattr__(copy, field, getattr(spec, field))
    object.__setattr__(copy, "name", name)
    return copy


@attrs.frozen
class SupervisorSpec:
    """A supervisor and its children, started in order and stopped in reverse.

    Attributes:
        name: unique among its siblings; the first part of every path below.
        strategy: ``one_for_one``, ``one_for_all`` or ``rest_for_one``.
        max_restarts: more than this many restarts within ``within`` seconds
            makes the supervisor stop its children and fail.
        within: the sliding window of the restart intensity, in seconds.
        backoff: optional delay before restarts; see ``BackoffSpec``.
        children: ``ChildSpec`` and nested ``SupervisorSpec`` entries.
        budget: optional spending limit shared by every actor below this
            supervisor, on every ``llm`` resource; see ``BudgetSpec``.
    """

    name: str = attrs.field(validator=_name)
    strategy: Strategy = attrs.field(
        default="one_for_one",
        validator=one_of("one_for_one", "one_for_all", "rest_for_one"),
    )
    max_restarts: int = attrs.field(default=3, validator=at_least(0))
    within: Seconds = attrs.field(default=Seconds(5.0), converter=to_seconds)
    backoff: BackoffSpec | None = attrs.field(
        default=None,
        converter=_to_backoff,
        validator=attrs.validators.optional(attrs.validators.instance_of(BackoffSpec)),
    )
    children: list[Union[ChildSpec, SupervisorSpec]] = attrs.field(factory=list)  # noqa: UP007
    budget: BudgetSpec | None = attrs.field(
        default=None, converter=_to_budget, validator=_OPTIONAL_BUDGET
    )

    @within.validator
    def _check_within(self, _attr: object, value: float) -> None:
        if value <= 0:
            raise FieldError("within", f"expected a window longer than zero; got {value!r}")

    @children.validator
    def _check_children(self, _attr: object, value: list[ChildSpec | SupervisorSpec]) -> None:
        seen: set[str] = set()
        for index, child in enumerate(value):
            if child.name in seen:
                raise FieldError(
                    f"children[{index}].name",
                    f"duplicate child name {child.name!r} under supervisor {self.name!r}",
                )
            seen.add(child.name)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise FieldError(
            attribute.name,
            # The value is not echoed: it may be the token itself, put here by mistake.
            "expected the name of an environment variable (letters, digits and '_', "
            "such as RUNTIME_CONTROL_TOKEN), never the token itself",
        )


@attrs.frozen
class MetricsSpec:
    """Observability settings.

    Attributes:
        listen: where to serve ``/metrics``, ``/healthz``, ``/readyz`` and ``/status``
            (``host:port``, or a port on 127.0.0.1); None serves nothing.
        tracing: an OpenTelemetry span per handled message, the asker's or
            sender's span as its parent (needs ``opentelemetry-api``; spans
            go to the tracer provider the application set up).
        control_token_env: the name of an environment variable holding the
            bearer token that the console's controls (``/ui``: restart, stop,
            reset a breaker, pause a resource, resize a pool, resume a run)
            require; None, or the variable unset or empty: the console is
            read-only. The name is configured, never the token itself.
    """

    listen: str | None = None
    tracing: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    control_token_env: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_env_name)
    )


def _positive_seconds(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise FieldError(attribute.name, f"must be above 0 seconds; got {value!r}")


_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def _subject_token(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _SUBJECT_TOKEN.match(value):
        raise FieldError(
            attribute.name, f"letters, digits, '_' or '-' (a NATS subject token); got {value!r}"
        )


@attrs.frozen
class ClusterSpec:
    """Run the topology on several nodes, over NATS JetStream (DESIGN 6.5).

    Attributes:
        nats: the NATS server's URL (JetStream enabled).
        lease: seconds a node's membership and its units' leases live
            without renewal: a node that stops renewing loses its units
            after this long.
        prefix: the first token of every subject and bucket name the
            cluster uses (two clusters on one server differ by it, or by
            their system name).
        credentials_env: the name of an environment variable holding the
            path of a NATS credentials file (never the secret itself).
        token_env: the name of an environment variable holding a NATS token.
        tls_ca_env, tls_cert_env, tls_key_env: names of environment
            variables holding the paths of the CA bundle and of the client
            certificate and key (TLS).
    """

    nats: str
    lease: Seconds = attrs.field(
        default=Seconds(10.0), converter=to_seconds, validator=_positive_seconds
    )
    prefix: str = attrs.field(default="runtime", validator=_subject_token)
    credentials_env: str | None = None
    token_env: str | None = None
    tls_ca_env: str | None = None
    tls_cert_env: str | None = None
    tls_key_env: str | None = None


def _to_cluster(value: ClusterSpec | dict[str, Any] | None) -> ClusterSpec | None:
    return ClusterSpec(**value) if isinstance(value, dict) else value


@attrs.frozen
class ResourceSpec:
    """A resource actor: a backend shared by every agent, behind a limiter.

    In YAML the kind's own settings (``dsn``, ``provider``, ``command``, ...)
    sit beside these fields; in code they go in ``options`` (a dict, or the
    kind's ``Options`` instance).

    Attributes:
        kind: ``postgres``, ``llm``, ``mcp``, or the import path of a
            ``runtime.Resource`` subclass.
        max_concurrency: requests served at once; None: the kind's default
            (``mcp``: 2, ``postgres``: 10, ``llm``: 8).
        rate: at most ``rate.requests`` admissions per ``rate.period``.
        timeout: seconds each attempt may take (None: no limit).
        retry: how transient failures are retried (None: no retry).
        circuit_breaker: after ``failures`` consecutive transient failures,
            callers get ``CircuitOpen`` until one trial after
            ``reset_timeout`` succeeds (None: no breaker). The resource
            actor's own breaker, opened by its crashes, takes the same
            settings.
        mailbox: requests waiting for admission beyond those in the
            resource; see ``MailboxSpec``.
        shutdown_timeout: seconds a stop waits for requests in flight.
        budget: optional spending limit on every request the resource
            serves, whoever asks; see ``BudgetSpec``.
        shared: the limits hold for the sum of every process that runs a
            system of the same name (``max_concurrency``, ``rate``, priority
            and ``Retry-After`` pauses), coordinated through ``shared_via``.
        shared_via: ``postgresql://...`` or ``nats://...``; by default the
            topology's ``store`` when that is PostgreSQL. Only with ``shared``.
        shared_lease: seconds a process's concurrency token and membership
            last without renewal (renewed every third of it while held): a
            process that dies gives its tokens back within this time.
        shared_guard: seconds added to the rate period at the coordination
            engine, against delivery jitter between the admission and the
            backend (None: 2% of the period, at least 100 ms).
        options: the kind's own settings.
    """

    kind: ResourceKind = attrs.field(converter=import_resource)
    max_concurrency: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(at_least(1))
    )
    rate: RateSpec | None = attrs.field(
        default=None,
        converter=_to_rate,
        validator=attrs.validators.optional(attrs.validators.instance_of(RateSpec)),
    )
    timeout: Seconds | None = attrs.field(
        default=Seconds(30.0), converter=attrs.converters.optional(to_seconds)
    )
    retry: RetrySpec | None = attrs.field(
        factory=RetrySpec,
        converter=_to_retry,
        validator=attrs.validators.optional(attrs.validators.instance_of(RetrySpec)),
    )
    circuit_breaker: BreakerSpec | None = attrs.field(
        factory=BreakerSpec,
        converter=_to_breaker,
        validator=attrs.validators.optional(attrs.validators.instance_of(BreakerSpec)),
    )
    mailbox: MailboxSpec = attrs.field(
        default=DEFAULT_MAILBOX,
        converter=_to_mailbox,
        validator=attrs.validators.instance_of(MailboxSpec),
    )
    shutdown_timeout: Seconds = attrs.field(default=Seconds(5.0), converter=to_seconds)
    budget: BudgetSpec | None = attrs.field(
        default=None, converter=_to_budget, validator=_OPTIONAL_BUDGET
    )
    shared: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    shared_via: str | None = attrs.field(default=None)
    shared_lease: Seconds = attrs.field(default=Seconds(10.0), converter=to_seconds)
    shared_guard: Seconds | None = attrs.field(
        default=None, converter=attrs.converters.optional(to_seconds)
    )
    options: Any = attrs.field(factory=dict)

    @shared_via.validator
    def _check_shared_via(self, _attr: object, value: str | None) -> None:
        if value is None:
            return
        if not getattr(self, "shared", False):
            raise FieldError(
                "shared_via", "shared_via is set but shared is not true: add shared: true"
            )
        if not isinstance(value, str):
            raise FieldError("shared_via", f"expected a URL; got {value!r}")
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme in ("sqlite", "memory"):
            raise FieldError(
                "shared_via",
                f"{scheme}:// cannot coordinate a shared limit: it needs an engine every "
                "process reaches, with one clock and atomic updates: use postgresql://... "
                "or nats://...",
            )
        if scheme not in SHARED_SCHEMES:
            raise FieldError(
                "shared_via",
                f"expected a postgresql://... or nats://... URL; got {value.partition('@')[-1]!r}",
            )

    @shared_lease.validator
    def _check_shared_lease(self, _attr: object, value: float) -> None:
        if value < 0.5:
            raise FieldError("shared_lease", f"expected at least 500ms; got {value!r}")

    def __attrs_post_init__(self) -> None:
        options_type = self.kind.Options  # type: ignore[attr-defined]
        if isinstance(self.options, dict):
            object.__setattr__(self, "options", options_type(**self.options))
        elif not isinstance(self.options, options_type):
            raise TypeError(
                f"options must be a dict or {options_type.__qualname__}, got {self.options!r}"
            )

    @property
    def concurrency(self) -> int | None:
        """``max_concurrency``, or the kind's default."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        return self.kind.default_max_concurrency  # type: ignore[attr-defined, no-any-return]


SHARED_SCHEMES = ("postgresql", "postgres", "nats", "tls")
"""The URL schemes ``shared_via`` takes."""


def shared_default(store: str | None) -> str | None:
    """Where a shared resource with no ``shared_via`` coordinates: the store,
    when it is PostgreSQL; else None."""
    if store is not None and store.partition("://")[0].lower() in ("postgresql", "postgres"):
        return store
    return None


def _to_resources(value: Mapping[str, ResourceSpec | dict[str, Any]]) -> dict[str, ResourceSpec]:
    return {
        name: ResourceSpec(**spec) if isinstance(spec, dict) else spec
        for name, spec in value.items()
    }


def _check_resources(_inst: object, _attr: object, value: dict[str, ResourceSpec]) -> None:
    for name, spec in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise FieldError(
                f"resources.{name}",
                f"a name is letters, digits, '_', '-' or '.' (no '/'); got {name!r}",
            )
        if not isinstance(spec, ResourceSpec):
            raise FieldError(f"resources.{name}", f"expected a ResourceSpec; got {spec!r}")
        store = getattr(_inst, "store", None)
        if spec.shared and spec.shared_via is None and shared_default(store) is None:
            raise FieldError(
                f"resources.{name}.shared",
                "shared: true needs shared_via: postgresql://... or nats://... (it "
                "defaults to store: only when the store is PostgreSQL)",
            )


@attrs.frozen
class StepSpec:
    """One step of a workflow template (``workflows:`` in the topology).

    Attributes:
        name: unique in its workflow; how other steps name it.
        agent: the path of the actor (or pool) asked.
        message: ``type`` (an import path ``"package.module:Class"``) and the
            message's fields; strings may hold ``${inputs.NAME}`` and
            ``${steps.STEP.result}`` (see ``runtime.workflow``).
        depends_on: steps that must succeed first.
        priority: the ask's priority (``high``, ``normal``, ``low``); also the
            order in which ready steps start.
        timeout: seconds each attempt may take.
        retry: attempts per agent and the backoff between them (None: one).
        fallback: agents tried in order once ``agent`` is out of attempts.
        validate: the import path ``"package.module:function"`` of a check of
            the result that raises ``runtime.workflow.Invalid`` to refuse it.
    """

    name: str = attrs.field(validator=_name)
    agent: str
    message: dict[str, Any]
    depends_on: list[str] = attrs.field(factory=list)
    priority: str = attrs.field(default="normal", validator=one_of("high", "normal", "low"))
    timeout: Seconds = attrs.field(default=Seconds(30.0), converter=to_seconds)
    retry: RetrySpec | None = attrs.field(
        default=None,
        converter=_to_retry,
        validator=attrs.validators.optional(attrs.validators.instance_of(RetrySpec)),
    )
    fallback: list[str] = attrs.field(factory=list)
    validate: str | None = None


def _to_steps(value: list[StepSpec | dict[str, Any]]) -> list[StepSpec]:
    return [StepSpec(**step) if isinstance(step, dict) else step for step in value]


@attrs.frozen
class WorkflowSpec:
    """A workflow template: the steps of a run, given its ``inputs``.

    Attributes:
        inputs: the names ``${inputs.NAME}`` may use; each run gives them all.
        steps: the steps, in order.
        max_parallel: most steps running at once.
        strategy: ``dag`` (by ``depends_on``), ``sequential`` (in order, one
            at a time) or ``parallel`` (all at once, up to ``max_parallel``).
    """

    steps: list[StepSpec] = attrs.field(converter=_to_steps)
    inputs: list[str] = attrs.field(factory=list)
    max_parallel: int = attrs.field(default=8, validator=at_least(1))
    strategy: str = attrs.field(default="dag", validator=one_of("dag", "sequential", "parallel"))


def _to_workflows(value: Mapping[str, WorkflowSpec | dict[str, Any]]) -> dict[str, WorkflowSpec]:
    return {
        name: WorkflowSpec(**spec) if isinstance(spec, dict) else spec
        for name, spec in value.items()
    }


def _check_workflows(_inst: object, _attr: object, value: dict[str, WorkflowSpec]) -> None:
    for name in value:
        if not isinstance(name, str) or not _NAME.match(name):
            raise FieldError(
                f"workflows.{name}",
                f"a name is letters, digits, '_', '-' or '.' (no '/'); got {name!r}",
            )


def _to_supervisor(value: SupervisorSpec | dict[str, Any]) -> SupervisorSpec:
    return SupervisorSpec(**value) if isinstance(value, dict) else value


def _to_metrics(value: MetricsSpec | dict[str, Any]) -> MetricsSpec:
    return MetricsSpec(**value) if isinstance(value, dict) else value


@attrs.frozen
class Topology:
    """A whole system: its name, root supervisor, store and shared resources.

    Attributes:
        system: the system's name (also names its default SQLite store).
        supervisor: the root of the supervision tree.
        store: checkpoint store URL; None means the embedded default.
        resources: resource actors by name (reached with ``ctx.resource(name)``
            and at the path ``resources/<name>``).
        metrics: the metrics endpoint.
        locks: where ``ctx.lock``/``system.lock`` keep their leases:
            ``memory://``, ``sqlite:///path``, ``postgresql://...`` or
            ``nats://...``; None means the checkpoint store's URL.
        workflows: workflow templates by name (``system.workflow(name, ...)``,
            ``python -m runtime run``).
        cluster: run on several nodes (needs a PostgreSQL store); None: one process.
    """

    system: str = attrs.field(default="runtime", validator=_name)
    supervisor: SupervisorSpec = attrs.field(
        factory=lambda: SupervisorSpec(name="root"),
        converter=_to_supervisor,
        validator=attrs.validators.instance_of(SupervisorSpec),
    )
    store: str | None = None
    resources: dict[str, ResourceSpec] = attrs.field(
        factory=dict, converter=_to_resources, validator=_check_resources
    )
    metrics: MetricsSpec = attrs.field(
        factory=MetricsSpec,
        converter=_to_metrics,
        validator=attrs.validators.instance_of(MetricsSpec),
    )
    locks: str | None = None
    workflows: dict[str, WorkflowSpec] = attrs.field(
        factory=dict, converter=_to_workflows, validator=_check_workflows
    )
    cluster: ClusterSpec | None = attrs.field(
        default=None,
        converter=_to_cluster,
        validator=attrs.validators.optional(attrs.validators.instance_of(ClusterSpec)),
    )


attrs.resolve_types(SupervisorSpec)

_CHILD_FIELDS = tuple(field.name for field in attrs.fields(ChildSpec))
_NAME_FIELD = attrs.fields(ChildSpec).name
