"""Blocking calls in coroutines, and trio/anyio checkpoint rules, come from
ruff's ``ASYNC`` rules (flake8-async), run as a subprocess and merged under
their own ids rather than written again."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from .rules import Finding

__all__ = ["RUFF_BATCH", "RUFF_TIMEOUT", "RuffFailed", "find_ruff", "run_ruff"]

RUFF_BATCH = 2_000
"""Files per ruff invocation, to stay well under the command line's limit."""

RUFF_TIMEOUT = 600.0
"""Seconds one ruff invocation may take before the audit gives up on it."""


class RuffFailed(Exception):
    """ruff could not be run or did not answer with findings."""


def find_ruff() -> str | None:
    """The ruff binary: the one the ``ruff`` package installed, else the one
    on PATH; None when there is none."""
    for module in ("ruff", "ruff.__main__"):
        try:
            finder: Callable[[], str] = importlib.import_module(module).find_ruff_bin
            return os.fsdecode(finder())
        except (ImportError, AttributeError, FileNotFoundError):
            continue
    return shutil.which("ruff")


def run_ruff(binary: str, files: Sequence[str], lines: Callable[[str], list[str]]) -> list[Finding]:
    """ruff's ``ASYNC`` findings in ``files``; ``lines`` gives a file's lines
    (for each finding's source text).

    The project's ruff configuration applies (its ``noqa`` comments and
    per-file ignores), but ruff never fixes anything and keeps no cache.

    Raises:
        RuffFailed: ruff is missing, failed, or printed something else than
            its JSON report.
    """
    findings: list[Finding] = []
    for start in range(0, len(files), RUFF_BATCH):
        batch = files[start : start + RUFF_BATCH]
        findings.extend(_findings(_run(binary, batch), batch, lines))
    return findings


def _run(binary: str, files: Sequence[str]) -> list[dict[str, Any]]:
    command = [
        binary,
        "check",
        "--select",
        "ASYNC",
        "--output-format",
        "json",
        "--no-fix",
        "--no-cache",
        "--exit-zero",
        "--quiet",
        "--",
        *files,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=RUFF_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuffFailed(f"{binary}: {exc}") from None
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()
        raise RuffFailed(f"{binary} exited with {result.returncode}: {' '.join(reason[-1:])}")
    try:
        report = json.loads(result.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise RuffFailed(f"{binary} did not print JSON: {exc}") from None
    if not isinstance(report, list):
        raise RuffFailed(f"{binary} printed {type(report).__name__}, not a list of findings")
    return report


def _findings(
    report: list[dict[str, Any]], files: Sequence[str], lines: Callable[[str], list[str]]
) -> list[Finding]:
    """ruff's entries as findings, named by the paths the audit was given."""
    named = {os.path.abspath(file): file for file in files}
    found = []
    for entry in report:
        code = entry.get("code")
        if not isinstance(code, str) or not code.startswith("ASYNC"):
            continue  # syntax errors (code None) are the audit's own RT001
        filename = str(entry.get("filename", ""))
        path = named.get(os.path.abspath(filename), filename)
        location = entry.get("location") or {}
        row = int(location.get("row") or 1)
        text = lines(path)
        source = text[row - 1] if 0 < row <= len(text) else ""
        hint = f"see {entry['url']}" if entry.get("url") else "see ruff's documentation"
        found.append(
            Finding(
                path,
                row,
                int(location.get("column") or 1),
                code,
                str(entry.get("message", "")),
                hint,
                source,
                tool="ruff",
            )
        )
    return found
