"""docs/operations: the alert rules pass promtool, and every metric the rules
and the Grafana dashboard use exists in a live scrape."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

import runtime
from runtime import ChildSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from tests.actorkit import Add, Counter

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations"
ALERTS = OPERATIONS / "alerts.yml"
DASHBOARD = OPERATIONS / "grafana-dashboard.json"
METRIC = re.compile(r"\bruntime_[a-z0-9_]+")


def _require_promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is not None:
        return promtool
    reason = (
        "promtool is not installed: `apt-get install prometheus` (Debian) provides it; "
        ".ci/run installs it"
    )
    if os.environ.get("RUNTIME_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def test_alert_rules_pass_promtool() -> None:
    promtool = _require_promtool()
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in result.stdout


def _rule_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_alerts_cover_what_operators_need() -> None:
    names = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    assert {
        "RuntimeLimiterSaturated",
        "RuntimeConnectionPoolExhausted",
        "RuntimeRateLimitRejections",
        "RuntimeBreakerOpen",
        "RuntimeRestartStorm",
        "RuntimeMailboxNearlyFull",
        "RuntimeDeadLettersRising",
        "RuntimeLockContention",
        "RuntimeLockLost",
        "RuntimeBudgetNearlySpent",
        "RuntimeBudgetBurningFast",
    } <= names


@attrs.frozen
class Touch:
    pass


class Pooled(runtime.Resource):
    """A resource with a pool and HTTP-like answers, as postgres and llm report."""

    @runtime.handler
    async def touch(self, msg: Touch) -> None:
        await self.check_budget()
        await self.call(trio.lowlevel.checkpoint)
        self.record_usage(3, 4)

    def backend_statistics(self) -> dict[str, float]:
        return {
            "connections": 2,
            "in_use": 1,
            "max_size": 4,
            "responses_2xx": 3,
            "responses_429": 1,
        }


async def _live_sample_names() -> set[str]:
    topology = Topology(
        system="ops",
        metrics={"listen": "127.0.0.1:0"},
        resources={
            "db": ResourceSpec(
                kind=Pooled,
                max_concurrency=4,
                rate={"requests": 10, "period": "1m"},
                budget={"tokens": 1000, "period": "1d"},
            )
        },
        supervisor=SupervisorSpec(
            name="root",
            children=[
                ChildSpec(
                    name="counter",
                    actor=Counter,
                    checkpoint="message",
                    circuit_breaker={"failures": 3, "reset_timeout": 60},
                )
            ],
        ),
    )
    async with open_system(topology, store="memory://") as system:
        await system.ref("root/counter").ask(Add(1))
        await system.resource("db").ask(Touch())
        async with system.lock("ops:check", wait_timeout=0):
            pass
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{system.endpoint_url}/metrics")).text
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
async def test_every_metric_used_exists_in_a_live_scrape(source: str) -> None:
    expressions = _rule_expressions() if source == "alerts" else _dashboard_expressions()
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert len(used) >= 8
    with trio.fail_after(20):
        scraped = await _live_sample_names()
    assert sorted(used - scraped) == []


def test_every_metric_is_documented() -> None:
    """docs/operations/metrics.md explains every metric family the runtime serves."""
    text = (OPERATIONS / "metrics.md").read_text()
    families = {
        name.removesuffix("_total")
        for name in trio.run(_live_sample_names)
        if name.startswith("runtime_") and not name.endswith(("_bucket", "_count", "_sum"))
    }
    missing = sorted(name for name in families if f"`{name}" not in text)
    assert missing == []
