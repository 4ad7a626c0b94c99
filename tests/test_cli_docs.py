"""docs/cli.md says what the command line accepts and prints: every
command's usage, as argparse prints it, is one of the page's synopsis lines,
every option of ``start`` has a row in its table, and a metrics port in use
fails the start with the line the page shows."""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import pytest
import trio

import runtime
from runtime._cli import main
from tests.clikit import REPO, run_cli

CLI_DOC = REPO / "docs" / "cli.md"
COMMANDS = ["start", "validate", "run", "status", "audit"]


def _usage(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The usage argparse prints for ``argv --help``, on one line, without ``usage: ``."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out.split("\n\n", 1)[0]
    return " ".join(text.split()).removeprefix("usage: ")


def _synopses() -> set[str]:
    """The lines of the page's plain fenced blocks that start with the program."""
    blocks = re.findall(r"^```\n(.*?)^```", CLI_DOC.read_text(encoding="utf-8"), re.M | re.S)
    return {
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith("python -m runtime")
    }


def test_every_usage_is_a_synopsis_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The top synopsis and each command's own: word for word what argparse prints."""
    synopses = _synopses()
    for argv in [(), *((command,) for command in COMMANDS)]:
        usage = _usage(capsys, *argv)
        assert usage in synopses, f"docs/cli.md has no synopsis line {usage!r}"
    assert len(synopses) == len(COMMANDS) + 1  # nothing documented that argparse lacks


def test_every_start_option_has_a_row(capsys: pytest.CaptureFixture[str]) -> None:
    """Each option in ``start``'s usage, with its metavar or choices, heads a table row."""
    usage = _usage(capsys, "start")
    rows = {
        line.split("|")[1].strip()
        for line in CLI_DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `-")
    }
    for option in re.findall(r"\[(--[^\]]+)\]", usage):
        assert f"`{option}`" in rows, f"docs/cli.md: no row for {option!r}"
    assert "`-h`, `--help`" in rows


def _documented_port_in_use_line() -> str:
    """The line docs/cli.md shows under "A metrics port in use"."""
    section = CLI_DOC.read_text(encoding="utf-8").split("### A metrics port in use", 1)[1]
    found = re.search(r"^```text\n(error: metrics endpoint: .*)\n```", section, re.M)
    assert found is not None, "docs/cli.md: no example line under 'A metrics port in use'"
    return found.group(1)


def test_a_metrics_port_in_use_fails_with_the_documented_line(tmp_path: Path) -> None:
    """A real socket holds the port; ``start --metrics-listen`` on it exits 1
    with exactly the documented line on stderr (for that address) and starts
    nothing."""
    topology = tmp_path / "topology.yaml"
    topology.write_text("system: taken\nsupervisor: {name: root}\n", encoding="utf-8")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        command = ["start", str(topology), "--until-idle", "--metrics-listen", address]
        result = run_cli(*command, cwd=tmp_path)
    documented = _documented_port_in_use_line()
    operations = (REPO / "docs" / "operations" / "metrics.md").read_text(encoding="utf-8")
    assert documented in operations  # the operations page shows the same line
    expected = documented.replace("127.0.0.1:9464", address)
    assert (result.returncode, result.stderr, result.stdout) == (1, expected + "\n", "")


async def test_open_system_raises_the_same_line_with_the_errno() -> None:
    """In code the port in use is an OSError whose text is the documented
    line without ``error: `` and whose errno is EADDRINUSE."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        topology = runtime.Topology(system="taken", metrics={"listen": address})
        with trio.fail_after(10), pytest.raises(OSError) as info:
            async with runtime.open_system(topology, store="memory://"):
                pass  # pragma: no cover
    documented = _documented_port_in_use_line().removeprefix("error: ")
    assert str(info.value) == documented.replace("127.0.0.1:9464", address)
    assert info.value.errno == errno.EADDRINUSE
