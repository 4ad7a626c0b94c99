"""Importable actor classes for the topology and CLI tests.

Topology files name actors by import path, so the classes they name must live
in a module; these are the smallest ones each test needs.
"""

from __future__ import annotations

import attrs

import runtime


@attrs.frozen
class Ping:
    """A message carrying a word."""

    word: str


class Echo(runtime.Actor[None]):
    """Replies with the word it was sent."""

    @runtime.handler
    async def ping(self, msg: Ping) -> str:
        return msg.word


class Greeter(runtime.Actor[None]):
    """Takes keyword arguments, so a topology can give it ``args``."""

    def __init__(self, *, greeting: str, times: int = 1) -> None:
        self.greeting = greeting
        self.times = times

    @runtime.handler
    async def ping(self, msg: Ping) -> str:
        return " ".join([f"{self.greeting}, {msg.word}"] * self.times)


class Unannotated(runtime.Actor[None]):
    """A handler whose message parameter has no annotation: it cannot be dispatched."""

    @runtime.handler
    async def ping(self, msg) -> None:  # type: ignore[no-untyped-def]
        pass


class NotAnActor:
    """A plain class: an actor path naming it must be refused."""


class CrashOnStart(runtime.Actor[None]):
    """Fails every start: its supervisor soon gives up."""

    async def on_start(self) -> None:
        raise RuntimeError("cannot start")

    @runtime.handler
    async def ping(self, msg: Ping) -> None:
        pass
