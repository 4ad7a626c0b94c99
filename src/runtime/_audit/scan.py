"""Walking the paths given, auditing each file, merging ruff's findings and
dropping those an ignore comment silences."""

from __future__ import annotations

import os
import shutil
import time
import tokenize
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from .pychecks import check_python
from .ruff import RuffFailed, find_ruff, run_ruff
from .rules import Finding, is_ignored
from .topology import check_topology, is_topology

__all__ = ["SKIPPED_DIRS", "AuditResult", "audit", "display_path", "read_source", "source_files"]

SKIPPED_DIRS = frozenset(
    {
        "__pycache__",
        "node_modules",
        "venv",
        "site-packages",
        "build",
        "dist",
        "__pypackages__",
    }
)
"""Directories not walked into (besides every hidden one: .git, .venv, .tox, ...)."""

_PYTHON = (".py",)
_YAML = (".yaml", ".yml")


@attrs.frozen
class AuditResult:
    """What an audit found.

    Attributes:
        findings: every finding not silenced by an ignore comment, in file
            and line order.
        files: the files read (Python and topology).
        lines: the lines of Python read.
        seconds: the time the audit took, ruff included.
        ruff: ``ran``, ``off``, or why it did not run.
    """

    findings: tuple[Finding, ...]
    files: int
    lines: int
    seconds: float
    ruff: str


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when below it, with ``/``."""
    text = os.fspath(path)
    absolute = os.path.abspath(text)
    here = os.getcwd()
    if absolute == here or absolute.startswith(here + os.sep):
        text = os.path.relpath(absolute, here)
    return Path(text).as_posix()


def source_files(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """The Python and YAML files at ``paths``: files as given, directories
    walked (hidden and ``SKIPPED_DIRS`` directories left out), each sorted.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    python: list[str] = []
    yaml_files: list[str] = []
    for path in paths:
        if os.path.isfile(path):
            (yaml_files if path.endswith(_YAML) else python).append(display_path(path))
            continue
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        for directory, subdirectories, names in os.walk(path):
            subdirectories[:] = sorted(
                name
                for name in subdirectories
                if not name.startswith(".") and name not in SKIPPED_DIRS
            )
            for name in sorted(names):
                if name.endswith(_PYTHON):
                    python.append(display_path(os.path.join(directory, name)))
                elif name.endswith(_YAML):
                    yaml_files.append(display_path(os.path.join(directory, name)))
    return _unique(python), _unique(yaml_files)


def _unique(paths: list[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def read_source(path: str) -> str:
    """The text of ``path``, decoded as Python decodes source (UTF-8, or the
    encoding its coding comment names); undecodable bytes replaced."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        encoding, _ = tokenize.detect_encoding(iter(data.splitlines(keepends=True)).__next__)
        return data.decode(encoding, errors="replace")
    except (SyntaxError, LookupError):
        return data.decode("utf-8", errors="replace")


def audit(paths: Sequence[str], *, ruff: str | None = None, use_ruff: bool = True) -> AuditResult:
    """Audit the Python and topology files at ``paths``.

    Args:
        paths: files and directories.
        ruff: the ruff binary; None finds it (``find_ruff``).
        use_ruff: False leaves ruff's ``ASYNC`` rules out.

    Raises:
        FileNotFoundError: a path does not exist.
        OSError: a file could not be read.
    """
    started = time.perf_counter()
    python, yaml_files = source_files(paths)
    texts: dict[str, list[str]] = {}
    findings: list[Finding] = []
    lines = 0
    for path in python:
        text = read_source(path)
        lines += text.count("\n") + (not text.endswith("\n") and bool(text))
        found = check_python(path, text)
        if found:
            texts[path] = text.splitlines()
            findings.extend(found)
    topologies = 0
    for path in yaml_files:
        text = read_source(path)
        topology = check_topology(path, text) if is_topology(text) else None
        if topology is not None:
            topologies += 1
            findings.extend(topology)
    status = "off"
    if use_ruff and python:
        status, merged = _ruff(ruff, python, texts)
        findings.extend(merged)
    kept = sorted(
        (finding for finding in findings if not is_ignored(finding)),
        key=lambda f: (f.path, f.line, f.col, f.rule),
    )
    return AuditResult(
        tuple(kept), len(python) + topologies, lines, time.perf_counter() - started, status
    )


def _ruff(
    binary: str | None, files: list[str], texts: dict[str, list[str]]
) -> tuple[str, list[Finding]]:
    binary = binary or find_ruff()
    if binary is None or shutil.which(binary) is None:
        return "not installed", []

    def lines(path: str) -> list[str]:
        if path not in texts:
            texts[path] = read_source(path).splitlines()
        return texts[path]

    try:
        return "ran", run_ruff(binary, files, lines)
    except RuffFailed as exc:
        return f"failed: {exc}", []
