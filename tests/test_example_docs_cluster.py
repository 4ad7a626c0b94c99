"""The documentation example on three nodes (supervisors/docs_cluster.yaml),
run as its README says: three ``python -m runtime start ... --node NAME``
processes on this machine, against NATS and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clusterkit import log_events
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import require_nats, unique
from tests.test_example_docs import assert_document

REPO = Path(__file__).resolve().parent.parent
SECTIONS = 12


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
def test_three_nodes_write_the_document_together(tmp_path: Path) -> None:
    """The units spread over the three nodes; the planner on one asks the
    writers' pool and the merger across nodes; the document is complete."""
    require_postgres()
    output = tmp_path / "docs.md"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "DATABASE_URL": POSTGRES_URL,
        "NATS_URL": require_nats(),
        "DOCS_CLUSTER_PREFIX": unique("docs"),
        "DOCS_OUTPUT": str(output),
        "DOCS_SECTIONS": str(SECTIONS),
        "DOCS_LEASE": "2s",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs = {node: tmp_path / f"{node}.log" for node in ("alpha", "beta", "gamma")}
    try:
        for node, log in logs.items():
            with log.open("wb") as out:
                command = [
                    sys.executable,
                    "-m",
                    "runtime",
                    "start",
                    "supervisors/docs_cluster.yaml",
                ]
                command += ["--node", node, "--log-format", "json", "--progress-interval", "0"]
                processes[node] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=out,
                )
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if output.exists() and output.read_text(encoding="utf-8").count("\n## ") == SECTIONS:
                break
            assert all(p.poll() is None for p in processes.values()), _tails(logs)
            time.sleep(0.2)
        else:
            pytest.fail(f"no complete document in 45 s\n{_tails(logs)}")
        assert_document(output, SECTIONS)
        # The first node up may write the whole document before the others
        # join; once all three are live, placement gives each a unit.
        deadline = time.monotonic() + 30
        while _holders(logs) != set(logs) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _holders(logs) == set(logs), _tails(logs)  # alpha, beta, gamma: one unit each
    finally:
        for process in processes.values():
            process.terminate()
        for node, process in processes.items():
            try:
                assert process.wait(20) == 0, f"node {node}\n{_tails(logs)}"
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def _holders(logs: dict[str, Path]) -> set[str]:
    """The nodes whose logs say they acquired a unit."""
    return {
        node
        for node, log in logs.items()
        for event in log_events(log)
        if event.get("event") == "unit_acquired"
    }


def _tails(logs: dict[str, Path]) -> str:
    return "\n".join(
        f"--- {node}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for node, log in logs.items()
    )
