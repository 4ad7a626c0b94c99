"""``python -m runtime``: validate and start, their exit codes and output.

In-process tests call ``runtime._cli.main(argv)``; the bundled topologies in
``supervisors/`` are run through the real command as subprocesses, from the
repository root as a user would, so the examples cannot rot.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from runtime._cli import main
from tests.clikit import REPO, SUBPROCESS_TIMEOUT, run_cli

SUPERVISORS = sorted(
    path for path in (REPO / "supervisors").iterdir() if path.suffix in (".yaml", ".yml")
)

VALID = """
system: cli-test
supervisor:
  name: root
  children:
    - name: echo
      actor: tests.sample_actors:Echo
    - name: team
      children:
        - {name: greeter, actor: "tests.sample_actors:Greeter", args: {greeting: hi}}
"""

INVALID = """
system: cli-test
supervisor:
  name: root
  strategy: one_for_some
  children:
    - name: echo
      actor: tests.sample_actors:Echo
      mailbox: {capacity: 0}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_validate_valid_topology_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``validate`` on a valid file exits 0 and says what it found on stdout."""
    path = write(tmp_path, VALID)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: valid: system 'cli-test', 2 actor(s)\n"
    assert err == ""


def test_validate_invalid_topology_exits_2_with_errors_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``validate`` on an invalid file exits 2 and writes one line per problem,
    ``file:line: field: message``, to stderr and nothing to stdout."""
    path = write(tmp_path, INVALID)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:4: supervisor.strategy: expected one of one_for_one, one_for_all, rest_for_one",
        f"{path}:8: supervisor.children[0].mailbox.capacity: "
        "expected a whole number of at least 1; got 0",
    ]


def test_validate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``validate`` on a file that does not exist exits 2 and names the file."""
    path = tmp_path / "nowhere.yaml"
    assert main(["validate", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["start"], ["validate"], ["frobnicate", "x.yaml"]])
def test_usage_error_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or unknown command, or a missing topology, is a usage error: exit 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["start", "--help"], ["validate", "--help"]])
def test_help_exits_0_and_documents_exit_codes(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--help`` on the program and on each command exits 0 and lists the exit codes."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal
    codes = text.split("Exit codes: ", 1)[1]
    assert codes.startswith("0 ")
    assert ", 2 " in codes


def test_supervisors_directory_has_topologies() -> None:
    """The bundled examples exist, so the test below cannot pass by running none."""
    assert REPO / "supervisors" / "quickstart.yaml" in SUPERVISORS


@pytest.mark.parametrize("topology", SUPERVISORS, ids=[path.name for path in SUPERVISORS])
def test_bundled_topology_validates(topology: Path) -> None:
    """Every topology in ``supervisors/`` passes ``python -m runtime validate``."""
    result = run_cli("validate", str(topology.relative_to(REPO)))
    assert result.returncode == 0, result.stderr
    assert ": valid: " in result.stdout


def test_quickstart_runs_until_idle() -> None:
    """The quickstart starts, handles every job (one crash is restarted and
    retried), goes idle, stops gracefully with exit 0 and prints a summary."""
    items = 40
    result = run_cli(
        "start",
        "supervisors/quickstart.yaml",
        "--until-idle",
        env={"QUICKSTART_ITEMS": str(items)},
    )
    assert result.returncode == 0, result.stderr
    match = re.search(
        r"^summary: 3 actor\(s\), (\d+) message\(s\) handled, (\d+) restart\(s\), ",
        result.stdout,
        re.MULTILINE,
    )
    assert match is not None, result.stdout
    handled, restarts = int(match[1]), int(match[2])
    assert handled >= 2 * items  # every job by the worker, every result by the tally
    assert restarts >= 1  # job 25 fails on its first attempt
    assert re.search(rf"^items: {items}/{items} done, [1-9]\d* retried$", result.stdout, re.M)


def test_progress_lines_say_items_and_who_works() -> None:
    """While it runs, a progress line on stdout: items done out of the total
    the actors counted, and the actors handling a message now."""
    result = run_cli(
        "start",
        "supervisors/quickstart.yaml",
        "--until-idle",
        "--progress-interval",
        "0.05",
        env={"QUICKSTART_ITEMS": "200"},
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("progress: ")]
    assert lines, result.stdout
    assert any(
        re.match(r"progress: \d+/200 item\(s\) done.*; working: .*root/workers/worker", line)
        for line in lines
    ), lines


def test_progress_line_format() -> None:
    from runtime import Progress
    from runtime._cli import progress_line

    assert progress_line(Progress(0, 0, 0, ())) == "progress: no items counted; idle"
    busy = Progress(3, 10, 1, tuple((f"root/w{n}", n) for n in range(1, 9)))
    assert progress_line(busy) == (
        "progress: 3/10 item(s) done, 1 retried; working: root/w1, root/w2 (2), root/w3 (3), "
        "root/w4 (4), root/w5 (5), root/w6 (6) and 2 more"
    )


def test_start_invalid_topology_exits_2(tmp_path: Path) -> None:
    """``start`` refuses an invalid topology before starting anything: exit 2,
    the errors on stderr and no summary."""
    path = write(tmp_path, INVALID)
    result = run_cli("start", str(path), "--until-idle")
    assert result.returncode == 2
    assert f"{path}:4: supervisor.strategy: " in result.stderr
    assert "summary:" not in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_start_stops_gracefully_on_a_signal(signum: signal.Signals, tmp_path: Path) -> None:
    """SIGINT or SIGTERM stops a running system gracefully: on_stop runs (the
    tally logs its count), the summary is printed and the exit code is 0."""
    path = write(
        tmp_path,
        """
        system: quickstart
        supervisor:
          name: root
          children:
            - {name: tally, actor: "actors.quickstart:Tally"}
            - {name: echo, actor: "tests.sample_actors:Echo"}
        """,
    )
    with subprocess.Popen(
        [sys.executable, "-m", "runtime", "start", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("started 'quickstart'")
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    assert f"received {signum.name}: stopping gracefully" in stderr
    assert '"event": "tally"' in stderr
    assert "summary: 2 actor(s)" in stdout


def test_start_exits_1_when_the_root_gives_up(tmp_path: Path) -> None:
    """A root supervisor that exceeds its restart intensity ends the run with
    exit 1 and says why on stderr."""
    path = write(
        tmp_path,
        """
        system: doomed
        supervisor:
          name: root
          max_restarts: 2
          within: 60s
          children:
            - {name: broken, actor: "tests.sample_actors:CrashOnStart"}
        """,
    )
    result = run_cli("start", str(path), "--until-idle")
    assert result.returncode == 1, result.stderr
    assert "error: supervisor root gave up: more than 2 restart(s) within 60s" in result.stderr
    assert "RuntimeError('cannot start')" in result.stderr


RELOADABLE = """
system: reloading
resources:
  echo: {{kind: "tests.resource_kinds:Echo", max_concurrency: {limit}}}
supervisor:
  name: root
  children:
    - {{name: echo, actor: "tests.sample_actors:Echo"}}
"""


def test_sighup_reloads_resource_limits(tmp_path: Path) -> None:
    """SIGHUP re-reads the topology and applies resource limits live, says
    what changed, keeps running on an invalid file, and stops gracefully."""
    path = write(tmp_path, RELOADABLE.format(limit=2))
    with subprocess.Popen(
        [sys.executable, "-m", "runtime", "start", str(path), "--log-level", "warning"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        lines: queue.Queue[str] = queue.Queue()

        def read_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                lines.put(line)

        def wait_for(text: str) -> list[str]:
            seen: list[str] = []
            while not any(text in line for line in seen):
                seen.append(lines.get(timeout=SUBPROCESS_TIMEOUT))
            return seen

        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("started 'reloading'")
            threading.Thread(target=read_stderr, daemon=True).start()
            write(tmp_path, RELOADABLE.format(limit=6))
            process.send_signal(signal.SIGHUP)
            seen = wait_for("resources.echo: max_concurrency: 2 -> 6")
            assert any(f"received SIGHUP: reloaded {path}" in line for line in seen)
            write(tmp_path, RELOADABLE.format(limit=0))
            process.send_signal(signal.SIGHUP)
            seen = wait_for("max_concurrency: expected a whole number of at least 1")
            assert any("is invalid; nothing changed" in line for line in seen)
            process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT)
        finally:
            process.kill()
    assert process.returncode == 0
    assert "summary: 1 actor(s)" in stdout
    assert (
        "resource echo: 0 request(s), 0 failed, 0 retried, 0 refused by the breaker "
        "(now closed), 0.00s waited for admission"
    ) in stdout


def test_status_shows_a_running_systems_tree(tmp_path: Path) -> None:
    """``start --metrics-listen`` serves the endpoint (its URL on stdout);
    ``status URL`` prints the tree and the resources, exit 0 while it runs;
    an address nobody serves is exit 1."""
    path = write(tmp_path, RELOADABLE.format(limit=3))
    with subprocess.Popen(
        [sys.executable, "-m", "runtime", "start", str(path), "--metrics-listen", "127.0.0.1:0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith("started 'reloading'")
            line = process.stdout.readline()
            match = re.match(r"metrics: (http://127\.0\.0\.1:\d+)/metrics, ", line)
            assert match, line
            result = run_cli("status", match[1])
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=SUBPROCESS_TIMEOUT)
        finally:
            process.kill()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "system 'reloading': running (0 dead letter(s))"
    assert lines[2].split() == [
        "PATH", "KIND", "STATUS", "INCARNATION", "RESTARTS", "MAILBOX", "BREAKER", "ASKS"
    ]  # fmt: skip
    assert lines[3].split() == ["root", "supervisor", "running", "1", "0", "-", "-", "0"]
    assert lines[4].split() == ["root/echo", "actor", "running", "1", "0", "0/100", "-", "0"]
    assert lines[5].split()[:3] == ["resources", "supervisor", "running"]
    assert lines[6].split() == [
        "resources/echo", "actor", "running", "1", "0", "0/100", "closed", "0"
    ]  # fmt: skip
    assert lines[-1].split() == ["echo", "0/3", "0/0/0", "closed", "0.0s", "0", "0"]
    gone = run_cli("status", match[1])
    assert gone.returncode == 1 and "error: cannot read" in gone.stderr


def test_a_bad_metrics_listen_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = run_cli("start", str(path), "--metrics-listen", "here")
    assert result.returncode == 2
    assert "error: --metrics-listen: expected host:port" in result.stderr
