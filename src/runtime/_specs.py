"""Specs: the attrs classes a topology is made of, the same in code and YAML.

Enumerated fields take their YAML strings (``strategy="one_for_all"``),
durations take seconds or strings such as ``"500ms"``, ``"5s"``, ``"2m"``,
and ``actor`` takes a class or an import path ``"package.module:Class"``.
Each converter below is also the cattrs structure hook of its field's type, so
a bad value is reported against the field it came from.
"""

from __future__ import annotations

import importlib
import math
import re
from typing import Any, Literal, NewType, Union

import attrs

from ._actor import Actor

__all__ = [
    "BackoffSpec",
    "BreakerSpec",
    "ChildSpec",
    "MailboxSpec",
    "MetricsSpec",
    "SupervisorSpec",
    "Topology",
]

Seconds = NewType("Seconds", float)
"""A duration in seconds; structured from a number or ``"500ms"``/``"5s"``/``"2m"``/``"1h"``."""

CheckpointPolicy = Union[str, float]  # noqa: UP007
"""``"off"``, ``"message"``, ``"manual"`` or a period in seconds."""

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
Overflow = Literal["block", "reject", "drop_oldest", "drop_newest"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
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


def import_actor(value: object) -> type[Actor[Any]]:
    """Resolve an actor class, or an import path ``"package.module:Class"`` to one.

    Raises:
        ValueError: the path is malformed, cannot be imported, or does not
            name a subclass of ``runtime.Actor``.
    """
    if isinstance(value, str):
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
        value = obj
    if not (isinstance(value, type) and issubclass(value, Actor)):
        name = (
            f"{value.__module__}:{value.__qualname__}" if isinstance(value, type) else repr(value)
        )
        raise ValueError(f"{name} is not a subclass of runtime.Actor")
    return value


class FieldError(ValueError):
    """A validator's complaint about one field (``field`` may be a dotted/indexed path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _one_of(*choices: str) -> Any:
    def check(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise FieldError(attr.name, f"expected one of {', '.join(choices)}; got {value!r}")

    return check


def _at_least(minimum: int) -> Any:
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
    """

    capacity: int = attrs.field(default=100, validator=_at_least(1))
    overflow: Overflow = attrs.field(
        default="block",
        validator=_one_of("block", "reject", "drop_oldest", "drop_newest"),
    )


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

    failures: int = attrs.field(default=5, validator=_at_least(1))
    reset_timeout: Seconds = attrs.field(default=Seconds(60.0), converter=to_seconds)


# Code may give a nested spec as a dict of its fields, as YAML does.


def _to_mailbox(value: MailboxSpec | dict[str, Any]) -> MailboxSpec:
    return MailboxSpec(**value) if isinstance(value, dict) else value


def _to_breaker(value: BreakerSpec | dict[str, Any] | None) -> BreakerSpec | None:
    return BreakerSpec(**value) if isinstance(value, dict) else value


def _to_backoff(value: BackoffSpec | dict[str, Any] | None) -> BackoffSpec | None:
    return BackoffSpec(**value) if isinstance(value, dict) else value


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
    """

    name: str = attrs.field(validator=_name)
    actor: type[Actor[Any]] = attrs.field(converter=import_actor)
    restart: RestartType = attrs.field(
        default="permanent",
        validator=_one_of("permanent", "transient", "temporary"),
    )
    mailbox: MailboxSpec = attrs.field(
        factory=MailboxSpec,
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
    concurrency: int = attrs.field(default=1, validator=_at_least(1))
    args: dict[str, Any] = attrs.field(factory=dict)


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
    """

    name: str = attrs.field(validator=_name)
    strategy: Strategy = attrs.field(
        default="one_for_one",
        validator=_one_of("one_for_one", "one_for_all", "rest_for_one"),
    )
    max_restarts: int = attrs.field(default=3, validator=_at_least(0))
    within: Seconds = attrs.field(default=Seconds(5.0), converter=to_seconds)
    backoff: BackoffSpec | None = attrs.field(
        default=None,
        converter=_to_backoff,
        validator=attrs.validators.optional(attrs.validators.instance_of(BackoffSpec)),
    )
    children: list[Union[ChildSpec, SupervisorSpec]] = attrs.field(factory=list)  # noqa: UP007

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


@attrs.frozen
class MetricsSpec:
    """Where to serve metrics (``host:port``); None serves nothing."""

    listen: str | None = None


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
        resources: resource actors by name.
        metrics: the metrics endpoint.
    """

    system: str = attrs.field(default="runtime", validator=_name)
    supervisor: SupervisorSpec = attrs.field(
        factory=lambda: SupervisorSpec(name="root"),
        converter=_to_supervisor,
        validator=attrs.validators.instance_of(SupervisorSpec),
    )
    store: str | None = None
    resources: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    metrics: MetricsSpec = attrs.field(
        factory=MetricsSpec,
        converter=_to_metrics,
        validator=attrs.validators.instance_of(MetricsSpec),
    )


attrs.resolve_types(SupervisorSpec)
