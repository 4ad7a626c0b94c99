"""docs/cli.md says what the command line accepts: every command's usage, as
argparse prints it, is one of the page's synopsis lines, and every option of
``start`` has a row in its table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime._cli import main

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COMMANDS = ["start", "validate", "status"]


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
