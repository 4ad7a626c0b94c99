"""``python -m runtime run``: exit codes, and resuming a run killed with
SIGKILL at random points without repeating a finished step."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.clikit import REPO, SOURCE, SUBPROCESS_TIMEOUT, run_cli
from tests.workflow_agents import sqlite_journals

TOPOLOGY = """\
system: wf
store: sqlite:///{store}
supervisor:
  name: root
  children:
    - name: worker
      actor: tests.workflow_agents:Worker
      concurrency: 8
      args: {{record: "{record}"}}
workflows:
  greet:
    inputs: [who, score]
    steps:
      - name: judge
        agent: root/worker
        message: {{type: "tests.workflow_agents:Judge", score: "${{inputs.score}}"}}
      - name: hello
        agent: root/worker
        depends_on: [judge]
        message: {{type: "tests.workflow_agents:Echo", text: "hi ${{inputs.who}}",
                  verdict: "${{steps.judge.result}}"}}
  broken:
    steps:
      - name: crash
        agent: root/worker
        message: {{type: "tests.workflow_agents:Job", name: crash, fail_first: 99}}
        retry: {{attempts: 2, initial: 10ms}}
  refused:
    steps:
      - name: draft
        agent: root/worker
        message: {{type: "tests.workflow_agents:Job", name: draft}}
        validate: tests.workflow_agents:always_refuse
  long:
    max_parallel: 3
    steps:
{long_steps}
"""

CHAINS, DEPTH = 4, 5  # ``long``: four chains of five steps, 0.1 s each


def long_steps() -> str:
    lines = []
    for index in range(CHAINS * DEPTH):
        before = f", depends_on: [s{index - CHAINS}]" if index >= CHAINS else ""
        lines.append(
            f"      - {{name: s{index}, agent: root/worker{before}, message: "
            f'{{type: "tests.workflow_agents:Job", name: s{index}, sleep: 0.1}}}}'
        )
    return "\n".join(lines)


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(
        TOPOLOGY.format(
            store=tmp_path / "wf.db", record=tmp_path / "record.txt", long_steps=long_steps()
        )
    )
    return path


def test_a_run_that_succeeds_prints_its_steps_and_exits_0(topology: Path) -> None:
    """Exit 0, the run's id first, then one row per step and the status."""
    result = run_cli("run", str(topology), "greet", "--input", "who=ada", "--input", "score=2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("run greet ")
    run_id = lines[0].split()[2].rstrip(";")
    assert lines[1].split() == ["STEP", "STATUS", "ATTEMPTS", "AGENT", "RESULT"]
    assert lines[2].split()[:4] == ["judge", "succeeded", "1", "root/worker"]
    assert "Verdict(ok=True, score=2)" in lines[2]
    assert lines[3].split()[:2] == ["hello", "succeeded"]
    assert lines[-1] == f"greet {run_id}: succeeded"
    again = run_cli(
        "run",
        str(topology),
        "greet",
        "--input",
        "who=ada",
        "--input",
        "score=2",
        "--run-id",
        run_id,
    )
    assert again.returncode == 0
    assert "succeeded (journal)" in again.stdout


def test_a_failed_run_exits_1(topology: Path) -> None:
    result = run_cli("run", str(topology), "broken", "--run-id", "b1")
    assert result.returncode == 1, result.stderr
    assert "ActorFailed" in result.stdout
    assert result.stdout.splitlines()[-1] == "broken b1: failed"


def test_bad_inputs_or_an_unknown_workflow_exit_2(topology: Path) -> None:
    for args, said in (
        (["greet", "--input", "who=x", "--input", "score=many"], "cannot take 'many'"),
        (["greet", "--input", "who=x"], "missing input(s): score"),
        (["greet", "--input", "oops"], "expected NAME=VALUE"),
        (["nothing"], "has no workflow 'nothing'; it has: broken, greet, long, refused"),
    ):
        result = run_cli("run", str(topology), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert said in result.stderr


def test_a_run_needing_attention_exits_3(topology: Path) -> None:
    result = run_cli("run", str(topology), "refused", "--run-id", "n1")
    assert result.returncode == 3, result.stderr
    assert "invalid: not good enough" in result.stdout
    assert result.stdout.splitlines()[-1] == "refused n1: needs_attention"


def journaled(store: Path, run_id: str) -> set[str]:
    """The steps the run's journal has as succeeded."""
    journal = sqlite_journals(store, "long").get(run_id, {"steps": {}})
    return {name for name, entry in journal["steps"].items() if entry["status"] == "succeeded"}


def executions(record: Path) -> list[tuple[str, int]]:
    """Each step execution the agents recorded, as ``(step, pid)``."""
    if not record.exists():
        return []
    lines = record.read_text().splitlines()
    return [(key.split("/")[1], int(pid)) for key, pid in (line.split() for line in lines)]


@pytest.mark.multiprocess
def test_sigkill_at_random_points_never_repeats_a_finished_step(
    topology: Path, tmp_path: Path
) -> None:
    """``runtime run`` killed with SIGKILL ten times at random points,
    then run to the end, all with one run id: a step the journal had as
    finished at a kill is never executed by a later process; the run
    completes with every step succeeded."""
    rng = random.Random(int(os.environ.get("WF_KILL_SEED", "14")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SOURCE, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "runtime", "run", str(topology), "long", "--run-id", "k"]
    store, record = tmp_path / "wf.db", tmp_path / "record.txt"
    finished_at_kill: list[tuple[set[str], int]] = []  # (journaled steps, kills so far)
    pids: list[int] = []
    for _ in range(10):
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        pids.append(process.pid)
        assert process.stdout is not None
        first = process.stdout.readline()  # printed once the system has started
        time.sleep(rng.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=SUBPROCESS_TIMEOUT)
        process.stdout.close()
        assert first.startswith("run long k") or process.returncode == 0, first
        finished_at_kill.append((journaled(store, "k"), len(pids)))
    last = run_cli("run", str(topology), "long", "--run-id", "k")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines()[-1] == "long k: succeeded"
    done = executions(record)
    later_pids = {pid for pid in {p for _, p in done} if pid not in pids}
    assert len(later_pids) <= 1  # the last run's
    order = {pid: index for index, pid in enumerate(pids)}
    for finished, kills in finished_at_kill:
        repeated = {
            step for step, pid in done if step in finished and order.get(pid, len(pids)) >= kills
        }
        assert not repeated, f"finished before kill {kills}, executed again: {repeated}"
    counts = Counter(step for step, _ in done)
    assert set(counts) == {f"s{index}" for index in range(CHAINS * DEPTH)}
    # Some kills landed mid-run: the journal grew between them.
    sizes = [len(finished) for finished, _ in finished_at_kill]
    assert len(set(sizes)) >= 3, sizes


def test_start_until_idle_exits_3_with_a_run_needing_attention(
    topology: Path, tmp_path: Path
) -> None:
    """An actor runs ``refused`` under ``start --until-idle``: the run parks
    as needs_attention, the system goes idle, and the command exits 3 with
    the summary and the run named on stderr."""
    launched = tmp_path / "launched.yaml"
    launched.write_text(
        topology.read_text().replace(
            "  children:\n",
            "  children:\n"
            "    - name: launcher\n"
            "      actor: tests.workflow_agents:Launcher\n"
            "      args: {workflow: refused, run_id: n2}\n",
            1,
        )
    )
    result = run_cli("start", str(launched), "--until-idle", "--progress-interval", "0")
    assert result.returncode == 3, result.stderr
    assert "workflow runs: 1 needs_attention" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "idle with 1 workflow run(s) needing attention: refused/n2; "
        "run each again with its run id once fixed"
    )
