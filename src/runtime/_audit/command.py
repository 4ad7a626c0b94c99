"""``python -m runtime audit``: its arguments, and the run from paths to a
report and an exit code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .baseline import BaselineError, compare, read_baseline, write_baseline
from .report import FORMATS, render
from .scan import audit

__all__ = ["EXIT_CLEAN", "EXIT_FINDINGS", "EXIT_USAGE", "add_audit_parser", "run_audit"]

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def add_audit_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` command to ``commands`` (argparse's subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "audit",
        help="find unbounded fan-out, queues and clients without timeouts in Python code",
        description=(
            "Scan Python files and topology files for the patterns behind unbounded-"
            "concurrency incidents: fan-out with no bound in reach, unbounded queues and "
            "channels, clients and calls with no timeout, deprecated asyncio APIs, dropped "
            "tasks, clients never closed, and topology resources with no timeout or rate. "
            "Blocking calls in coroutines come from ruff's ASYNC rules when ruff is "
            "installed. '# runtime: ignore[RT101]' on a line silences a rule there."
        ),
        epilog=(
            "Exit codes: 0 nothing new (no findings, or all in the baseline), 1 new findings, "
            "2 usage error (a path or baseline that cannot be read)."
        ),
    )
    parser.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        help="files and directories (Python and topology YAML; hidden, venv, "
        "site-packages, build and dist directories are not walked into)",
    )
    parser.add_argument(
        "--format",
        choices=tuple(FORMATS),
        default="text",
        help="report format (default: text)",
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="findings accepted earlier (--write-baseline): only findings not in it count",
    )
    parser.add_argument(
        "--write-baseline",
        metavar="FILE",
        help="write every finding to FILE as the new baseline, and exit 0",
    )
    parser.add_argument(
        "--output", metavar="FILE", help="write the report to FILE instead of stdout"
    )
    parser.add_argument(
        "--ruff",
        metavar="PATH",
        help="the ruff binary for the ASYNC rules (default: the ruff package's, or ruff on PATH)",
    )
    parser.add_argument("--no-ruff", action="store_true", help="leave ruff's ASYNC rules out")
    return parser


def run_audit(args: argparse.Namespace) -> int:
    """Run ``audit`` with its parsed arguments; returns the exit code."""
    try:
        baseline = read_baseline(args.baseline) if args.baseline else None
        result = audit(args.paths, ruff=args.ruff, use_ruff=not args.no_ruff)
    except (BaselineError, OSError) as exc:
        reason = f"no such file or directory: {exc}" if isinstance(exc, FileNotFoundError) else exc
        print(f"error: audit: {reason}", file=sys.stderr)
        return EXIT_USAGE
    if result.ruff == "not installed":
        print(
            "note: ruff is not installed, so its ASYNC rules (blocking calls in coroutines) "
            "were skipped; pip install ruff to include them",
            file=sys.stderr,
        )
    elif result.ruff not in {"ran", "off"}:
        print(f"note: ruff's ASYNC rules were skipped: ruff {result.ruff}", file=sys.stderr)
    comparison = compare(result.findings, baseline)
    report = render(args.format, result, comparison, baselined=baseline is not None)
    try:
        if args.write_baseline:
            write_baseline(args.write_baseline, result.findings)
        if args.output:
            Path(args.output).write_text(report, encoding="utf-8")
        else:
            sys.stdout.write(report)
    except OSError as exc:
        print(f"error: audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.write_baseline or not any(comparison.new):
        return EXIT_CLEAN
    return EXIT_FINDINGS
