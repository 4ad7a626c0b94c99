"""The parallel documentation example (supervisors/docs.yaml, actors/docs_writer.py).

The example runs end to end through ``python -m runtime start --until-idle``
as a user runs it. The limits are checked where they matter, at the backend:
the example's actors run in-process against a ``FakeLLM`` owned by the test,
behind an ``llm`` resource with exactly the limits of supervisors/docs.yaml,
and the fake's own records (each request's arrival, and what it was serving
at the time) are compared with ``max_concurrency`` and ``rate``. (With
``provider: fake`` the resource keeps its fake server to itself, so a CLI
run can only be checked through the resource's statistics.)
"""

from __future__ import annotations

import bisect
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio

from runtime import ActorSystem, MemoryStore, Topology, load_topology, open_system
from runtime.testing import FakeLLM, FakeRequest, Fault, fake_llm

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY = REPO / "supervisors" / "docs.yaml"
TIMEOUT = 60.0
SECTION = re.compile(r"^## (\d+)\. (.+)$", re.MULTILINE)


def run_docs(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the example through the CLI from the repository root, its store
    and document in ``tmp_path``."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", "start", "supervisors/docs.yaml", "--until-idle"],
        cwd=REPO,
        env={
            **os.environ,
            "DOCS_STORE": f"sqlite:///{tmp_path / 'docs.db'}",
            "DOCS_OUTPUT": str(tmp_path / "docs.md"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_document(path: Path, sections: int) -> None:
    """The document has every section once, in order, each with its own answer."""
    text = path.read_text(encoding="utf-8")
    numbers = [int(match[1]) for match in SECTION.finditer(text)]
    assert numbers == list(range(1, sections + 1))
    bodies = SECTION.split(text)[1:]
    for number, body in zip(numbers, bodies[2::3], strict=True):
        assert f"fake answer to: Write section {number} of {sections} " in body


def summary_number(pattern: str, stdout: str) -> float:
    """The number the first group of ``pattern`` finds in the command's output."""
    match = re.search(pattern, stdout, re.MULTILINE)
    assert match is not None, stdout
    return float(match[1])


def test_cli_writes_every_section_in_order(tmp_path: Path) -> None:
    """The default run: 50 sections through six writers and the llm resource,
    the injected writer failures retried, the document merged in order, and
    the run ends by itself with exit 0."""
    result = run_docs(tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("started 'docs' from supervisors/docs.yaml; checkpoint store: sqlite:///")
    assert re.search(r"^summary: 8 actor\(s\), \d+ message\(s\) handled, ", out, re.M), out
    # Sections 20 and 40 fail on their first attempt (fail_every: 20).
    retried = summary_number(r"^items: 50/50 done, (\d+) retried$", out)
    assert retried >= 2
    llm = re.search(
        r"^resource llm: (\d+) request\(s\), (\d+) failed, (\d+) retried, "
        r"0 refused by the breaker \(now closed\), [\d.]+s waited for admission$",
        out,
        re.MULTILINE,
    )
    assert llm is not None, out
    requests, failed, retried_at_resource = (int(group) for group in llm.groups())
    # Each section was answered once; writers that fail on purpose do so
    # before calling the model, and the fake's seeded 429s were retried.
    assert requests - failed == 50
    assert retried_at_resource >= 1
    assert_document(tmp_path / "docs.md", 50)
    assert '"event": "document_merged"' in result.stderr
    assert str(tmp_path / "docs.md") in result.stderr  # the log says where the document is
    # The backend (the fake server inside the resource) never saw more than
    # max_concurrency at once nor more than the rate in a window.
    seen = next(
        json.loads(line)
        for line in result.stderr.splitlines()
        if '"event": "llm_limits_seen"' in line
    )
    assert 1 <= seen["peak_in_flight"] <= 4
    assert 1 <= seen["most_in_rate_window"] <= 60


def test_cli_rate_variant_waits_for_the_window(tmp_path: Path) -> None:
    """With the rate lowered to 10 per 2 s, 30 sections need three windows:
    the run cannot end before 4 s, and requests waited for admission."""
    result = run_docs(
        tmp_path,
        DOCS_SECTIONS="30",
        DOCS_RATE_REQUESTS="10",
        DOCS_RATE_PERIOD="2s",
        DOCS_FAKE_429="0",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^items: 30/30 done, \d+ retried$", out, re.M), out
    assert summary_number(r"^resource llm: (\d+) request\(s\), 0 failed, 0 retried, ", out) == 30
    assert summary_number(r", ([\d.]+)s elapsed$", out) >= 4.0
    assert summary_number(r", ([\d.]+)s waited for admission$", out) > 0
    assert_document(tmp_path / "docs.md", 30)


@attrs.define
class Recorder:
    """A responder for the fake that answers like ``provider: fake`` (latency,
    jitter, seeded 429s) and counts the requests it is serving at once."""

    latency: float
    jitter: float
    rate_limit_probability: float
    retry_after: float
    seed: int
    serving: int = 0
    peak: int = 0
    refused: int = 0
    random: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.random = random.Random(self.seed)

    async def __call__(self, request: FakeRequest) -> str | Fault:
        self.serving += 1
        self.peak = max(self.peak, self.serving)
        try:
            if self.random.random() < self.rate_limit_probability:
                self.refused += 1
                return Fault(status=429, retry_after=self.retry_after)
            await trio.sleep(self.latency + self.random.uniform(0.0, self.jitter))
            return f"fake answer to: {request.prompt}"
        finally:
            self.serving -= 1


def behind_the_example_limits(topology: Topology, server: FakeLLM) -> Topology:
    """The example's topology with its ``llm`` resource pointed at ``server``,
    every limit kept as supervisors/docs.yaml declares it."""
    llm = topology.resources["llm"]
    spec = server.resource_spec(
        "openai",
        max_concurrency=llm.max_concurrency,
        rate=llm.rate,
        timeout=llm.timeout,
        retry=llm.retry,
        circuit_breaker=llm.circuit_breaker,
    )
    return attrs.evolve(topology, resources={"llm": spec})


def most_in_any_window(times: list[float], period: float) -> int:
    """The most arrivals in any window ``[t, t + period)`` (it suffices to
    start the windows at arrivals)."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + period) - i for i, t in enumerate(times))


async def run_in_process(topology: Topology, store: str | MemoryStore) -> ActorSystem:
    """Run the example until it is idle (as ``--until-idle`` does); the system it ran."""
    async with open_system(topology, store=store) as system:
        await system.wait_until_idle()
    return system


async def test_backend_never_sees_more_than_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback_clock: trio.abc.Clock
) -> None:
    """130 sections, more than two minutes' worth at 60 a minute, with one
    answer in ten a 429: the fake never serves more than 4 requests at once
    and never receives more than 60 in any 60 s, and both limits are reached."""
    monkeypatch.setenv("DOCS_SECTIONS", "130")
    monkeypatch.setenv("DOCS_OUTPUT", str(tmp_path / "docs.md"))
    topology = load_topology(TOPOLOGY)
    llm = topology.resources["llm"]
    fake = llm.options.fake
    recorder = Recorder(fake.latency, fake.latency_jitter, 0.1, fake.retry_after, seed=3)
    with trio.fail_after(3600):
        async with fake_llm(responder=recorder) as server:
            system = await run_in_process(behind_the_example_limits(topology, server), "memory://")
    assert llm.max_concurrency == 4
    assert llm.rate is not None
    assert (llm.rate.requests, llm.rate.period) == (60, 60.0)

    assert_document(tmp_path / "docs.md", 130)
    arrivals = [request.time for request in server.requests]
    assert len(arrivals) == 130 + recorder.refused  # every 429 was retried by the resource
    assert recorder.refused >= 5
    assert recorder.peak == 4
    assert most_in_any_window(arrivals, 60.0) == 60
    assert arrivals[-1] - arrivals[0] >= 120.0  # three windows' worth
    backend = system.resource_statistics()["llm"].backend
    assert backend["responses_429"] == recorder.refused
    assert backend["responses_2xx"] == 130


def sections_asked(requests: list[FakeRequest]) -> set[int]:
    """The section numbers the requests asked the model to write."""
    return {int(re.findall(r"Write section (\d+) of", request.prompt)[0]) for request in requests}


async def test_a_stopped_run_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loopback_clock: trio.abc.Clock
) -> None:
    """Stopped midway (as by Ctrl-C), the planner has checkpointed the sections
    written; the next start writes only the others and merges them all in order."""
    monkeypatch.setenv("DOCS_SECTIONS", "130")
    monkeypatch.setenv("DOCS_OUTPUT", str(tmp_path / "docs.md"))
    store = MemoryStore()  # outlives both systems, as a SQLite file outlives both processes
    topology = load_topology(TOPOLOGY)
    midway = trio.Event()

    def responder(request: FakeRequest) -> str:
        if len(server.requests) >= 70:
            midway.set()
        return f"fake answer to: {request.prompt}"

    with trio.fail_after(3600):
        async with fake_llm(latency=0.1, responder=responder) as server:
            example = behind_the_example_limits(topology, server)
            async with open_system(example, store=store):
                await midway.wait()
            first = sections_asked(server.requests)
            assert not (tmp_path / "docs.md").exists()
            del server.requests[:]
            await run_in_process(example, store)
            second = sections_asked(server.requests)

    assert_document(tmp_path / "docs.md", 130)
    assert len(second) <= 130 - 60
    assert first | second == set(range(1, 131))
