"""A stand-in CI service for the PR review example, served over MCP (stdio).

Started by the ``ci`` resource of ``supervisors/pr_review.yaml`` as
``python -m actors.ci_server``; written with the ``mcp`` SDK's ``MCPServer``
like any tool server. It runs no real tests: it derives a deterministic
result from the pull request's diff, so the example runs offline and every
run of it ends the same way.

Tools:
    run_tests(pr, diff): run the suite against a pull request and return
        ``{"pr", "run", "passed", "failed", "seconds"}`` as structured
        content; ``failed`` lists the failing tests (empty: green).

The simulated suite:

- a diff that removes a line raising an exception breaks
  ``tests/test_validation.py`` on every run (the PR is red);
- a diff that touches ``src/net/`` meets the flaky
  ``tests/test_net.py::test_timeouts`` on its first run in this server
  process, and passes on the next ones (a retry turns it green);
- a run takes ``CI_TEST_SECONDS`` seconds (default 0.1);
- with ``CI_CRASH_ON_RUN=n`` (default 0: never) the process exits with
  code 1, answering nothing, when its ``n``-th run starts, as a CI service
  that falls over now and then: the ``ci`` resource is restarted with a new
  process and its callers see the failure.
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import anyio
from mcp.server.mcpserver import MCPServer

SUITE = (
    "tests/test_api.py::test_orders",
    "tests/test_api.py::test_pagination",
    "tests/test_net.py::test_timeouts",
    "tests/test_validation.py::test_rejects_bad_orders",
    "tests/test_reports.py::test_totals",
)
FLAKY = "tests/test_net.py::test_timeouts"
BROKEN_BY_REMOVED_RAISE = "tests/test_validation.py::test_rejects_bad_orders"

server = MCPServer("ci", version="1.0", log_level="WARNING", subscriptions=False)
_runs: Counter[int] = Counter()  # test runs per PR in this process


def _failures(diff: str, run: int) -> list[str]:
    """The tests that fail on the ``run``-th run (1 for the first) of ``diff``."""
    lines = diff.splitlines()
    failed = []
    if any(line.startswith("-") and "raise " in line for line in lines):
        failed.append(BROKEN_BY_REMOVED_RAISE)
    if run == 1 and any("src/net/" in line for line in lines if line.startswith("+++")):
        failed.append(FLAKY)
    return failed


@server.tool(description="Run the test suite against a pull request's diff.")
async def run_tests(pr: int, diff: str) -> dict[str, object]:
    seconds = float(os.environ.get("CI_TEST_SECONDS", "0.1"))
    _runs[pr] += 1
    if _runs.total() == int(os.environ.get("CI_CRASH_ON_RUN", "0")):
        sys.stderr.write(f"ci: crashing on run {_runs.total()}\n")
        sys.stderr.flush()
        os._exit(1)
    await anyio.sleep(seconds)
    failed = _failures(diff, _runs[pr])
    return {
        "pr": pr,
        "run": _runs[pr],
        "passed": len(SUITE) - len(failed),
        "failed": failed,
        "seconds": seconds,
    }


if __name__ == "__main__":
    server.run("stdio")
