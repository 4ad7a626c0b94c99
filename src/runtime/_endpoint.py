"""The metrics endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and
``/status`` over HTTP.

A small ASGI application served by hypercorn's trio worker inside the
system's nursery: it starts before the supervision tree and stops after it,
so ``/healthz`` answers 503 while the system starts, stops or has failed.
While it runs, ``/healthz`` answers 200: ``running`` when all is well, a
JSON document naming each problem (an open circuit, a resource that is not
up) and its reason when it is degraded. ``/readyz`` answers 503 until the
system runs with no problem.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._health import Health, health_of
from ._listen import Listen

if TYPE_CHECKING:
    from ._pool import PoolStatistics
    from ._system import ActorSystem, TreeNode
    from .workflow import RunSummary

__all__ = [
    "Routes",
    "answer",
    "health_answer",
    "open_endpoint",
    "ready_answer",
    "serve_endpoint",
    "status_document",
    "workflows_document",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Routes = Callable[[Scope, Receive, Send], Awaitable[bool]]
"""More routes (the console's): answers a request and returns True, or
returns False without answering."""


def _node(node: TreeNode) -> dict[str, Any]:
    stats = node.stats
    return {
        "path": node.path,
        "kind": node.kind,
        "status": stats.status,
        "incarnation": stats.incarnation,
        "restarts": stats.restarts,
        "mailbox_depth": stats.mailbox_depth,
        "mailbox_capacity": stats.mailbox_capacity,
        "breaker": stats.breaker,
        "pending_asks": stats.pending_asks,
        "last_failure": stats.last_failure,
        "children": [_node(child) for child in node.children],
        "pool": None if node.pool is None else _pool(node.pool),
    }


def _pool(stats: PoolStatistics) -> dict[str, Any]:
    """A pool's figures in ``/status`` (its workers are its children)."""
    return {
        "routing": stats.routing,
        "size": stats.size,
        "available": stats.available,
        "draining": stats.draining,
        "routed": stats.routed,
        "refused": stats.refused,
        "handled": stats.handled,
        "failed": stats.failed,
        "restarts": stats.restarts,
    }


def status_document(system: ActorSystem) -> dict[str, Any]:
    """What ``/status`` serves: the system's state and health, its trees
    and resources."""
    resources = system.resource_tree()
    tree = system.tree()  # once, for the health and the document
    return {
        "system": system.name,
        "state": system.state(),
        "health": health_of(system, tree).as_dict(),
        "tree": _node(tree),
        "resources": None if resources is None else _node(resources),
        "limiters": {
            name: {
                "tokens_in_use": stats.limiter.tokens_in_use,
                "max_concurrency": stats.limiter.max_concurrency,
                "waiting": stats.limiter.waiting,
                "breaker": stats.limiter.breaker,
                "paused_for": stats.limiter.paused_for,
                "requests": stats.requests,
                "failures": stats.failures,
                "status": stats.status,
                "up": stats.up,
                "came_up": stats.came_up,
                "last_failure": stats.last_failure,
                "backend_failure": stats.backend_failure,
            }
            for name, stats in system.resource_statistics().items()
        },
        "usage": [
            {
                "resource": usage.resource,
                "agent": usage.agent,
                "requests": usage.requests,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "dollars": usage.dollars,
                "unpriced_requests": usage.unpriced_requests,
            }
            for usage in system.usage_statistics()
        ],
        "budgets": {
            scope: {
                "tokens_spent": stats.tokens_spent,
                "tokens_limit": stats.tokens_limit,
                "dollars_spent": stats.dollars_spent,
                "dollars_limit": stats.dollars_limit,
                "period": stats.period,
                "on_exhausted": stats.on_exhausted,
                "window_start": stats.window_start.isoformat(),
                "resets_at": stats.resets_at.isoformat(),
                "exhausted": stats.exhausted,
                "refusals": stats.refusals,
                "waits": stats.waits,
                "flush_error": stats.flush_error,
            }
            for scope, stats in system.budget_statistics().items()
        },
        "dead_letters": system.dead_letter_count,
        "locks": _locks(system),
        "workflows": workflows_document(system),
        "cluster": _cluster(system),
    }


def _cluster(system: ActorSystem) -> dict[str, Any] | None:
    """This node's view of the cluster; None without ``cluster:``."""
    if system.cluster is None:
        return None
    stats = system.cluster.statistics()
    return {
        "node": stats.node,
        "nodes": list(stats.nodes),
        "placement": [{"unit": p.unit, "node": p.node, "epoch": p.epoch} for p in stats.placement],
        "held": stats.held,
        "failovers": stats.failovers,
        "handovers": stats.handovers,
        "lost": stats.lost,
        "renewal_gap_max": stats.renewal_gap_max,
        "remote_asks": stats.remote_asks,
        "remote_ask_seconds": stats.ask_seconds / stats.ask_count if stats.ask_count else None,
        "durable": attrs.asdict(system.cluster.durable.statistics()),
        "topics": attrs.asdict(system.cluster.topics.statistics()),
    }


def workflows_document(system: ActorSystem) -> dict[str, Any]:
    """``/status``'s workflow runs: those in flight and the last ones, each
    with its steps' statuses; the runs that need attention, by workflow."""
    stats = system.workflow_statistics()

    def run(summary: RunSummary) -> dict[str, Any]:
        return {
            "workflow": summary.workflow,
            "run_id": summary.run_id,
            "status": summary.status,
            "steps": dict(summary.steps),
        }

    return {
        "running": [run(summary) for summary in stats.running],
        "recent": [run(summary) for summary in stats.recent],
        "needing_attention": stats.needing_attention,
    }


def _locks(system: ActorSystem) -> dict[str, Any]:
    stats = system.lock_statistics()
    document = attrs.asdict(stats)
    document["held"] = [attrs.asdict(lock) for lock in stats.held]
    return document


def health_answer(health: Health, *, json_asked: bool) -> tuple[int, str | None]:
    """``/healthz``: the status code, and the one word to answer in plain
    text (None: answer the JSON document).

    200 while the system runs, 503 while it starts, stops or has failed.
    The word is the state (``running``, ``stopping``, ...); a degraded system
    (running, with problems) answers the document, which names them.
    """
    code = 200 if health.live else 503
    if json_asked or (health.live and health.problems):
        return code, None
    return code, health.state


def ready_answer(health: Health, *, json_asked: bool) -> tuple[int, str | None]:
    """``/readyz``: 200 ``ready`` once the system runs with no problem;
    else 503 and the JSON document, which says why."""
    if health.ready:
        return 200, None if json_asked else "ready"
    return 503, None


def _health_body(health: Health, system: str) -> bytes:
    document = {"system": system, **health.as_dict()}
    return json.dumps(document, indent=2).encode() + b"\n"


def _asks_json(scope: Scope) -> bool:
    """Whether the request's ``Accept`` header names ``application/json``."""
    return any(
        name == b"accept" and b"application/json" in value.lower()
        for name, value in scope.get("headers", ())
    )


class EndpointApp:
    """The ASGI application: four read-only routes, and ``routes``' (the console's)."""

    def __init__(
        self, system: ActorSystem, registry: CollectorRegistry, routes: Routes | None = None
    ) -> None:
        self.system = system
        self.registry = registry
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if self.routes is not None and await self.routes(scope, receive, send):
            return
        if scope["method"] not in ("GET", "HEAD"):
            await answer(send, 405, b"method not allowed\n", "text/plain; charset=utf-8")
            return
        path = scope["path"]
        if path == "/metrics":
            await answer(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            await self._health(path, _asks_json(scope), send)
        elif path == "/status":
            body = json.dumps(status_document(self.system), indent=2).encode() + b"\n"
            await answer(send, 200, body, "application/json")
        else:
            hint = b"not found: try /metrics, /healthz, /readyz, /status or /ui\n"
            await answer(send, 404, hint, "text/plain")

    async def _health(self, path: str, json_asked: bool, send: Send) -> None:
        health = health_of(self.system)
        if path == "/healthz":
            status, word = health_answer(health, json_asked=json_asked)
        else:
            status, word = ready_answer(health, json_asked=json_asked)
        if word is not None:
            await answer(send, status, f"{word}\n".encode(), "text/plain; charset=utf-8")
        else:
            body = _health_body(health, self.system.name)
            await answer(send, status, body, "application/json")


async def answer(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send one whole response: ``body`` with its type, length and ``headers``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_endpoint(
    system: ActorSystem,
    registry: CollectorRegistry,
    listen: Listen,
    stop: trio.Event,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    *,
    routes: Routes | None = None,
) -> None:
    """Serve until ``stop`` is set; ``task_status`` gets the base URL once bound.

    Raises:
        OSError: the address cannot be bound (in use, not local).
    """
    config = Config()
    config.bind = [listen.bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("runtime.endpoint")
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 5.0

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            _serve, EndpointApp(system, registry, routes), config, stop
        )
        task_status.started(binds[0])


def _os_error(error: BaseException) -> OSError | None:
    """The OSError in ``error`` (hypercorn's nurseries wrap it in groups)."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


@contextlib.asynccontextmanager
async def open_endpoint(
    system: ActorSystem,
    registry: CollectorRegistry,
    listen: Listen,
    routes: Routes | None = None,
) -> AsyncIterator[str]:
    """Serve the endpoint (and ``routes``) for the duration of the block;
    yields its base URL."""
    stop = trio.Event()
    bound = False
    try:
        async with trio.open_nursery() as nursery:
            serving = functools.partial(serve_endpoint, routes=routes)
            url: str = await nursery.start(serving, system, registry, listen, stop)
            bound = True
            try:
                yield url
            finally:
                stop.set()
    except (OSError, BaseExceptionGroup) as exc:
        error = None if bound else _os_error(exc)
        if error is None:
            raise
        raise _bind_error(listen, error) from None


def _bind_error(listen: Listen, error: OSError) -> OSError:
    """One line naming the address, the reason and what to do; ``errno`` kept."""
    if error.errno == errno.EADDRINUSE:
        hint = (
            "free the port or choose another with metrics.listen or --metrics-listen "
            "(port 0 picks a free one)"
        )
    else:
        hint = "choose another address with metrics.listen or --metrics-listen"
    reason = error.strerror or str(error)
    failure = OSError(f"metrics endpoint: cannot listen on {listen.bind}: {reason}; {hint}")
    failure.errno = error.errno  # set after: str() stays the message, without "[Errno n]"
    return failure


async def _serve(
    app: EndpointApp,
    config: Config,
    stop: trio.Event,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)  # type: ignore[arg-type]
