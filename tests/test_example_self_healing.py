"""The self-healing example (``supervisors/self_healing.yaml``), run end to end.

Each run goes through the real command, ``python -m runtime start ...
--until-idle``, from the repository root, with the checkpoint store and the
report in a temporary directory. The fault drill is seeded (``seed: 3``) and
the fake LLM's 429s too, so the numbers asserted here are the same in every
run: 7 incidents (3 on the database, 3 on the cache, 1 on the flapping queue).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = "supervisors/self_healing.yaml"
TIMEOUT = 60.0  # seconds; a run takes about 3
COMPONENTS = "root/components"
QUEUE = f"{COMPONENTS}/queue"


class Run:
    """One finished run: its exit code, output, log events and report."""

    def __init__(self, tmp: Path, **env: str) -> None:
        report = tmp / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "runtime", "start", TOPOLOGY, "--until-idle"],
            cwd=REPO,
            env={
                **os.environ,
                "SELF_HEALING_STORE": f"sqlite:///{tmp / 'self_healing.db'}",
                "SELF_HEALING_REPORT": str(report),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        # stderr is not a terminal: one JSON object per line.
        lines = proc.stderr.splitlines()
        self.events = [json.loads(line) for line in lines if line.startswith("{")]
        self.report: dict[str, Any] = (
            json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
        )

    def line(self, prefix: str) -> str:
        """The stdout line starting with ``prefix``."""
        lines = [line for line in self.stdout.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1, self.stdout
        return lines[0]

    def named(self, event: str, **fields: object) -> list[dict[str, Any]]:
        """The log events called ``event`` whose fields include ``fields``."""
        return [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def crashes(self) -> Counter[str]:
        """``actor_crashed`` events by actor path."""
        return Counter(e["path"] for e in self.named("actor_crashed"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The example as shipped: the breaker opens after 3 crashes in a row."""
    result = Run(tmp_path_factory.mktemp("self_healing"))
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The same drill with the breaker out of reach (100 crashes to open)."""
    result = Run(tmp_path_factory.mktemp("storm"), SELF_HEALING_BREAKER_FAILURES="100")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_run_ends_by_itself_with_a_summary(run: Run) -> None:
    """``--until-idle`` ends the run once the monitor stops: the summary counts
    nine actors, 10 restarts (3 + 3 + 4), no dead letters, and every incident
    as a done item, with 2 repair attempts retried (the queue's)."""
    assert run.line("started ").startswith(f"started 'self_healing' from {TOPOLOGY}")
    summary = run.line("summary: ")
    assert re.fullmatch(
        r"summary: 9 actor\(s\), \d+ message\(s\) handled, 10 restart\(s\), "
        r"0 dead letter\(s\), [\d.]+s elapsed",
        summary,
    ), summary
    assert run.line("items: ") == "items: 7/7 done, 2 retried"


def test_every_repair_attempt_asked_the_llm(run: Run) -> None:
    """One diagnosis per repair attempt (6 + 3) through the ``llm`` resource; the
    fake's seeded 429s are retried and none fails."""
    assert run.line("resource llm: ").startswith(
        "resource llm: 9 request(s), 0 failed, 2 retried, 0 refused by the breaker (now closed), "
    )
    assert len(run.named("llm_paused", reason="retry_after", status=429)) == 2


def test_healthy_components_are_repaired_and_verified(run: Run) -> None:
    """Each fault on the database and the cache is one crash of its component
    (the probe that found it), one reset and one successful verification."""
    components = run.report["components"]
    for name in ("database", "cache"):
        assert components[name] == {
            "incidents": 3,
            "outcomes": ["repaired"],
            "restarts": 3,
            "breaker": "closed",
        }
        assert run.crashes()[f"{COMPONENTS}/{name}"] == 3
        assert len(run.named("incident_closed", component=name, status="repaired")) == 3
    repaired = [i for i in run.report["incidents"] if i["status"] == "repaired"]
    assert [(i["component"], i["opened_tick"], i["attempts"]) for i in repaired] == [
        ("cache", 6, 1),
        ("database", 9, 1),
        ("database", 11, 1),
        ("cache", 13, 1),
        ("database", 16, 1),
        ("cache", 19, 1),
    ]
    assert all(i["closed_tick"] == i["opened_tick"] for i in repaired)
    assert all(i["diagnosis"].startswith("fake answer to: Component ") for i in repaired)


def test_flapping_queue_trips_its_breaker_instead_of_restarting(run: Run) -> None:
    """The queue crashes on detection and on two verifications; the third
    crash in a row opens its circuit, the third verification fails fast, and
    the monitor quarantines it. Only 2 restarts come of the repairs."""
    opened = run.named("breaker_opened", child=QUEUE)
    assert [e["failures"] for e in opened] == [3, 4]
    assert all(e["path"] == COMPONENTS for e in opened)
    assert not [e for e in run.named("breaker_opened") if e["child"] != QUEUE]
    assert len(run.named("child_restarting", child=QUEUE)) == 2
    assert len(run.named("repair_failed", component="queue")) == 2
    (quarantined,) = run.named("component_quarantined", component="queue")
    assert quarantined["attempts"] == 3
    assert quarantined["reason"] == "circuit open"
    assert not run.named("supervisor_gave_up")


def test_half_open_trials_show_the_queue_broken_then_recovered(run: Run) -> None:
    """After ``reset_timeout`` the first trial crashes (the circuit opens
    again) and the operator is paged; after the operator replaced the backend
    the second trial succeeds and closes the circuit."""
    assert len(run.named("breaker_half_open", child=QUEUE)) == 2
    assert len(run.named("trial_failed", component="queue")) == 1
    assert len(run.named("operator_paged", component="queue")) == 1
    assert len(run.named("backend_replaced", component="queue")) == 1
    assert run.named("breaker_closed", path=QUEUE)
    assert run.crashes()[QUEUE] == 4  # 3 to open the circuit, 1 failed trial
    (incident,) = [i for i in run.report["incidents"] if i["component"] == "queue"]
    assert incident["status"] == "recovered"
    assert incident["opened_tick"] == 3
    assert (incident["attempts"], incident["trials"], incident["paged"]) == (3, 2, True)
    assert run.report["components"]["queue"] == {
        "incidents": 1,
        "outcomes": ["recovered"],
        "restarts": 4,  # 2 by the supervisor, 2 half-open trial starts
        "breaker": "closed",
    }


def test_report_closes_the_drill(run: Run) -> None:
    """The monitor ends the drill at its 25th tick with every incident closed."""
    assert run.report["drill"] == 1
    assert run.report["ticks"] == 25
    assert run.report["outcomes"] == {"recovered": [1], "repaired": [2, 3, 4, 5, 6, 7]}
    (finished,) = run.named("drill_finished")
    assert (finished["ticks"], finished["repaired"], finished["recovered"]) == (25, 6, 1)
    assert run.named("child_exited", child="root/monitor", crashed=False)


def test_without_the_breaker_the_queue_restarts_in_a_storm(storm: Run) -> None:
    """With the breaker out of reach the queue is restarted after every failed
    repair until the monitor's own attempts run out, and the restarts exceed
    the components supervisor's intensity: it gives up, taking the healthy
    database and cache down with it."""
    assert not storm.named("breaker_opened")
    assert storm.crashes()[QUEUE] >= 7  # detection, 5 verifications, a probe
    (quarantined,) = storm.named("component_quarantined", component="queue")
    assert quarantined["reason"] == "repair attempts ran out"
    (gave_up,) = storm.named("supervisor_gave_up")
    assert gave_up["path"] == COMPONENTS
    # Giving up stops every running child, the healthy database among them,
    # before the root starts the supervisor (and all of them) again.
    start = storm.events.index(gave_up)
    end = start + storm.events[start:].index(
        storm.named("supervisor_started", path=COMPONENTS, incarnation=2)[0]
    )
    stopped = {e["child"] for e in storm.events[start:end] if e["event"] == "child_stopped"}
    assert f"{COMPONENTS}/database" in stopped
    summary = re.search(r"(\d+) restart\(s\)", storm.line("summary: "))
    assert summary is not None
    assert int(summary[1]) > 10
