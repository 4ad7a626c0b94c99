"""Refs to actors on another node: messages and replies over NATS (DESIGN 6.5).

A ``RemoteRef`` implements ``ActorRef`` over a ``Transport`` (the cluster's
NATS connection): ``tell`` is a publish, ``ask`` a request/reply whose
timeout covers the network. A message crosses the wire as JSON: its type's
import path and its fields as cattrs unstructures them; the receiving node
accepts only the exact types the target actor has handlers for, looked up by
that path in the target's handler table (nothing is imported or unpickled on
the strength of the wire). A reply is structured with the return annotation
of the handler that made it. Errors come back as the same
``runtime.errors`` types; a handler's exception as ``ActorFailed`` whose
``__cause__`` is a ``RemoteError`` naming the remote type and message.

The correlation id of the sender's chain and, with tracing, its trace
context travel with the message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import typing
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import trio

from . import errors
from ._actor import Actor, dispatch_table
from ._backends import BackendUnavailable, NoResponders
from ._checkpoint import json_converter
from ._correlation import CURRENT, CorrelationSlot, correlation_id
from ._priority import check_priority
from ._ref import ActorRef, ActorStatistics
from .errors import ActorFailed, ActorSystemError, AskTimeout, UnknownMessage

__all__ = [
    "MOVED",
    "RemoteError",
    "RemoteRef",
    "Request",
    "Transport",
    "decode_request",
    "encode_error",
    "encode_reply",
    "type_path",
]

MOVED = b'{"moved":true}'
"""The answer to a request that reached a node no longer serving its unit
before any handler saw it (the unit handed over or lost meanwhile): the
asker sends it again, as after ``NoResponders``, until its deadline."""

RETRY_INITIAL = 0.02
RETRY_MAX = 0.25
"""The wait between attempts of an ask that met no responder (a unit moving
between nodes) or an unreachable server: doubling from INITIAL to MAX."""


class RemoteError(Exception):
    """The exception a handler on another node raised, by name and message.

    Attributes:
        type_name: its class's import path (``builtins.ValueError``).
        message: ``str()`` of it.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class Transport(Protocol):
    """What a remote ref sends through (the cluster's NATS connection)."""

    tracing: bool

    async def publish(self, subject: str, data: bytes) -> None: ...

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes: ...

    def publish_nowait(self, subject: str, data: bytes) -> bool: ...

    def remote_status(self, path: str) -> str: ...

    def observe_ask(self, seconds: float, outcome: str) -> None: ...


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_loads = json.JSONDecoder().decode
"""The wire's JSON, compact, with no NaN or infinity (one encoder and one
decoder made once)."""


def type_path(cls: type) -> str:
    """``package.module:Qualname``, the name a type crosses the wire by."""
    found = _TYPE_PATHS.get(cls)
    if found is None:
        found = _TYPE_PATHS[cls] = f"{cls.__module__}:{cls.__qualname__}"
    return found


_TYPE_PATHS: dict[type, str] = {}


@functools.cache
def accepted_types(actor: Any) -> dict[str, type]:
    """The message types an actor class handles, by import path (exact types only)."""
    return {type_path(cls): cls for cls in dispatch_table(actor) if isinstance(cls, type)}


@functools.cache
def reply_type(actor: Any, message_type: Any) -> Any:
    """The return annotation of the handler of ``message_type``; Any if none."""
    handler = dispatch_table(actor).get(message_type)
    if handler is None:
        return Any
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # an annotation that does not resolve: the reply stays JSON
        return Any
    found = hints.get("return", Any)
    return Any if found is type(None) else found


@functools.cache
def _unstructure_hook(cls: Any) -> Callable[[Any], Any]:
    """cattrs' unstructure function for ``cls``, looked up once per type."""
    return json_converter().get_unstructure_hook(cls)


@functools.cache
def _structure_hook(cls: Any) -> Callable[[Any, Any], Any]:
    """cattrs' structure function for ``cls``, looked up once per type."""
    return json_converter().get_structure_hook(cls)


def _structure(value: Any, cls: Any) -> Any:
    try:
        hook = _structure_hook(cls)
    except TypeError:  # a type that cannot be a cache key: cattrs looks it up
        return json_converter().structure(value, cls)
    return hook(value, cls)


def _encode_message(msg: object) -> str:
    """``msg``'s fields as JSON, by cattrs."""
    kind: Any = type(msg)
    try:
        return _dumps(_unstructure_hook(kind)(msg))
    except Exception as exc:
        name = type(msg).__qualname__
        raise TypeError(f"{name} cannot cross the network as JSON: {exc}") from exc


def _trace_carrier() -> dict[str, str]:
    from opentelemetry import propagate  # noqa: PLC0415 (optional, with tracing only)

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@functools.lru_cache(maxsize=4096)
def _request_head(path: str, type_name: str, priority: str) -> str:
    """The fields of a request that are the same for every message of one
    type to one actor at one priority, as JSON without its closing brace."""
    return _dumps({"p": path, "t": type_name, "pr": priority})[:-1]


def encode_request(
    path: str, msg: object, priority: str, timeout: float | None, tracing: bool
) -> bytes:
    """A message for the actor at ``path``, as sent on the wire: a JSON
    object with its path (``p``), type (``t``), priority (``pr``), fields
    (``m``), and when there are some the sender's correlation id (``c``),
    trace context (``tc``) and timeout (``d``)."""
    parts = [_request_head(path, type_path(type(msg)), priority)]
    chain = correlation_id()
    if chain is not None:
        parts.append(',"c":' + _dumps(chain))
    if tracing:
        parts.append(',"tc":' + _dumps(_trace_carrier()))
    if timeout is not None:
        parts.append(',"d":' + _dumps(timeout))
    parts.append(',"m":' + _encode_message(msg) + "}")
    return "".join(parts).encode()


@attrs.frozen
class Request:
    """A message received from the wire, checked against its target."""

    path: str
    message: object
    priority: str
    correlation: str | None
    trace: dict[str, str] | None
    timeout: float | None

    def context(self) -> contextlib.AbstractContextManager[None]:
        """The sender's correlation (and trace context) while it is delivered."""
        if self.correlation is None and self.trace is None and CURRENT.get() is None:
            return _NOTHING_TO_SET
        return self._context()

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        token = CURRENT.set(CorrelationSlot(self.correlation) if self.correlation else None)
        detach: Callable[[], None] | None = None
        if self.trace:
            from opentelemetry import context, propagate  # noqa: PLC0415 (optional)

            attached = context.attach(propagate.extract(self.trace))
            detach = functools.partial(context.detach, attached)
        try:
            yield
        finally:
            if detach is not None:
                detach()
            CURRENT.reset(token)


_NOTHING_TO_SET = contextlib.nullcontext()


def decode_request(data: bytes, actor_of: Callable[[str], type[Actor[Any]] | None]) -> Request:
    """The message in ``data``, structured as the type its target handles.

    Raises:
        ActorNotFound: no actor at its path on this node.
        UnknownMessage: its type is not one its target has a handler for.
        ValueError: not a message of this protocol.
    """
    body = _loads(data.decode())
    path = body["p"]
    actor: Any = actor_of(path)
    if actor is None:
        raise errors.ActorNotFound(f"{path!r}: not running on this node")
    name = body["t"]
    cls = accepted_types(actor).get(name)
    if cls is None:
        raise UnknownMessage(f"{path} has no handler for {name} (only its handlers' types)")
    try:
        message: object = _structure(body["m"], cls)
    except Exception as exc:
        raise UnknownMessage(f"{path}: the {name} received does not fit its type: {exc}") from None
    priority = body.get("pr", "normal")
    check_priority(priority)
    timeout = body.get("d")
    return Request(path, message, priority, body.get("c"), body.get("tc"), timeout)


def encode_reply(value: object) -> bytes:
    """A handler's return value, as sent back."""
    head = '{"t":' + _dumps(type_path(type(value)))
    return (head + ',"r":' + _encode_message(value) + "}").encode()


def encode_error(error: BaseException) -> bytes:
    """An ask's failure, as sent back: its ``runtime.errors`` class, and for a
    handler's exception the exception's own type and message."""
    kind = type(error)
    while kind.__name__ not in errors.__all__ or not issubclass(kind, ActorSystemError):
        kind = kind.__mro__[1] if kind is not ActorSystemError else ActorSystemError
        if kind is Exception or kind is BaseException:
            kind = ActorFailed
            break
    body: dict[str, Any] = {"e": kind.__name__, "m": str(error)}
    cause = error.__cause__
    if isinstance(error, ActorFailed) and cause is not None:
        body["x"] = f"{type(cause).__module__}.{type(cause).__qualname__}"
        body["xm"] = str(cause)
    elif not isinstance(error, ActorSystemError):
        body["x"] = f"{type(error).__module__}.{type(error).__qualname__}"
        body["xm"] = str(error)
    return _dumps(body).encode()


def decode_reply(data: bytes, annotation: Any) -> Any:
    """The value of a reply, or raises the error it carries."""
    body = _loads(data.decode())
    if "e" in body:
        raise _error_of(body)
    value = body["r"]
    if annotation is Any:
        return value
    return _structure(value, annotation)


def _error_of(body: dict[str, Any]) -> Exception:
    kind = getattr(errors, body["e"], None)
    if not (isinstance(kind, type) and issubclass(kind, ActorSystemError)):
        kind = ActorFailed
    if kind is errors.TopologyError:
        return errors.TopologyError([body["m"]])
    if kind is errors.ResourceError:
        kind = ActorFailed
    error = kind(body["m"])
    if "x" in body:
        error.__cause__ = RemoteError(body["x"], body.get("xm", ""))
    return error


class RemoteRef(ActorRef[Any]):
    """The ref of an actor in a unit placed on another node.

    Args:
        path: the actor's path.
        subject: the NATS subject its unit's node serves.
        actor: the actor's class (from the topology every node shares).
        transport: the cluster's connection.
    """

    __slots__ = ("_actor", "_path", "_subject", "_transport")

    def __init__(
        self, path: str, subject: str, actor: type[Actor[Any]], transport: Transport
    ) -> None:
        self._path = path
        self._subject = subject
        self._actor: Any = actor
        self._transport = transport

    @property
    def path(self) -> str:
        return self._path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteRef) and other._path == self._path

    def __hash__(self) -> int:
        return hash(("remote", self._path))

    def _encode(self, msg: object, priority: str, timeout: float | None) -> bytes:
        check_priority(priority)
        if type_path(type(msg)) not in accepted_types(self._actor):
            raise UnknownMessage(
                f"{self._path} has no handler for {type(msg).__qualname__} "
                "(across nodes, only the exact types of its handlers)"
            )
        return encode_request(self._path, msg, priority, timeout, self._transport.tracing)

    async def tell(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell``: one publish; the receiving node turns a refusal
        into a dead letter (nothing comes back)."""
        data = self._encode(msg, priority, None)
        await self._transport.publish(self._subject, data)

    def tell_nowait(self, msg: object, *, priority: str = "normal") -> None:
        """``ActorRef.tell_nowait``: queued for the cluster's sender task.

        Raises:
            MailboxFull: the sender's queue is full.
        """
        data = self._encode(msg, priority, None)
        if not self._transport.publish_nowait(self._subject, data):
            raise errors.MailboxFull(f"{self._path}: the queue of remote tells is full")

    async def ask(self, msg: object, *, timeout: float = 30.0, priority: str = "normal") -> Any:
        """``ActorRef.ask`` as request/reply. Attempts that find nobody
        serving the unit (it is moving) or the server unreachable are made
        again until ``timeout``; the timeout covers them all."""
        data = self._encode(msg, priority, timeout)
        start = trio.current_time()
        deadline = start + timeout
        outcome = "error"
        try:
            raw = await self._request(data, deadline, msg)
            outcome = "ok"
            value = decode_reply(raw, reply_type(self._actor, _type_of(msg)))
        except AskTimeout:
            outcome = "timeout"
            raise
        finally:
            self._transport.observe_ask(trio.current_time() - start, outcome)
        return value

    async def _request(self, data: bytes, deadline: float, msg: object) -> bytes:
        delay = RETRY_INITIAL
        while True:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            try:
                reply = await self._transport.request(self._subject, data, remaining)
            except TimeoutError:
                break
            except (NoResponders, BackendUnavailable):
                pass
            else:
                if reply != MOVED:
                    return reply
            await trio.sleep(min(delay, max(0.0, deadline - trio.current_time())))
            delay = min(RETRY_MAX, delay * 2)
        raise AskTimeout(f"{self._path} did not reply to {type(msg).__qualname__} in time")

    def statistics(self) -> ActorStatistics:
        """What this node knows of the remote actor: ``running`` while its
        unit is held by a live node, else ``restarting``; its counters are
        on its own node (``/status`` there)."""
        status = self._transport.remote_status(self._path)
        return ActorStatistics(self._path, status, 0, 0, 0, 0, None, 0)


def _type_of(msg: object) -> Any:
    return type(msg)
