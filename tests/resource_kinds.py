"""A resource kind written as a user would, over a fake backend the tests steer."""

from __future__ import annotations

from typing import Any

import attrs
import trio

import runtime
from runtime.errors import ResourceError


@attrs.define
class Backend:
    """What the Echo resource talks to; tests read and steer it."""

    delay: float = 0.0
    failing: str | None = None  # None, "transient" or "permanent"
    running: int = 0
    peak: int = 0
    served: list[Any] = attrs.Factory(list)
    started_at: list[float] = attrs.Factory(list)  # when each call began
    starts: int = 0
    stops: int = 0
    journal: list[str] = attrs.Factory(list)

    async def serve(self, value: Any) -> Any:
        self.started_at.append(trio.current_time())
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await trio.sleep(self.delay)
            if self.failing == "transient":
                raise ConnectionResetError("backend reset the connection")
            if self.failing == "permanent":
                raise ValueError(f"backend refused {value!r}")
            self.served.append(value)
            return value
        finally:
            self.running -= 1


@attrs.frozen
class EchoOptions:
    backend: Backend = attrs.field(factory=Backend)
    greeting: str = "hello"


@attrs.frozen
class Ping:
    value: Any


@attrs.frozen
class Break:
    reason: str


@attrs.frozen
class Greeting:
    pass


class Echo(runtime.Resource):
    """Serves Ping through its limiter; Break crashes it (the backend is gone)."""

    Options = EchoOptions
    default_max_concurrency = 2

    async def on_start(self) -> None:
        self.backend: Backend = self.options.backend
        self.backend.starts += 1
        self.backend.journal.append(f"start:{self.name}")

    async def on_stop(self) -> None:
        self.backend.stops += 1
        self.backend.journal.append(f"stop:{self.name}")

    @runtime.handler
    async def ping(self, msg: Ping) -> Any:
        return await self.call(self.backend.serve, msg.value)

    @runtime.handler
    async def greeting(self, msg: Greeting) -> str:
        return str(self.options.greeting)

    @runtime.handler
    async def break_(self, msg: Break) -> None:
        self.fail(ResourceError(msg.reason, resource=self.name, transient=True))
        await trio.sleep_forever()

    def backend_statistics(self) -> dict[str, float]:
        return {"running": self.backend.running}
