"""The PR review and deployment example (``supervisors/pr_review.yaml``), run
through the real command from the repository root, offline.

What each run produced is read back from two places: the journal the agents
append to as steps complete (``PR_REVIEW_JOURNAL``), and the checkpoints in
the SQLite store (``PR_REVIEW_STORE``), opened with ``runtime.SqliteStore``.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
from actors.pr_review import Deploy, Deployer, Deployment, Environment, PullRequest

from runtime import ActorRef, ChildSpec, SqliteStore, SupervisorSpec, Topology, open_system
from tests.workflow_agents import sqlite_journals

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0

# The eight sample PRs repeat in this order (actors/pr_review.py).
OUTCOMES = ("deployed", "deployed", "rejected", "deployed", "red", "deployed", "deployed", "red")
TARGETS = ("staging", "staging", "production", "production") + ("staging", "production") * 2
ENVIRONMENTS = ("staging", "production")


def expected_outcomes(count: int) -> dict[int, str]:
    return {number: OUTCOMES[(number - 1) % 8] for number in range(1, count + 1)}


def example_env(tmp_path: Path, prs: int, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "PR_REVIEW_PRS": str(prs),
        "PR_REVIEW_STORE": f"sqlite:///{tmp_path / 'pr_review.db'}",
        "PR_REVIEW_JOURNAL": str(tmp_path / "journal.jsonl"),
        **more,
    }


def start_command() -> list[str]:
    return [sys.executable, "-m", "runtime", "start", "supervisors/pr_review.yaml", "--until-idle"]


def run_example(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        start_command(),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def read_journal(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "journal.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def read_checkpoints(tmp_path: Path) -> dict[str, Any]:
    """The checkpointed state of every actor, by path, as JSON, and each
    workflow run's journal."""

    async def load() -> dict[str, Any]:
        store = SqliteStore(tmp_path / "pr_review.db")
        try:
            states = {}
            for path in await store.paths():
                loaded = await store.load(path)
                assert loaded is not None
                states[path] = json.loads(loaded[1])
            return states
        finally:
            await store.aclose()

    states = trio.run(load)
    # The workflow journals are no actor's checkpoint (``paths()`` leaves
    # them out): each run's, read back whole, at its run's key.
    journals = sqlite_journals(tmp_path / "pr_review.db", "pr")
    return states | {f"workflow/pr/{run_id}": journal for run_id, journal in journals.items()}


def journals_in(checkpoints: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Each PR's workflow journal (``workflow/pr/pr-<number>``), by number."""
    return {
        int(path.rsplit("-", 1)[1]): journal
        for path, journal in checkpoints.items()
        if path.startswith("workflow/pr/")
    }


def outcomes_in(checkpoints: dict[str, Any]) -> dict[int, str | None]:
    outcomes: dict[int, str | None] = {}
    for number, journal in journals_in(checkpoints).items():
        release = journal["steps"].get("release")
        succeeded = journal["status"] == "succeeded" and release is not None
        outcomes[number] = release["value"] if succeeded else None
    return outcomes


def rollouts_in(checkpoints: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {env: checkpoints[f"root/deploy/{env}"]["history"] for env in ENVIRONMENTS}


def assert_no_overlap(rollouts: dict[str, list[dict[str, Any]]]) -> None:
    for env, history in rollouts.items():
        ordered = sorted(history, key=lambda rollout: rollout["started"])
        for before, after in itertools.pairwise(ordered):
            assert before["finished"] <= after["started"], (env, before, after)


@pytest.fixture(scope="module")
def default_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    tmp_path = tmp_path_factory.mktemp("pr_review")
    return run_example(example_env(tmp_path, 8)), tmp_path


def test_default_run_handles_every_pr_and_reports(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The default run (8 PRs) exits 0 by itself and prints the summary, the
    items line (the CI agent's retries of failed test runs are counted) and
    one line per resource."""
    result, _ = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("started 'pr_review' from supervisors/pr_review.yaml")
    assert re.search(r"^summary: 7 actor\(s\), \d+ message\(s\) handled", out, re.M), out
    items = re.search(r"^items: 8/8 done, (\d+) retried$", out, re.M)
    assert items is not None, out
    # Two red PRs retried twice each, and the flaky runs once each: a flaky
    # first run whose reply the ci resource's timeout cut short is retried by
    # the resource itself (the server's second run passes), so at least one
    # of the two shows here on a loaded machine.
    assert int(items.group(1)) >= 5
    assert re.search(r"^resource llm: \d+ request\(s\), 0 failed, ", out, re.M), out
    assert re.search(r"^resource ci: \d+ request\(s\), ", out, re.M), out


def test_default_run_outcome_per_pr(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Each PR gets the outcome its content calls for: the one marked DO NOT
    MERGE is rejected by the review, the two that remove a check are red in
    CI (after retries), the others are deployed to their target environment
    exactly once; the flaky ones needed a second test run."""
    result, tmp_path = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = read_checkpoints(tmp_path)
    assert outcomes_in(checkpoints) == expected_outcomes(8)

    deployments = checkpoints["root/deploy/deployer"]["deployments"]
    deployed = {n for n, outcome in expected_outcomes(8).items() if outcome == "deployed"}
    assert {int(n) for n in deployments} == deployed
    for number, deployment in deployments.items():
        assert deployment["environment"] == TARGETS[int(number) - 1]
    rolled_out = [r["pr"] for history in rollouts_in(checkpoints).values() for r in history]
    assert sorted(rolled_out) == sorted(deployed)

    journal = read_journal(tmp_path)
    ci = {line["pr"]: line for line in journal if line["step"] == "ci"}
    assert {ci[n]["result"] for n in (5, 8)} == {"red"}
    assert all(ci[n]["runs"] == 3 for n in (5, 8))
    # PRs 1 and 6 touch src/net/: their first run is flaky. A first run whose
    # reply the resource's timeout cut short is retried inside the resource
    # (see above), so on a loaded machine one of them may show a single run.
    assert ci[1]["runs"] >= 2 or ci[6]["runs"] >= 2
    reviews = {line["pr"]: line["result"] for line in journal if line["step"] == "review"}
    assert reviews == {n: "rejected" if n == 3 else "approved" for n in range(1, 9)}
    assert "pr_review_report" in result.stderr


def test_deployments_to_one_environment_never_overlap(
    default_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Each environment actor handles one rollout at a time: in its
    checkpointed history and in the journal, every rollout to an environment
    starts after the previous one to it finished."""
    result, tmp_path = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_overlap(rollouts_in(read_checkpoints(tmp_path)))
    from_journal: dict[str, list[dict[str, Any]]] = {env: [] for env in ENVIRONMENTS}
    for line in read_journal(tmp_path):
        if line["step"] == "deploy":
            from_journal[line["environment"]].append(line)
    assert sum(map(len, from_journal.values())) == OUTCOMES.count("deployed")
    assert_no_overlap(from_journal)


def read_lines(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


def wait_for_progress(process: subprocess.Popen[str], lines: queue.Queue[str], total: int) -> int:
    """Read stdout until a progress line shows some but not all PRs done."""
    deadline = time.monotonic() + TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        match = re.match(r"progress: (\d+)/(\d+) item\(s\) done", line)
        if match and int(match.group(2)) == total and 4 <= int(match.group(1)) < total:
            return int(match.group(1))
    process.kill()
    pytest.fail(f"no progress line with some PRs done: {seen}")


def test_killed_run_resumes_without_redoing_finished_steps(tmp_path: Path) -> None:
    """A run SIGKILLed mid-way and started again on the same store finishes
    every PR: the second process re-counts the PRs already done, runs only
    the steps the orchestrator's checkpoint does not record as done (at most
    the steps in flight at the kill run twice), and deploys no PR twice."""
    prs = 24
    # No CI server crashes here: the kill is the failure under test.
    env = example_env(tmp_path, prs, PR_REVIEW_CI_CRASH_ON_RUN="0")
    process = subprocess.Popen(
        [*start_command(), "--progress-interval", "0.1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(process, lines))
    reader.start()
    try:
        wait_for_progress(process, lines, prs)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL

    at_kill = journals_in(read_checkpoints(tmp_path))
    # The agents' record calls the release step's rollout "deploy".
    done_at_kill = {
        (number, "deploy" if step == "release" else step)
        for number, journal in at_kill.items()
        for step, entry in journal["steps"].items()
        if entry["status"] == "succeeded"
    }
    finished_at_kill = sum(1 for journal in at_kill.values() if journal["status"] == "succeeded")
    assert 0 < finished_at_kill < prs
    first_pid = {line["pid"] for line in read_journal(tmp_path)}

    result = run_example(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"items: {prs}/{prs} done" in result.stdout

    checkpoints = read_checkpoints(tmp_path)
    assert outcomes_in(checkpoints) == expected_outcomes(prs)
    journal = read_journal(tmp_path)
    second = [line for line in journal if line["pid"] not in first_pid]
    assert second and len(first_pid) == 1
    redone = {(line["pr"], line["step"]) for line in second} & done_at_kill
    assert not redone, f"steps recorded as done before the kill ran again: {redone}"
    repeats = Counter((line["pr"], line["step"]) for line in journal)
    assert sum(count - 1 for count in repeats.values()) <= 8  # 4 runs, 2 steps each at most

    deployed = sorted(n for n, outcome in expected_outcomes(prs).items() if outcome == "deployed")
    rollouts = rollouts_in(checkpoints)
    assert sorted(r["pr"] for history in rollouts.values() for r in history) == deployed
    deploy_lines = Counter(line["pr"] for line in journal if line["step"] == "deploy")
    assert max(deploy_lines.values()) == 1
    assert sorted(checkpoints["root/deploy/deployer"]["deployments"], key=int) == [
        str(n) for n in deployed
    ]
    assert_no_overlap(rollouts)


async def test_an_environment_serializes_concurrent_deployments() -> None:
    """Four PRs deployed at once to one environment (the deployer handles
    four messages at once) are rolled out one after the other: each waits
    for the previous rollout to finish. Deploying a PR again returns its
    first deployment and rolls out nothing."""
    deploy = SupervisorSpec(
        name="deploy",
        children=[
            ChildSpec(
                name="staging",
                actor=Environment,
                checkpoint="message",
                args={"rollout_seconds": 0.05},
            ),
            ChildSpec(
                name="deployer",
                actor=Deployer,
                concurrency=4,
                checkpoint="message",
                args={"environments": "root/deploy"},
            ),
        ],
    )
    topology = Topology(supervisor=SupervisorSpec(name="root", children=[deploy]))
    prs = [PullRequest(number, f"change {number}", "staging", "") for number in range(1, 5)]
    deployments: list[Deployment] = []

    async def deploy_one(deployer: ActorRef[Any], pr: PullRequest) -> None:
        deployments.append(await deployer.ask(Deploy(pr)))

    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            deployer = system.ref("root/deploy/deployer")
            async with trio.open_nursery() as nursery:
                for pr in prs:
                    nursery.start_soon(deploy_one, deployer, pr)
            again = await deployer.ask(Deploy(prs[0]))
            locks = system.lock_statistics()

    assert sorted(deployment.pr for deployment in deployments) == [1, 2, 3, 4]
    # Each rollout held the environment's lock (deploy:staging); the repeat took none.
    assert (locks.acquired, locks.held, locks.lost) == (4, (), 0)
    assert again == next(deployment for deployment in deployments if deployment.pr == 1)
    ordered = sorted(deployments, key=lambda deployment: deployment.started)
    for before, after in itertools.pairwise(ordered):
        assert before.finished <= after.started  # never two at once
        assert after.requested < before.finished  # it waited for the one before
