"""The benchmark harness: quick/full mode, records, the results file and the summary.

Each benchmark measures its figure and a baseline in the same run, records
both with ``record``, and never asserts a time. ``pytest benchmarks`` runs
the full workloads (the figures to quote); ``pytest benchmarks --quick`` (or
``RUNTIME_BENCH_QUICK=1``) shrinks every workload so the whole suite proves it
works in seconds.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import structlog
from tests import postgres_session

RESULTS = Path(__file__).parent / "results"
_records: list[dict[str, Any]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        default=os.environ.get("RUNTIME_BENCH_QUICK") == "1",
        help="shrink every workload (also RUNTIME_BENCH_QUICK=1); figures are not comparable",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Benchmarks measure the runtime, not the log renderer: events are dropped.
    structlog.configure(
        processors=[],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    config.addinivalue_line("markers", "peer: compares with another actor framework")


@pytest.fixture(scope="session")
def quick(pytestconfig: pytest.Config) -> bool:
    """True in quick mode."""
    return bool(pytestconfig.getoption("--quick"))


def _versions() -> dict[str, str]:
    names = ("trio-actor-runtime", "trio", "attrs", "cattrs", "pykka", "thespian")
    found: dict[str, str] = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
    }


class Recorder:
    """Collects the figures of one benchmark session."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def record(
        self,
        name: str,
        figure: float,
        unit: str,
        *,
        baseline: float | None = None,
        baseline_name: str = "raw trio",
        higher_is_better: bool = True,
        spread: tuple[float, float] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Record one figure beside its baseline from the same run.

        ``ratio`` is figure / baseline, so above 1 means more than the
        baseline: better for throughput, worse for latency or memory.
        """
        entry: dict[str, Any] = {
            "name": name,
            "figure": figure,
            "unit": unit,
            "baseline": baseline,
            "baseline_name": baseline_name if baseline is not None else None,
            "ratio": (figure / baseline) if baseline else None,
            "higher_is_better": higher_is_better,
            "spread": list(spread) if spread else None,
            "mode": self.mode,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": _versions(),
            "machine": _machine(),
            **extra,
        }
        _records.append(entry)
        print(f"\n{_line(entry)}")
        return entry


@pytest.fixture(scope="session")
def bench(quick: bool) -> Iterator[Recorder]:
    """Record figures; written to benchmarks/results/ when the session ends."""
    yield Recorder("quick" if quick else "full")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value / 1e6:.3f} M msg/s" if value >= 1e5 else f"{value:,.0f} msg/s"
    if unit == "s":
        return f"{value * 1e6:.1f} µs" if value < 1e-2 else f"{value:.3f} s"
    if unit == "lines/s":
        return f"{value:,.0f} lines/s"
    if unit == "B":
        return f"{value / 1024:.2f} KiB"
    return f"{value:.3g} {unit}"


def _line(entry: dict[str, Any]) -> str:
    figure = _fmt(entry["figure"], entry["unit"])
    if entry["spread"] and entry["spread"][0] != entry["spread"][1]:
        low, high = (_fmt(value, entry["unit"]) for value in entry["spread"])
        figure = f"{figure} [{low} .. {high}]"
    if entry["baseline"] is None:
        return f"{entry['name']:<44} {figure:>40}"
    baseline = _fmt(entry["baseline"], entry["unit"])
    ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}"
    return (
        f"{entry['name']:<44} {figure:>40}   {entry['baseline_name']}: {baseline:>16}"
        f"   ratio {ratio}"
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    postgres_session.drop()  # the PostgreSQL benchmarks' own schema, if they made one
    if not _records:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(_records, indent=2) + "\n")
    with (RESULTS / "history.jsonl").open("a") as history:
        for entry in _records:
            history.write(json.dumps(entry) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _records:
        return
    terminalreporter.section(f"benchmark figures ({_records[0]['mode']} mode)")
    for entry in _records:
        terminalreporter.write_line(_line(entry))
    terminalreporter.write_line(f"written to {RESULTS / 'latest.json'}")
