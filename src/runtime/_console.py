"""The live console: ``/ui`` on the metrics endpoint (DESIGN 6.7).

One page (its HTML, CSS and JS ship in ``runtime/_ui``) that shows the
running system as ``/status`` describes it, pushed by server-sent events
from ``/ui/events``. One snapshot is taken per interval, and only while
someone watches; it is encoded once and the same bytes go to every viewer,
so viewers cost the system one snapshot per interval however many they
are. A viewer that reads slowly skips snapshots, it never queues them.

The controls (``/ui/control/<action>``, POST) need the bearer token read
from the environment variable that ``metrics.control_token_env`` names:
without a token the console is read-only and they answer 403, a wrong or
missing token 401. Every control, done or refused, is logged with the
client's address and what it asked; the token never is.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from ._endpoint import Receive, Scope, Send, answer, status_document
from ._logging import get_logger
from ._topology import iter_children
from .errors import ActorNotFound, ActorStopped

if TYPE_CHECKING:
    from ._system import ActorSystem

__all__ = ["CONSOLE_INTERVAL", "Console", "ControlRefused", "console_document", "open_console"]

logger = get_logger()

CONSOLE_INTERVAL = 1.0
"""Seconds between two snapshots pushed to the console's viewers."""

HISTORY_SAMPLES = 120
"""Snapshots whose counters are kept for the sparklines (two minutes)."""

DEAD_LETTERS_SHOWN = 50
_TEXT_SHOWN = 300  # characters of a dead letter's message shown
_BODY_LIMIT = 16 * 1024

_ASSETS = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/": ("index.html", "text/html; charset=utf-8"),
    "/ui/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/ui/console.css": ("console.css", "text/css; charset=utf-8"),
}

# The page runs only its own script and style, talks only to its origin and
# cannot be framed: an actor's text that slipped past the escaping could
# still not run.
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class ControlRefused(Exception):
    """A control request refused before anything was done: its HTTP status
    and the reason (logged, and answered to the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _counters(system: ActorSystem) -> dict[str, tuple[int, int]]:
    """Each actor's and pool's messages handled and restarts, by path."""
    counters = {cell.path: (cell.handled, cell.record.restarts) for cell in system.cells()}
    for path, pool in system.pool_statistics().items():
        counters[path] = (pool.handled, pool.restarts)
    return counters


def _tags(system: ActorSystem) -> dict[str, list[str]]:
    """The tags of each tagged actor and pool, by path."""
    tags = {
        path: list(spec.tags)
        for path, spec in iter_children(system.topology.supervisor)
        if spec.tags
    }
    for cell in system.cells():
        if cell.spec.tags:
            tags[cell.path] = list(cell.spec.tags)
    return tags


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _TEXT_SHOWN else f"{text[:_TEXT_SHOWN]}..."


def console_document(
    system: ActorSystem, counters: dict[str, tuple[int, int]], *, controls: bool
) -> dict[str, Any]:
    """What each snapshot pushes: ``/status``'s document, and what only the
    console shows (each node's counters and tags, the last dead letters)."""
    letters = list(system.dead_letters)[-DEAD_LETTERS_SHOWN:]
    return {
        "time": time.time(),
        "controls": controls,
        "status": status_document(system),
        "counters": counters,
        "tags": _tags(system),
        "dead_letters": [
            {
                "path": letter.path,
                "type": type(letter.message).__qualname__,
                "reason": letter.reason,
                "message": _shown(letter.message),
            }
            for letter in reversed(letters)
        ],
    }


def _asset(name: str) -> bytes:
    return resources.files("runtime").joinpath("_ui", name).read_bytes()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class Console:
    """The console's routes, and the snapshot its viewers share.

    Call it as the metrics endpoint's extra routes: it answers the requests
    under ``/ui`` (True) and leaves the others (False).
    """

    def __init__(
        self,
        system: ActorSystem,
        *,
        token: str | None,
        interval: float = CONSOLE_INTERVAL,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self.system = system
        self._token = token.encode() if token else None
        self.interval = interval
        self.nursery = nursery  # runs resumed workflow runs
        self.viewers = 0
        self.snapshots = 0  # taken since the start
        self.history: deque[tuple[float, dict[str, tuple[int, int]]]] = deque(
            maxlen=HISTORY_SAMPLES
        )
        self.latest: bytes | None = None
        self.taken_at = -math.inf
        self.changed = trio.Event()
        self.closed = False
        self._assets: dict[str, bytes] = {}

    @property
    def controls(self) -> bool:
        """Whether a token is configured (else the console is read-only)."""
        return self._token is not None

    # -- the shared snapshot -------------------------------------------------------

    def sample(self) -> dict[str, tuple[int, int]]:
        """Keep the counters of now in the history; returns them."""
        counters = _counters(self.system)
        self.history.append((time.time(), counters))
        return counters

    def publish(self) -> bytes:
        """Take a snapshot now, as every viewer will get it; wake the viewers."""
        document = console_document(self.system, self.sample(), controls=self.controls)
        self.latest = _event("snapshot", document)
        self.taken_at = trio.current_time()
        self.snapshots += 1
        changed, self.changed = self.changed, trio.Event()
        changed.set()
        return self.latest

    def current(self) -> bytes:
        """The latest snapshot, taken now if none was this interval."""
        if self.latest is None or trio.current_time() - self.taken_at >= self.interval:
            return self.publish()
        return self.latest

    async def run(self) -> None:
        """Every interval: a snapshot while anyone watches, else the counters
        only (the sparklines' history). Runs until cancelled."""
        while True:
            if self.viewers:
                self.publish()
            else:
                self.sample()
            await trio.sleep(self.interval)

    def close(self) -> None:
        """End every viewer's stream (the endpoint stops)."""
        self.closed = True
        self.changed.set()

    def history_event(self) -> bytes:
        """The counters kept so far, for a new viewer's sparklines: times,
        and for each node whose counters changed, its handled and restarts."""
        samples = list(self.history)
        paths = samples[-1][1].keys() if samples else ()
        series: dict[str, list[list[int]]] = {}
        for path in paths:
            handled = [counters.get(path, (0, 0))[0] for _, counters in samples]
            restarts = [counters.get(path, (0, 0))[1] for _, counters in samples]
            if handled[0] != handled[-1] or restarts[0] != restarts[-1]:
                series[path] = [handled, restarts]
        return _event("history", {"times": [at for at, _ in samples], "series": series})

    # -- the routes ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        path: str = scope["path"]
        if path != "/ui" and not path.startswith("/ui/"):
            return False
        if path.startswith("/ui/control/"):
            await self._control(scope, receive, send, path.removeprefix("/ui/control/"))
        elif scope["method"] not in ("GET", "HEAD"):
            await answer(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
        elif path == "/ui/events":
            await self._events(receive, send)
        elif path in _ASSETS:
            name, content_type = _ASSETS[path]
            body = self._assets.get(name)
            if body is None:
                body = self._assets[name] = _asset(name)
            await answer(send, 200, body, content_type, _PAGE_HEADERS)
        else:
            await answer(send, 404, b"not found\n", "text/plain; charset=utf-8")
        return True

    async def _events(self, receive: Receive, send: Send) -> None:
        """Stream the snapshots until the viewer leaves or the endpoint stops."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        self.viewers += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                first = self.history_event() + self.current()
                await send({"type": "http.response.body", "body": first, "more_body": True})
                while not self.closed:
                    changed = self.changed
                    await changed.wait()
                    if self.closed or self.latest is None:
                        break
                    body = self.latest
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                nursery.cancel_scope.cancel()
            if self.closed:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.viewers -= 1

    # -- the controls ------------------------------------------------------------------

    def check(self, scope: Scope) -> None:
        """Refuse a control request that is not a same-origin POST with the token.

        Raises:
            ControlRefused: 405 not a POST; 400 anything in the query string
                (a token there would be logged by proxies); 403 no token
                configured, or a cross-origin request; 401 no or a wrong
                bearer token; 415 not a JSON body.
        """
        if scope["method"] != "POST":
            raise ControlRefused(405, "controls are POST requests")
        if scope.get("query_string"):
            raise ControlRefused(
                400, "a query string is refused: send the token in the Authorization header"
            )
        if self._token is None:
            raise ControlRefused(403, "the console is read-only: no control token is configured")
        if _cross_origin(scope):
            raise ControlRefused(403, "cross-origin control request refused")
        given = _header(scope, b"authorization") or ""
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._token
        ):
            raise ControlRefused(401, "a valid bearer token is required")
        content_type = _header(scope, b"content-type") or ""
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ControlRefused(415, "expected a JSON body (Content-Type: application/json)")

    async def _control(self, scope: Scope, receive: Receive, send: Send, action: str) -> None:
        client = _client(scope)
        try:
            self.check(scope)
            handler = _action(action)
            fields = await _json_body(receive)
        except ControlRefused as refused:
            logger.warning(
                "console_control_refused",
                client=client,
                action=action,
                status=refused.status,
                reason=refused.reason,
            )
            headers = [(b"www-authenticate", b"Bearer")] if refused.status == 401 else []
            await _answer_json(send, refused.status, {"error": refused.reason}, headers)
            return
        try:
            status, done = await handler(self, fields)
        except ControlRefused as refused:
            status, done = refused.status, refused.reason
        except ActorNotFound as exc:
            status, done = 404, str(exc)
        except (ActorStopped, KeyError, ValueError, TypeError) as exc:
            status, done = 409, str(exc.args[0] if isinstance(exc, KeyError) else exc)
        logger.info(
            "console_control",
            client=client,
            action=action,
            target={key: fields[key] for key in sorted(fields)},
            status=status,
            outcome=done,
        )
        body = {"ok": status < 300, "message": done} if status < 300 else {"error": done}
        await _answer_json(send, status, body)


# -- the actions: each takes the request's fields, returns (status, what it did) --------


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise ControlRefused(400, f"{name}: expected a non-empty string")
    return value


def _number(fields: dict[str, Any], name: str, kind: type) -> Any:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ControlRefused(
            400, f"{name}: expected a {'number' if kind is float else 'whole number'}"
        )
    return value


async def _restart(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    path = _text(fields, "path")
    await console.system.restart(path)
    ref = console.system.local_ref(path)
    if ref is None:  # a supervisor: its subtree restarted
        return 200, f"restarted {path}"
    return 200, f"restarted {path}: incarnation {ref.statistics().incarnation}"


async def _stop(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    path = _text(fields, "path")
    await console.system.stop(path)
    return 200, f"stopped {path}"


async def _reset_breaker(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    path = _text(fields, "path")
    await console.system.reset_breaker(path)
    return 200, f"reset the breaker of {path}"


async def _pause(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    name = _text(fields, "resource")
    seconds = float(_number(fields, "seconds", float))
    console.system.pause_resource(name, seconds)
    return 200, f"paused resource {name} for {seconds:g}s"


async def _resume(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    name = _text(fields, "resource")
    console.system.resume_resource(name)
    return 200, f"resumed resource {name}"


async def _resize(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    path = _text(fields, "path")
    size = _number(fields, "size", int)
    await console.system.resize(path, size)
    return 200, f"resized pool {path} to {size}"


async def _resume_run(console: Console, fields: dict[str, Any]) -> tuple[int, str]:
    """Start the run again in the background: a run may take long."""
    workflow, run_id = _text(fields, "workflow"), _text(fields, "run_id")
    system = console.system
    if (workflow, run_id) not in system.workflow_runs.definitions:
        raise ControlRefused(404, f"workflow {workflow!r} run {run_id!r}: not run by this system")
    if (workflow, run_id) in system.workflow_runs.running:
        raise ControlRefused(409, f"workflow {workflow!r} run {run_id!r} is running already")
    if console.nursery is None:
        raise ControlRefused(503, "the console is not running")
    console.nursery.start_soon(_run_again, system, workflow, run_id)
    return 202, f"resuming workflow {workflow} run {run_id}"


async def _run_again(system: ActorSystem, workflow: str, run_id: str) -> None:
    try:
        result = await system.resume_workflow(workflow, run_id)
    except Exception as exc:
        logger.warning("console_resume_failed", workflow=workflow, run_id=run_id, error=repr(exc))
        return
    logger.info("console_resumed", workflow=workflow, run_id=run_id, status=result.status)


_Action = Callable[[Console, dict[str, Any]], Awaitable[tuple[int, str]]]


def _action(name: str) -> _Action:
    action = _ACTIONS.get(name)
    if action is None:
        raise ControlRefused(404, f"no control named {name!r}")
    return action


_ACTIONS: dict[str, _Action] = {
    "restart": _restart,
    "stop": _stop,
    "reset_breaker": _reset_breaker,
    "pause": _pause,
    "resume": _resume,
    "resize": _resize,
    "resume_run": _resume_run,
}


# -- HTTP helpers ------------------------------------------------------------------------


def _event(kind: str, document: dict[str, Any]) -> bytes:
    """One server-sent event: JSON on one line (it escapes every newline)."""
    data = json.dumps(document, separators=(",", ":"), default=str)
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _cross_origin(scope: Scope) -> bool:
    """Whether a browser says the request comes from another site's page."""
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = _header(scope, b"origin")
    if origin is None:
        return False
    host = _header(scope, b"host")
    return origin == "null" or host is None or urlsplit(origin).netloc != host


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        continue
    scope.cancel()


async def _json_body(receive: Receive) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ControlRefused(400, "the client left")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _BODY_LIMIT:
            raise ControlRefused(413, "the body is too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        fields = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raise ControlRefused(400, "the body is not JSON") from None
    if not isinstance(fields, dict):
        raise ControlRefused(400, "expected a JSON object")
    return fields


async def _answer_json(
    send: Send,
    status: int,
    document: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(document).encode() + b"\n"
    await answer(
        send, status, body, "application/json", [(b"cache-control", b"no-store"), *(headers or [])]
    )


@contextlib.asynccontextmanager
async def open_console(
    system: ActorSystem, *, interval: float = CONSOLE_INTERVAL
) -> AsyncIterator[Console]:
    """The console of ``system`` for the block: its snapshots are taken in
    the background; leaving the block ends the viewers' streams."""
    name = system.topology.metrics.control_token_env
    token = os.environ.get(name) if name else None
    if name and not token:
        logger.warning("console_read_only", reason=f"environment variable {name} is not set")
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        console = Console(system, token=token, interval=interval, nursery=nursery)
        nursery.start_soon(console.run)
        try:
            yield console
        except trio.Cancelled:
            raise
        except BaseException as exc:
            # Raised below as itself, not wrapped in the nursery's group
            # (a bind error of the endpoint inside, the caller's own error).
            body_error = exc
        finally:
            console.close()
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
