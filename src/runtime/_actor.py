"""Actors as users write them: the ``Actor`` base class and ``@handler``.

An actor's identity is its cell (``_cell.ActorCell``): the path, mailbox,
counters and breaker that outlive incarnations. Each incarnation builds a
fresh ``Actor`` instance; this module only knows how a class declares its
state type and its handlers, and how a message type finds its handler.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from types import UnionType
from typing import Any, ClassVar, Generic, TypeVar, Union

import attrs

from ._context import ActorContext

__all__ = [
    "Actor",
    "Handler",
    "dispatch_table",
    "handler",
    "init_signature",
    "needs_args",
    "resolve_handler",
    "starts_trivially",
    "state_class",
]

S = TypeVar("S")
R = TypeVar("R")
M = TypeVar("M")
Handler = Callable[[Any, Any], Awaitable[Any]]


def handler(fn: Callable[[Any, M], Awaitable[R]]) -> Callable[[Any, M], Awaitable[R]]:
    """Mark ``async def h(self, msg: M) -> R`` as the handler of messages of type ``M``.

    The type comes from the annotation of the message parameter; a union
    (``A | B``) registers the handler for each member.
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@runtime.handler needs an async def, got {fn!r}")
    fn.__runtime_handler__ = True  # type: ignore[attr-defined]
    return fn


def _message_types(cls: type, fn: Handler) -> tuple[type, ...]:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__} must take (self, msg); "
            f"it takes {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__}: cannot resolve its annotations "
            f"({exc}); define message classes at module level"
        ) from None
    annotation = hints.get(params[1].name)
    if annotation is None:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__}: annotate the message parameter "
            "with its type, e.g. `msg: Add`"
        )
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (Union, UnionType)
        else (annotation,)
    )
    for member in members:
        if not isinstance(member, type):
            raise TypeError(f"handler {cls.__qualname__}.{fn.__name__}: {member!r} is not a class")
    return members


class Actor(Generic[S]):
    """Base class of actors. ``S`` is the state class (an attrs class).

    The runtime builds each incarnation: it sets ``self.ctx`` and
    ``self.state`` (``S()``) first, then calls ``__init__`` with the child
    spec's ``args`` as keyword arguments. Handlers run one message at a time
    unless the child spec sets ``concurrency > 1``.
    """

    __runtime_actor__: ClassVar[bool] = True  # how specs recognise an actor class

    state: S
    ctx: ActorContext
    _dispatch: ClassVar[dict[type, Handler]]
    _own: ClassVar[dict[type, Handler]]
    _state: ClassVar[type | None]
    _signature: ClassVar[inspect.Signature]
    _needs_args: ClassVar[bool]
    _starts_trivially: ClassVar[bool]

    def __init__(self) -> None:
        pass

    async def on_start(self) -> None:
        """Called when an incarnation starts, before its first message."""

    async def on_stop(self) -> None:
        """Called on a graceful stop, after the last message; not after a crash."""

    @classmethod
    def _handler_table(cls) -> dict[type, Handler]:
        """Handlers by exact message type, built once per class.

        A subclass's handler for a type replaces its base's; a subclass that
        redefines a handler's method without ``@handler`` removes it.

        Raises:
            TypeError: a malformed handler, or two handlers for one type in
                one class.
        """
        if "_own" not in cls.__dict__:
            by_name: dict[str, tuple[Handler, tuple[type, ...]]] = {}
            for klass in reversed(cls.__mro__):
                mine: dict[type, str] = {}
                for name, fn in vars(klass).items():
                    if not getattr(fn, "__runtime_handler__", False):
                        by_name.pop(name, None)
                        continue
                    types = _message_types(klass, fn)
                    for message_type in types:
                        if message_type in mine:
                            raise TypeError(
                                f"{klass.__qualname__} has two handlers for "
                                f"{message_type.__qualname__}: {mine[message_type]} and {name}"
                            )
                        mine[message_type] = name
                    by_name.pop(name, None)  # re-insert: a later class wins
                    by_name[name] = (fn, types)
            table: dict[type, Handler] = {}
            for fn, types in by_name.values():
                for message_type in types:
                    table[message_type] = fn
            cls._own = table
            cls._dispatch = dict(table)
        return cls._own

    @classmethod
    def _resolve(cls, message_type: type) -> Handler | None:
        """The handler for ``message_type``: the exact type first, then its MRO."""
        table = cls._handler_table()
        for klass in message_type.__mro__:
            fn = table.get(klass)
            if fn is not None:
                cls._dispatch[message_type] = fn
                return fn
        return None

    @classmethod
    def _init_signature(cls) -> inspect.Signature:
        """The signature ``args`` must fit (cached per class)."""
        if "_signature" not in cls.__dict__:
            cls._signature = inspect.signature(cls)
        return cls._signature

    @classmethod
    def _state_class(cls) -> type | None:
        """``S`` of ``Actor[S]`` (cached per class), or None."""
        if "_state" not in cls.__dict__:
            cls._state = cls._find_state_class()
        return cls._state

    @classmethod
    def _find_state_class(cls) -> type | None:
        for klass in cls.__mro__:
            for base in getattr(klass, "__orig_bases__", ()):
                if typing.get_origin(base) is Actor:
                    (arg,) = typing.get_args(base)
                    return arg if isinstance(arg, type) and arg is not type(None) else None
        return None


def dispatch_table(cls: type[Actor[Any]]) -> dict[type, Handler]:
    """The class's handlers by message type, filled in as types are resolved.

    Raises:
        TypeError: a malformed handler, or two handlers for one type in one class.
    """
    cls._handler_table()
    return cls._dispatch


def resolve_handler(cls: type[Actor[Any]], message_type: type) -> Handler | None:
    """The handler of ``message_type`` (its exact type first, then its MRO)."""
    return cls._resolve(message_type)


def state_class(cls: type[Actor[Any]]) -> type | None:
    """``S`` of ``Actor[S]``, or None."""
    return cls._state_class()


def init_signature(cls: type[Actor[Any]]) -> inspect.Signature:
    """The signature the child spec's ``args`` must fit."""
    return cls._init_signature()


_NOT_REQUIRED = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def starts_trivially(cls: type[Actor[Any]]) -> bool:
    """Whether an incarnation's start and graceful stop run no code of the
    class's own: it keeps ``Actor``'s ``on_start``, ``on_stop`` and
    ``__init__``, and its state class (if any) is an attrs class whose
    fields all have defaults (cached per class)."""
    cached: bool | None = cls.__dict__.get("_starts_trivially")
    if cached is None:
        state = cls._state_class()
        cached = (
            cls.on_start is Actor.on_start
            and cls.on_stop is Actor.on_stop
            and cls.__init__ is Actor.__init__
            and (
                state is None
                or (
                    attrs.has(state)
                    and all(f.default is not attrs.NOTHING for f in attrs.fields(state))
                )
            )
        )
        cls._starts_trivially = cached
    return cached


def needs_args(cls: type[Actor[Any]]) -> bool:
    """Whether ``__init__`` has a parameter without a default (cached per class):
    if not, empty ``args`` fit it without binding them."""
    cached: bool | None = cls.__dict__.get("_needs_args")
    if cached is None:
        cached = any(
            parameter.default is inspect.Parameter.empty and parameter.kind not in _NOT_REQUIRED
            for parameter in cls._init_signature().parameters.values()
        )
        cls._needs_args = cached
    return cached
