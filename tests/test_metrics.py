"""Metrics, health and status over a real socket: values checked against
what the test did, parsed with prometheus_client's own parser."""

from __future__ import annotations

import math
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import runtime
from runtime import ChildSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from tests.actorkit import Add, Counter, Crash, Get
from tests.resource_kinds import Backend, Echo, Ping

LOOPBACK = {"listen": "127.0.0.1:0"}  # a free port, read back from system.endpoint_url


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, timeout=10)


def _topology(backend: Backend, *children: ChildSpec, **fields: Any) -> Topology:
    return Topology(
        system="observed",
        metrics=LOOPBACK,
        resources={
            "echo": ResourceSpec(
                kind=Echo,
                options={"backend": backend},
                max_concurrency=2,
                retry=None,
                circuit_breaker={"failures": 2, "reset_timeout": 60},
                **fields,
            )
        },
        supervisor=SupervisorSpec(name="root", max_restarts=10, within=60, children=list(children)),
    )


async def test_a_scrape_counts_what_the_system_did(loopback_clock: trio.abc.Clock) -> None:
    """Messages handled and failed, restarts by reason, mailbox depth and
    capacity, a saturated limiter and its waiters, dead letters, breakers:
    each as the test made them."""
    backend = Backend(delay=5.0)
    counter = ChildSpec(name="counter", actor=Counter, mailbox={"capacity": 10})
    with trio.fail_after(20):
        async with open_system(_topology(backend, counter), store="memory://") as system:
            assert system.endpoint_url is not None
            ref = system.ref("root/counter")
            for n in range(5):
                await ref.tell(Add(n))
            assert await ref.ask(Get()) == 10
            with pytest.raises(runtime.errors.ActorFailed):
                await ref.ask(Crash())
            await trio.sleep(0.05)  # the restart
            echo = system.resource("echo")
            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(lambda n=n: echo.ask(Ping(n), timeout=60))
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0.05)
                response = await _get(f"{system.endpoint_url}/metrics")
                nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)
    assert (
        _value(samples, "runtime_messages_handled_total", actor="root/counter", outcome="ok") == 6
    )
    assert (
        _value(samples, "runtime_messages_handled_total", actor="root/counter", outcome="error")
        == 1
    )
    assert _value(samples, "runtime_restarts_total", actor="root/counter", reason="crash") == 1
    assert _value(samples, "runtime_mailbox_capacity", actor="root/counter") == 10
    assert _value(samples, "runtime_mailbox_depth", actor="root/counter") == 0
    assert _value(samples, "runtime_actor_status", actor="root/counter", status="running") == 1
    # Handling times: slow handlers are all timed; counts are whole messages.
    count = _value(samples, "runtime_message_duration_seconds_count", actor="root/counter")
    assert count >= 1
    assert (
        _value(samples, "runtime_message_duration_seconds_bucket", actor="root/counter", le="+Inf")
        == count
    )
    # The limiter: 2 of 2 tokens taken, 3 waiting at normal priority.
    assert _value(samples, "runtime_limiter_tokens_in_use", resource="echo") == 2
    assert _value(samples, "runtime_limiter_tokens", resource="echo") == 2
    assert _value(samples, "runtime_limiter_waiting", resource="echo", priority="normal") == 3
    assert _value(samples, "runtime_limiter_admitted_total", resource="echo") == 2
    assert _value(samples, "runtime_limiter_breaker_state", resource="echo", state="closed") == 1
    assert _value(samples, "runtime_resource_backend", resource="echo", figure="running") == 2
    assert _value(samples, "runtime_dead_letters_total", reason="mailbox_full") == 0
    assert _value(samples, "runtime_up", system="observed") == 1
    assert "process_cpu_seconds_total" in {name for name, _ in samples}


async def test_metrics_go_to_the_registry_given(loopback_clock: trio.abc.Clock) -> None:
    """With a registry and no endpoint, the system's metrics are registered
    there for the lifetime of the block, and removed after it."""
    registry = CollectorRegistry()
    topology = Topology(
        supervisor=SupervisorSpec(name="root", children=[ChildSpec(name="c", actor=Counter)])
    )
    async with open_system(topology, store="memory://", registry=registry) as system:
        await system.ref("root/c").ask(Add(1))
        assert system.endpoint_url is None
        value = registry.get_sample_value(
            "runtime_messages_handled_total", {"actor": "root/c", "outcome": "ok"}
        )
        assert value == 1
    assert registry.get_sample_value("runtime_up", {"system": "runtime"}) is None
    with pytest.raises(TypeError, match="CollectorRegistry"):
        async with open_system(topology, registry=object()):
            pass


async def test_healthz_follows_the_root_and_status_shows_the_tree(
    loopback_clock: trio.abc.Clock,
) -> None:
    """/healthz: 200 while the root runs, 503 while the system stops;
    /status: the tree and the resources as JSON."""
    backend = Backend(delay=0.5)
    url = ""
    answers: list[tuple[int, str]] = []
    with trio.fail_after(20):
        async with (
            trio.open_nursery() as outside,
            open_system(_topology(backend), store="memory://") as system,
        ):
            url = system.endpoint_url or ""
            health = await _get(f"{url}/healthz")
            assert (health.status_code, health.text) == (200, "running\n")
            status = (await _get(f"{url}/status")).json()
            assert status["system"] == "observed" and status["state"] == "running"
            assert status["tree"]["path"] == "root"
            assert status["resources"]["children"][0]["path"] == "resources/echo"
            assert status["limiters"]["echo"]["max_concurrency"] == 2
            missing = await _get(f"{url}/nope")
            assert missing.status_code == 404

            async def slow_request() -> None:
                await system.resource("echo").ask(Ping("late"))

            async def probe() -> None:
                # While the resource finishes its request, the system is stopping.
                await trio.sleep(0.2)
                response = await _get(f"{url}/healthz")
                answers.append((response.status_code, response.text))

            outside.start_soon(slow_request)
            outside.start_soon(probe)
            await trio.testing.wait_all_tasks_blocked()
    assert answers == [(503, "stopping\n")]
    with pytest.raises(httpx.ConnectError):
        await _get(f"{url}/healthz")  # the endpoint stopped with the system


async def test_healthz_is_503_once_the_root_has_failed(loopback_clock: trio.abc.Clock) -> None:
    """A root that gives up: /healthz answers 503 failed while the system
    stops (a resource request keeps it stopping long enough to look)."""
    backend = Backend(delay=0.5)
    crasher = ChildSpec(name="c", actor=Counter)
    topology = attrs.evolve(
        _topology(backend, crasher),
        supervisor=SupervisorSpec(name="root", max_restarts=0, within=60, children=[crasher]),
    )
    answers: list[tuple[int, str]] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as outside:
            with pytest.raises(runtime.errors.SupervisorGaveUp):
                async with open_system(topology, store="memory://") as system:
                    url = system.endpoint_url

                    async def slow_request() -> None:
                        await system.resource("echo").ask(Ping("late"))

                    async def probe() -> None:
                        await trio.sleep(0.2)
                        response = await _get(f"{url}/healthz")
                        answers.append((response.status_code, response.text))

                    outside.start_soon(slow_request)
                    outside.start_soon(probe)
                    await trio.testing.wait_all_tasks_blocked()
                    await system.ref("root/c").tell(Crash())
                    await trio.sleep_forever()
    assert answers == [(503, "failed\n")]


async def test_a_port_in_use_is_a_clear_error(loopback_clock: trio.abc.Clock) -> None:
    """Nothing starts when the endpoint cannot bind; the error says where."""
    async with open_system(Topology(metrics=LOOPBACK), store="memory://") as first:
        port = (first.endpoint_url or "").rsplit(":", 1)[1]
        taken = Topology(system="second", metrics={"listen": f"127.0.0.1:{port}"})
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            async with open_system(taken, store="memory://"):
                pass


def test_listen_addresses() -> None:
    """A port alone binds to loopback; any other host is written out."""
    from runtime._listen import parse_listen

    assert parse_listen(9464).bind == "127.0.0.1:9464"
    assert parse_listen(":9464").loopback
    assert parse_listen("0.0.0.0:9464").bind == "0.0.0.0:9464"
    assert not parse_listen("0.0.0.0:9464").loopback
    assert parse_listen("[::1]:9464").bind == "[::1]:9464"
    with pytest.raises(ValueError, match="expected host:port"):
        parse_listen("127.0.0.1:99999")
    assert math.isfinite(parse_listen("localhost:1").port)
