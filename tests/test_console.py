"""The live console (``/ui``): its page and assets, the snapshots pushed to
its viewers (one per interval, shared), and its controls: refused without
a configured token (403), with a missing or wrong one (401), with a token
in the query string and from another origin; done with it, and logged with
the client's address, never the token.

HTTP over real loopback sockets under ``loopback_clock``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from runtime import (
    ChildSpec,
    MetricsSpec,
    ResourceSpec,
    SupervisorSpec,
    Topology,
    open_system,
)
from runtime._console import open_console
from runtime._endpoint import open_endpoint
from runtime._listen import parse_listen
from runtime.errors import TopologyError
from runtime.workflow import Step, Workflow
from tests.actorkit import Add, Counter, Crash
from tests.resource_kinds import Backend, Echo

TOKEN_ENV = "RUNTIME_TEST_CONSOLE_TOKEN"
TOKEN = "s3cret-console-token"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def _topology(*, token_env: str | None = TOKEN_ENV, listen: str | None = "127.0.0.1:0") -> Topology:
    return Topology(
        system="console",
        metrics=MetricsSpec(listen=listen, control_token_env=token_env),
        resources={
            "echo": ResourceSpec(
                kind=Echo,
                options={"backend": Backend()},
                retry=None,
                circuit_breaker={"failures": 2, "reset_timeout": 60},
            )
        },
        supervisor=SupervisorSpec(name="root", children=console_children(pool_size=2)),
    )


def console_children(pool_size: int) -> list[ChildSpec | SupervisorSpec]:
    """A tagged actor, one whose circuit opens at its first crash, a pool
    (the browser tests' tree too)."""
    return [
        ChildSpec(name="a", actor=Counter, tags=("math",)),
        ChildSpec(
            name="fragile", actor=Counter, circuit_breaker={"failures": 1, "reset_timeout": 600}
        ),
        ChildSpec(name="workers", actor=Counter, pool={"size": pool_size}),
    ]


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


async def _post(
    url: str, action: str, fields: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{url}/ui/control/{action}",
            content=json.dumps(fields),
            headers=_auth() if headers is None else headers,
            timeout=10,
        )


async def _events(url: str, count: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The first ``count`` server-sent events of ``/ui/events``."""
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", f"{url}/ui/events", timeout=10) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert kind is not None
                yield kind, json.loads(line.removeprefix("data: "))
                count -= 1
                if not count:
                    return


async def _snapshots(url: str, count: int) -> list[dict[str, Any]]:
    return [doc async for kind, doc in _events(url, count + 1) if kind == "snapshot"]


# -- the page ----------------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    loopback_clock: trio.abc.Clock,
) -> None:
    """``/ui`` serves the page, its script and its style from the package,
    with a content security policy that runs only the page's own script."""
    with trio.fail_after(20):
        async with (
            open_system(_topology(), store="memory://") as system,
            httpx.AsyncClient() as client,
        ):
            url = system.endpoint_url
            page = await client.get(f"{url}/ui")
            script = await client.get(f"{url}/ui/console.js")
            style = await client.get(f"{url}/ui/console.css")
            missing = await client.get(f"{url}/ui/nothing")
            other = await client.get(f"{url}/elsewhere")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/ui/console.js" defer></script>' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == 200 and "EventSource" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404
    assert other.status_code == 404 and b"/ui" in other.content


async def test_viewers_get_the_status_snapshot_and_see_a_crash_as_a_restart(
    loopback_clock: trio.abc.Clock,
) -> None:
    """A viewer gets the history, then snapshots: ``/status``'s document with
    each node's counters and tags; an actor's crash shows in the next one as
    a restart with its reason."""
    with trio.fail_after(30):
        async with open_system(_topology(), store="memory://") as system:
            url = system.endpoint_url
            ref = system.ref("root/a")
            for n in range(5):
                await ref.ask(Add(n))
            events = [event async for event in _events(url, 2)]
            assert [kind for kind, _ in events] == ["history", "snapshot"]
            first = events[1][1]
            await ref.tell(Crash("<script>alert(1)</script>"))
            await system.wait_until_idle()
            later = (await _snapshots(url, 2))[-1]  # the first may predate the crash
    assert first["controls"] is True
    status = first["status"]
    assert status["system"] == "console"
    assert [node["path"] for node in status["tree"]["children"]] == [
        "root/a",
        "root/fragile",
        "root/workers",
    ]
    assert first["counters"]["root/a"] == [5, 0]
    assert first["tags"]["root/a"] == ["math"]
    assert "root/workers" in first["counters"]
    node = next(n for n in later["status"]["tree"]["children"] if n["path"] == "root/a")
    assert node["restarts"] == 1
    assert node["last_failure"] == "RuntimeError('<script>alert(1)</script>')"
    assert later["counters"]["root/a"][1] == 1


async def test_one_snapshot_per_interval_whatever_the_number_of_viewers(
    loopback_clock: trio.abc.Clock,
) -> None:
    """Three viewers watching for ten intervals cost about ten snapshots,
    not thirty: each is taken once and its bytes go to every viewer."""
    with trio.fail_after(30):
        async with (
            open_system(_topology(listen=None), store="memory://") as system,
            open_console(system, interval=1.0) as console,
            open_endpoint(system, CollectorRegistry(), parse_listen("127.0.0.1:0"), console) as url,
        ):
            got: list[list[float]] = [[], [], []]

            async def watch(index: int) -> None:
                async for kind, doc in _events(url, 12):
                    if kind == "snapshot":
                        got[index].append(doc["time"])

            before = console.snapshots
            async with trio.open_nursery() as nursery:
                for index in range(3):
                    nursery.start_soon(watch, index)
            taken = console.snapshots - before
            # Each stream ends once its viewer has left (the server notices a
            # closed socket, no event to wait for).
            while console.viewers:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert all(len(times) == 11 for times in got)
    assert got[0] == got[1] == got[2]  # the same snapshots, shared
    assert taken <= 13


async def test_history_is_kept_without_viewers_and_sent_on_connect(
    loopback_clock: trio.abc.Clock,
) -> None:
    """With nobody watching, only the counters are sampled; a new viewer
    gets them at once for its sparklines."""
    with trio.fail_after(30):
        async with open_system(_topology(), store="memory://") as system:
            ref = system.ref("root/a")
            for second in range(4):
                await ref.ask(Add(second))
                await trio.sleep(1.0)
            kind, history = await anext(aiter(_events(system.endpoint_url, 1)))
    assert kind == "history"
    handled, restarts = history["series"]["root/a"]
    assert handled[-1] == 4 and handled[0] < 4
    assert set(restarts) == {0}
    assert len(history["times"]) == len(handled) >= 4
    assert "root/fragile" not in history["series"]  # nothing changed: left out


# -- the controls --------------------------------------------------------------------


async def test_controls_are_refused_without_a_configured_token(
    loopback_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``control_token_env``, or its variable unset: read-only, 403, even
    with a token; the snapshots say so."""
    monkeypatch.delenv(TOKEN_ENV)
    with trio.fail_after(20):
        for topology in (_topology(token_env=None), _topology()):
            async with open_system(topology, store="memory://") as system:
                url = system.endpoint_url
                refused = await _post(url, "restart", {"path": "root/a"})
                snapshot = (await _snapshots(url, 1))[0]
                assert refused.status_code == 403
                assert "read-only" in refused.json()["error"]
                assert snapshot["controls"] is False
                assert system.ref("root/a").statistics().incarnation == 1


async def test_a_missing_or_wrong_token_is_refused_and_logged_without_it(
    loopback_clock: trio.abc.Clock,
) -> None:
    """401 with ``WWW-Authenticate: Bearer`` for no token and a wrong one;
    each refusal is logged with the client's address, never the token."""
    with trio.fail_after(20), structlog.testing.capture_logs() as logs:
        async with open_system(_topology(), store="memory://") as system:
            url = system.endpoint_url
            missing = await _post(
                url, "restart", {"path": "root/a"}, {"content-type": "application/json"}
            )
            wrong = await _post(url, "restart", {"path": "root/a"}, _auth("not-the-token"))
            other_scheme = await _post(
                url, "restart", {"path": "root/a"}, {**_auth(), "authorization": f"Basic {TOKEN}"}
            )
            incarnation = system.ref("root/a").statistics().incarnation
    assert [r.status_code for r in (missing, wrong, other_scheme)] == [401, 401, 401]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert incarnation == 1
    refusals = [log for log in logs if log["event"] == "console_control_refused"]
    assert len(refusals) == 3
    assert all(log["client"].startswith("127.0.0.1:") for log in refusals)
    assert all(log["action"] == "restart" and log["status"] == 401 for log in refusals)
    assert TOKEN not in repr(logs) and "not-the-token" not in repr(logs)


async def test_a_token_in_the_query_string_and_cross_origin_posts_are_refused(
    loopback_clock: trio.abc.Clock,
) -> None:
    """A token in the URL is refused even when right (proxies log URLs); a
    POST from another origin is refused; no answer carries a CORS header,
    and a preflight is not answered with one."""
    with trio.fail_after(20):
        async with (
            open_system(_topology(), store="memory://") as system,
            httpx.AsyncClient() as client,
        ):
            url = system.endpoint_url
            body = json.dumps({"path": "root/a"})
            in_query = await client.post(
                f"{url}/ui/control/restart?token={TOKEN}", content=body, headers=_auth()
            )
            foreign = await client.post(
                f"{url}/ui/control/restart",
                content=body,
                headers={**_auth(), "origin": "https://evil.example"},
            )
            cross_site = await client.post(
                f"{url}/ui/control/restart",
                content=body,
                headers={**_auth(), "sec-fetch-site": "cross-site"},
            )
            preflight = await client.options(
                f"{url}/ui/control/restart",
                headers={
                    "origin": "https://evil.example",
                    "access-control-request-method": "POST",
                },
            )
            form = await client.post(
                f"{url}/ui/control/restart",
                content="path=root/a",
                headers={**_auth(), "content-type": "application/x-www-form-urlencoded"},
            )
            same_origin = await client.post(
                f"{url}/ui/control/restart",
                content=body,
                headers={**_auth(), "origin": url, "sec-fetch-site": "same-origin"},
            )
            incarnation = system.ref("root/a").statistics().incarnation
    assert in_query.status_code == 400 and "query string" in in_query.json()["error"]
    assert foreign.status_code == 403 and cross_site.status_code == 403
    assert preflight.status_code == 405
    assert form.status_code == 415
    assert same_origin.status_code == 200
    assert incarnation == 2  # only the same-origin request restarted it
    for response in (in_query, foreign, cross_site, preflight, form, same_origin):
        assert not any(name.startswith("access-control-") for name in response.headers)


async def test_restart_with_the_token_raises_the_incarnation_and_is_logged(
    loopback_clock: trio.abc.Clock,
) -> None:
    """A restart keeps the actor's queued messages and state machine going:
    its incarnation goes up by one, the restart is counted, and the log
    says who asked and what was done."""
    with trio.fail_after(20), structlog.testing.capture_logs() as logs:
        async with open_system(_topology(), store="memory://") as system:
            ref = system.ref("root/a")
            await ref.ask(Add(1))
            done = await _post(system.endpoint_url, "restart", {"path": "root/a"})
            stats = ref.statistics()
            after = await ref.ask(Add(2))
    assert done.status_code == 200
    assert done.json() == {"ok": True, "message": "restarted root/a: incarnation 2"}
    assert (stats.incarnation, stats.restarts, stats.status) == (2, 1, "running")
    assert after == 2  # a new incarnation: its state started afresh
    [entry] = [log for log in logs if log["event"] == "console_control"]
    assert entry["client"].startswith("127.0.0.1:")
    assert entry["action"] == "restart"
    assert entry["target"] == {"path": "root/a"}
    assert entry["status"] == 200
    assert TOKEN not in repr(logs)


async def test_stop_reset_breaker_pause_resume_and_resize(loopback_clock: trio.abc.Clock) -> None:
    """Each control does what its system method does: stop for good, close
    an open circuit (the actor runs again at once), pause and resume a
    resource, resize a pool; bad requests answer 400, unknown targets 404."""
    with trio.fail_after(30):
        async with open_system(_topology(), store="memory://") as system:
            url = system.endpoint_url
            fragile = system.ref("root/fragile")
            await fragile.tell(Crash())
            await system.wait_until_idle()
            assert fragile.statistics().status == "circuit_open"
            reset = await _post(url, "reset_breaker", {"path": "root/fragile"})
            assert (fragile.statistics().status, fragile.statistics().breaker) == (
                "running",
                "closed",
            )
            assert await fragile.ask(Add(3)) == 3

            paused = await _post(url, "pause", {"resource": "echo", "seconds": 30})
            paused_for = system.resource_statistics()["echo"].limiter.paused_for
            resumed = await _post(url, "resume", {"resource": "echo"})
            assert system.resource_statistics()["echo"].limiter.paused_for == 0

            resized = await _post(url, "resize", {"path": "root/workers", "size": 3})
            size = system.pool_statistics()["root/workers"].size

            stopped = await _post(url, "stop", {"path": "root/a"})
            stopped_again = await _post(url, "restart", {"path": "root/a"})
            unknown = await _post(url, "restart", {"path": "root/nobody"})
            bad = await _post(url, "resize", {"path": "root/workers", "size": "many"})
            no_action = await _post(url, "explode", {"path": "root/a"})
    assert reset.status_code == 200
    assert paused.status_code == 200 and 29 < paused_for <= 30
    assert resumed.status_code == 200
    assert resized.status_code == 200 and size == 3
    assert stopped.status_code == 200
    assert stopped_again.status_code == 404  # stopped for good: gone from the tree
    assert unknown.status_code == 404
    assert bad.status_code == 400 and "size" in bad.json()["error"]
    assert no_action.status_code == 404


async def test_resume_run_runs_a_failed_workflow_run_again_with_its_id(
    loopback_clock: trio.abc.Clock,
) -> None:
    """A run that failed is run again in the background under the same
    run id (202): its succeeded steps are not run again."""
    with trio.fail_after(30):
        async with open_system(_topology(), store="memory://") as system:
            url = system.endpoint_url
            workflow = Workflow(
                "twice",
                steps=[
                    Step("add", agent="root/a", message=Add(1)),
                    Step("crash", agent="root/fragile", message=Crash(), depends_on=["add"]),
                ],
            )
            first = await system.run_workflow(workflow, run_id="r1")
            assert first.status == "failed"
            await system.wait_until_idle()
            unknown = await _post(url, "resume_run", {"workflow": "twice", "run_id": "nope"})
            await _post(url, "reset_breaker", {"path": "root/fragile"})
            resumed = await _post(url, "resume_run", {"workflow": "twice", "run_id": "r1"})
            await system.wait_until_idle()  # the run in flight counts as work
            runs = system.workflow_statistics().recent
            total = await system.ref("root/a").ask(Add(0))
    assert unknown.status_code == 404
    assert resumed.status_code == 202
    assert [(run.run_id, run.status) for run in runs] == [("r1", "failed"), ("r1", "failed")]
    assert total == 1  # the add step succeeded the first time: not run again


def test_control_token_env_takes_a_variable_name_never_a_token() -> None:
    """``metrics.control_token_env`` is the name of a variable; a value that
    cannot be one is refused without being echoed (it may be the token)."""
    assert MetricsSpec(control_token_env="RUNTIME_CONTROL_TOKEN").control_token_env == (
        "RUNTIME_CONTROL_TOKEN"
    )
    with pytest.raises((TopologyError, ValueError)) as caught:
        MetricsSpec(control_token_env="Bearer abc-123")
    assert "abc-123" not in str(caught.value)
