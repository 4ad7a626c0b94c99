"""Three node processes of one cluster on this machine, for tests/test_cluster.py
and benchmarks/bench_cluster.py: each run has its own system, root, subject
and bucket prefix, so runs never share state on the servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from tests.servers import unique

REPO = Path(__file__).resolve().parent.parent


def log_events(log: Path) -> list[dict[str, object]]:
    """The JSON lines of a node's log file so far."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


class ClusterRun:
    """A topology of ``units`` Counter units, and its node processes."""

    def __init__(
        self,
        tmp_path: Path,
        nats_url: str,
        postgres_url: str,
        *,
        units: Iterable[str] = ("a", "b", "c", "d", "e", "f"),
        lease: float = 1.0,
        tick: float = 0.0,
        checkpoint: str = "message",
        mailbox: str = "",
        actor: str = "tests.cluster_app:Counter",
        args: str = "",
        tracing: bool = False,
    ) -> None:
        self.tmp_path = tmp_path
        self.name = unique("cl")
        self.root = unique("root")
        self.units = list(units)
        self.lease = lease
        extra = f", mailbox: {mailbox}" if mailbox else ""
        arguments = args or f"{{tick: {tick}}}"
        children = "\n".join(
            f"    - {{name: {unit}, actor: '{actor}', checkpoint: {checkpoint},"
            f" args: {arguments}{extra}}}"
            for unit in self.units
        )
        self.topology = tmp_path / "cluster.yaml"
        self.topology.write_text(
            f"system: {self.name}\n"
            f"store: {json.dumps(postgres_url)}\n"
            f"cluster:\n  nats: {nats_url}\n  lease: {lease}s\n  prefix: {self.name}\n"
            + ("metrics:\n  tracing: true\n" if tracing else "")
            + f"supervisor:\n  name: {self.root}\n  children:\n{children}\n"
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def path(self, unit: str) -> str:
        return f"{self.root}/{unit}"

    def log_file(self, node: str) -> Path:
        return self.tmp_path / f"{node}.log"

    def start(self, node: str) -> None:
        env = dict(os.environ)
        env["RUNTIME_TEST_NODE"] = node
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
        log = open(self.log_file(node), "ab")  # noqa: SIM115 (the process keeps it)
        command = [sys.executable, "-m", "runtime", "start", str(self.topology)]
        command += ["--node", node, "--log-format", "json", "--progress-interval", "0"]
        self.processes[node] = subprocess.Popen(
            command, stdout=log, stderr=log, cwd=self.tmp_path, env=env
        )
        log.close()

    def signal(self, node: str, signum: int) -> None:
        self.processes[node].send_signal(signum)

    def stop(self, node: str, timeout: float = 20) -> int:
        process = self.processes[node]
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout)

    def stop_all(self) -> None:
        for node in list(self.processes):
            self.stop(node)

    def events(self, node: str) -> list[dict[str, object]]:
        """The JSON log lines of ``node`` so far."""
        return log_events(self.log_file(node))

    def running_copies(self) -> dict[str, list[str]]:
        """For each unit, the nodes whose logs say it runs there now."""
        copies: dict[str, list[str]] = {unit: [] for unit in self.units}
        for node in self.processes:
            held: set[str] = set()
            for event in self.events(node):
                unit = str(event.get("unit"))
                if event.get("event") == "unit_acquired":
                    held.add(unit)
                elif event.get("event") in ("unit_released", "unit_lost"):
                    held.discard(unit)
            for unit in held:
                copies[unit].append(node)
        return copies
