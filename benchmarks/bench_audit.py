"""How fast ``python -m runtime audit`` reads code: lines of Python per
second of the audit's own rules (ruff left out), beside ``ruff check
--select ASYNC`` over the same files in the same run.

The corpus is real, installed code: the standard library's ``asyncio`` and
the sources of trio, anyio, httpx and this runtime (``asyncio`` alone in
quick mode). An audit that a CI job runs on every change has to keep up
with the linter next to it; the target is 20,000 lines a second. ruff is
written in Rust and uses every core, the audit is Python's ``ast`` on one,
so the ratio says what the audit costs beside ruff, not that they compete.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trio

import runtime
from runtime._audit import audit
from runtime._audit.ruff import find_ruff
from runtime._audit.scan import source_files

from ._measure import repeat

TARGET = 20_000  # lines of Python per second


def _corpus(quick: bool) -> list[str]:
    modules = [asyncio] if quick else [asyncio, trio, anyio, httpx, runtime]
    return [str(Path(module.__file__).parent) for module in modules]


def _audit_rate(paths: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    result = audit(paths, use_ruff=False)
    return result.lines / (time.perf_counter() - start), result.lines


def _ruff_rate(binary: str, files: list[str], lines: int) -> float:
    command = [binary, "check", "--select", "ASYNC", "--output-format", "json"]
    command += ["--no-cache", "--no-fix", "--exit-zero", "--quiet", "--", *files]
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, timeout=600)
    return lines / (time.perf_counter() - start)


def test_audit_lines_per_second(bench: Any, quick: bool) -> None:
    """The audit's rules against ruff's ASYNC rules on the same files,
    interleaved; target: at least 20,000 lines a second."""
    paths = _corpus(quick)
    python, _ = source_files(paths)
    binary = find_ruff()
    times = 1 if quick else 5
    audits: list[float] = []
    ruffs: list[float] = []
    lines = 0

    def both() -> float:
        nonlocal lines
        rate, lines = _audit_rate(paths)
        audits.append(rate)
        if binary is not None:
            ruffs.append(_ruff_rate(binary, python, lines))
        return rate

    both()  # the warm-up, left out of both figures
    ruffs.clear()
    figure, spread = repeat(both, times, warmup=0)
    ruffs.sort()
    bench.record(
        f"audit over {len(python)} files ({lines:,} lines), no ruff",
        figure,
        "lines/s",
        baseline=ruffs[len(ruffs) // 2] if ruffs else None,
        baseline_name="ruff --select ASYNC",
        spread=spread,
        target=f">= {TARGET:,} lines/s",
        met=figure >= TARGET,
    )
    if binary is None:
        pytest.skip("ruff is not installed: the audit's figure has no baseline")
