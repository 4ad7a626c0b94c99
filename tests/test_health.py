"""Health tells the truth: a resource that never came up, or whose circuit
is open, and an actor whose circuit is open, show in ``/healthz`` (degraded),
``/readyz`` (not ready), ``/status``, ``runtime status`` and the summary of
``runtime start``, each with its reason; ``runtime validate`` reports what
the environment lacks for a resource to start, with the file's line.

Endpoint tests talk HTTP over loopback under ``loopback_clock``; the
command line runs in-process through ``main(argv)`` or as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

import runtime
from runtime import ChildSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from runtime._cli import EndSnapshot, _summary, main
from runtime._endpoint import health_answer, ready_answer
from runtime._health import Health, Problem, resource_problems
from runtime._limiter import LimiterStatistics
from runtime._resource import ResourceStatistics
from runtime._status import format_status
from runtime.errors import ActorFailed, CircuitOpen
from runtime.resources.llm import LLM, LLMOptions
from runtime.resources.mcp import MCP, MCPOptions
from tests.actorkit import Add, Counter, Crash
from tests.clikit import run_cli
from tests.resource_kinds import Backend, Echo, Ping

REPO = Path(__file__).resolve().parent.parent
UNSET = "RUNTIME_TEST_UNSET_KEY"  # an environment variable no test sets
NO_KEY_ERROR = f"ResourceError('llm: the environment variable {UNSET} (api_key_env) is not set')"
JSON = {"accept": "application/json"}


async def _get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, headers=headers, timeout=10)


@pytest.fixture(autouse=True)
def _unset_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)


# -- the decisions ---------------------------------------------------------------


def _stats(**fields: Any) -> ResourceStatistics:
    limiter = LimiterStatistics(
        tokens_in_use=0,
        max_concurrency=2,
        waiting={"high": 0, "normal": 0, "low": 0},
        admitted=0,
        rejected=0,
        in_window=0,
        rate=None,
        paused_for=0.0,
        breaker=fields.pop("breaker", "closed"),
    )
    base: dict[str, Any] = {
        "name": "llm",
        "kind": "runtime.resources.llm:LLM",
        "status": "running",
        "circuit": "closed",
        "limiter": limiter,
        "requests": 0,
        "failures": 0,
        "backend": {},
        "up": True,
        "came_up": True,
    }
    return ResourceStatistics(**(base | fields))


@pytest.mark.parametrize(
    ("fields", "lines"),
    [
        ({}, []),
        ({"status": "starting", "up": False, "came_up": False}, ["resource llm: starting"]),
        (
            {
                "status": "circuit_open",
                "circuit": "open",
                "up": False,
                "came_up": False,
                "last_failure": "ResourceError('no key')",
            },
            ["resource llm: never came up: ResourceError('no key')"],
        ),
        (
            {"status": "starting", "up": False, "last_failure": "OSError('gone')"},
            ["resource llm: restarting: OSError('gone')"],
        ),
        (
            {"status": "circuit_open", "circuit": "open", "up": False, "last_failure": "E()"},
            ["resource llm: circuit open: E()"],
        ),
        (
            {"circuit": "half_open", "last_failure": "E()"},
            ["resource llm: circuit half-open (on trial): E()"],
        ),
        ({"breaker": "open"}, ["resource llm: backend breaker open"]),
        (
            {"breaker": "open", "backend_failure": "TimeoutError()"},
            ["resource llm: backend breaker open: TimeoutError()"],
        ),
    ],
    ids=[
        "ok",
        "first-start",
        "never-came-up",
        "restarting",
        "circuit-open",
        "half-open",
        "backend-breaker",
        "backend-breaker-reason",
    ],
)
def test_resource_problems_say_what_is_wrong_and_why(
    fields: dict[str, Any], lines: list[str]
) -> None:
    """One line per problem of a resource, with the failure that explains it."""
    assert [problem.line for problem in resource_problems(_stats(**fields))] == lines


def test_answers_for_ok_degraded_and_down() -> None:
    """/healthz: 200 while running (the state word when all is well, the
    document when degraded), 503 otherwise; /readyz: 200 only when running
    with no problem. Asking for JSON always gets the document."""
    problem = (Problem("actor", "root/a", "circuit_open", "RuntimeError('boom')"),)
    ok, degraded = Health("running"), Health("running", problem)
    starting = Health("starting", problem)
    assert (ok.status, degraded.status, starting.status) == ("ok", "degraded", "starting")
    assert health_answer(ok, json_asked=False) == (200, "running")
    assert health_answer(ok, json_asked=True) == (200, None)
    assert health_answer(degraded, json_asked=False) == (200, None)
    assert health_answer(starting, json_asked=False) == (503, "starting")
    assert ready_answer(ok, json_asked=False) == (200, "ready")
    assert ready_answer(degraded, json_asked=False) == (503, None)
    assert ready_answer(Health("stopping"), json_asked=False) == (503, None)
    assert degraded.as_dict()["problems"] == [
        {
            "kind": "actor",
            "name": "root/a",
            "condition": "circuit_open",
            "reason": "RuntimeError('boom')",
            "message": "actor root/a: circuit open: RuntimeError('boom')",
        }
    ]


# -- the endpoint ------------------------------------------------------------------


def _no_key_topology(*children: ChildSpec) -> Topology:
    return Topology(
        system="health",
        metrics={"listen": "127.0.0.1:0"},
        resources={
            "llm": ResourceSpec(kind="llm", options={"provider": "openai", "api_key_env": UNSET})
        },
        supervisor=SupervisorSpec(name="root", children=list(children)),
    )


def _echo_topology(backend: Backend, *children: ChildSpec) -> Topology:
    return Topology(
        system="health",
        metrics={"listen": "127.0.0.1:0"},
        resources={
            "echo": ResourceSpec(
                kind=Echo,
                options={"backend": backend},
                retry=None,
                circuit_breaker={"failures": 2, "reset_timeout": 60},
            )
        },
        supervisor=SupervisorSpec(name="root", children=list(children)),
    )


async def test_all_well_is_running_and_ready(loopback_clock: trio.abc.Clock) -> None:
    """A system with nothing wrong: /healthz ``running`` (or the document,
    status ``ok``, when JSON is asked for), /readyz ``ready``."""
    with trio.fail_after(20):
        async with open_system(_echo_topology(Backend()), store="memory://") as system:
            url = system.endpoint_url
            health = await _get(f"{url}/healthz")
            as_json = await _get(f"{url}/healthz", JSON)
            ready = await _get(f"{url}/readyz")
            ready_json = await _get(f"{url}/readyz", JSON)
    assert (health.status_code, health.text) == (200, "running\n")
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == {
        "system": "health",
        "status": "ok",
        "state": "running",
        "ready": True,
        "problems": [],
        "warnings": [],
    }
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert ready_json.json()["ready"] is True


async def test_a_resource_that_never_came_up_is_degraded_and_not_ready(
    loopback_clock: trio.abc.Clock,
) -> None:
    """An llm resource whose api_key_env is not set never starts: the system
    runs, /healthz answers 200 degraded naming it and the reason, /readyz
    503 with the same, and /status has its last failure."""
    with trio.fail_after(20):
        async with open_system(_no_key_topology(), store="memory://") as system:
            await trio.sleep(1)  # a few failed starts
            url = system.endpoint_url
            health = await _get(f"{url}/healthz")
            ready = await _get(f"{url}/readyz")
            status = (await _get(f"{url}/status")).json()
    assert health.status_code == 200
    assert health.headers["content-type"] == "application/json"
    document = health.json()
    assert (document["status"], document["state"], document["ready"]) == (
        "degraded",
        "running",
        False,
    )
    assert document["problems"] == [
        {
            "kind": "resource",
            "name": "llm",
            "condition": "never_came_up",
            "reason": NO_KEY_ERROR,
            "message": f"resource llm: never came up: {NO_KEY_ERROR}",
        }
    ]
    assert ready.status_code == 503
    assert ready.json()["problems"] == document["problems"]
    assert status["health"]["problems"] == document["problems"]
    node = status["resources"]["children"][0]
    assert (node["path"], node["last_failure"]) == ("resources/llm", NO_KEY_ERROR)
    llm = status["limiters"]["llm"]
    assert (llm["up"], llm["came_up"], llm["last_failure"]) == (False, False, NO_KEY_ERROR)


async def test_a_backend_breaker_degrades_health_until_it_closes(
    loopback_clock: trio.abc.Clock,
) -> None:
    """Two failed calls open the echo resource's backend breaker: degraded,
    not ready, and the summary says so; after reset_timeout a successful
    trial closes it: running and ready again."""
    backend = Backend(failing="transient")
    with trio.fail_after(200):
        async with open_system(_echo_topology(backend), store="memory://") as system:
            url = system.endpoint_url
            echo = system.resource("echo")
            for n in range(2):
                with pytest.raises(ConnectionResetError):
                    await echo.ask(Ping(n))
            with pytest.raises(CircuitOpen):
                await echo.ask(Ping(2))
            health = await _get(f"{url}/healthz")
            ready = await _get(f"{url}/readyz")
            summary = io.StringIO()
            _summary(system, 1.0, summary, EndSnapshot.of(system))
            backend.failing = None
            await trio.sleep(61)
            half_open = (await _get(f"{url}/healthz")).json()
            assert await echo.ask(Ping(3)) == 3
            healed = await _get(f"{url}/healthz")
            healed_ready = await _get(f"{url}/readyz")
    assert health.status_code == 200
    assert [p["message"] for p in health.json()["problems"]] == [
        "resource echo: backend breaker open: ConnectionResetError('backend reset the connection')"
    ]
    assert ready.status_code == 503
    assert summary.getvalue().splitlines()[-1] == (
        "resource echo: backend breaker open: ConnectionResetError('backend reset the connection')"
    )
    assert [p["condition"] for p in half_open["problems"]] == ["backend_breaker_half_open"]
    assert (healed.status_code, healed.text) == (200, "running\n")
    assert (healed_ready.status_code, healed_ready.text) == (200, "ready\n")


async def test_an_actor_whose_circuit_opens_is_degraded_with_its_crash(
    loopback_clock: trio.abc.Clock,
) -> None:
    """An actor that crashes past its breaker's limit: /healthz names it and
    the crash; /status has the crash as its last failure; runtime status
    prints the problem, and the last failure of an actor that recovered."""
    counter = ChildSpec(
        name="counter",
        actor=Counter,
        circuit_breaker={"failures": 1, "reset_timeout": 60},
    )
    survivor = ChildSpec(name="survivor", actor=Counter)
    with trio.fail_after(20):
        async with open_system(
            _echo_topology(Backend(), counter, survivor), store="memory://"
        ) as system:
            url = system.endpoint_url
            with pytest.raises(ActorFailed):
                await system.ref("root/survivor").ask(Crash("once"))
            with pytest.raises(ActorFailed):
                await system.ref("root/counter").ask(Crash())
            await trio.testing.wait_all_tasks_blocked()
            assert await system.ref("root/survivor").ask(Add(1)) == 1  # restarted, running
            health = await _get(f"{url}/healthz")
            ready = await _get(f"{url}/readyz")
            document = (await _get(f"{url}/status")).json()
    assert health.status_code == 200
    assert [p["message"] for p in health.json()["problems"]] == [
        "actor root/counter: circuit open: RuntimeError('boom')"
    ]
    assert ready.status_code == 503
    nodes = {node["path"]: node for node in document["tree"]["children"]}
    assert nodes["root/counter"]["last_failure"] == "RuntimeError('boom')"
    assert nodes["root/survivor"]["last_failure"] == "RuntimeError('once')"
    text = format_status(document).splitlines()
    assert text[0] == "system 'health': running, degraded (0 dead letter(s))"
    assert text[-5:] == [
        "problems:",
        "  actor root/counter: circuit open: RuntimeError('boom')",
        "",
        "last failures:",
        "  root/survivor (running, 1 restart(s)): RuntimeError('once')",
    ]


async def test_readyz_is_503_while_the_system_stops(loopback_clock: trio.abc.Clock) -> None:
    """While the system stops (a resource request keeps it stopping), /readyz
    answers 503 with the state; /healthz keeps its one-word answer."""
    backend = Backend(delay=0.5)
    answers: list[tuple[str, int, str]] = []
    with trio.fail_after(20):
        async with (
            trio.open_nursery() as outside,
            open_system(_echo_topology(backend), store="memory://") as system,
        ):
            url = system.endpoint_url

            async def slow_request() -> None:
                await system.resource("echo").ask(Ping("late"))

            async def probe() -> None:
                await trio.sleep(0.2)
                for route in ("healthz", "readyz"):
                    response = await _get(f"{url}/{route}")
                    answers.append((route, response.status_code, response.text))

            outside.start_soon(slow_request)
            outside.start_soon(probe)
            await trio.testing.wait_all_tasks_blocked()
    (_, health_code, health_text), (_, ready_code, ready_text) = answers
    assert (health_code, health_text) == (503, "stopping\n")
    assert ready_code == 503
    assert json.loads(ready_text)["state"] == "stopping"


async def test_runtime_status_shows_a_resource_that_never_came_up(
    loopback_clock: trio.abc.Clock,
) -> None:
    """``runtime status``'s text for a /status document read over HTTP: the
    header says degraded, the problem has its own line."""
    with trio.fail_after(20):
        async with open_system(_no_key_topology(), store="memory://") as system:
            await trio.sleep(1)
            document = (await _get(f"{system.endpoint_url}/status")).json()
    lines = format_status(document).splitlines()
    assert lines[0] == "system 'health': running, degraded (0 dead letter(s))"
    assert lines[-2:] == ["problems:", f"  resource llm: never came up: {NO_KEY_ERROR}"]


# -- the environment checks ---------------------------------------------------------


def test_llm_checks_its_api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset or empty api_key_env variable is a problem; set, or none, is not."""
    assert [field for field, _ in LLM.check_environment(LLMOptions(api_key_env=UNSET))] == [
        "api_key_env"
    ]
    monkeypatch.setenv(UNSET, "")
    assert LLM.check_environment(LLMOptions(api_key_env=UNSET)) != []
    monkeypatch.setenv(UNSET, "sk-test")
    assert LLM.check_environment(LLMOptions(api_key_env=UNSET)) == []
    assert LLM.check_environment(LLMOptions(api_key_env=None)) == []
    assert LLM.check_environment(LLMOptions(provider="fake")) == []


def test_mcp_checks_its_command_and_variables() -> None:
    """A command not on PATH, and unset pass_env or headers_from_env
    variables, are problems; ``python`` is the running interpreter."""
    assert MCP.check_environment(MCPOptions(command=["python", "-m", "anything"])) == []
    assert MCP.check_environment(MCPOptions(command=[sys.executable])) == []
    problems = MCP.check_environment(
        MCPOptions(command=["runtime-test-no-such-server"], pass_env=[UNSET])
    )
    assert [field for field, _ in problems] == ["pass_env", "command"]
    assert f"not set: {UNSET}" in problems[0][1]
    assert "command 'runtime-test-no-such-server' not found" in problems[1][1]
    remote = MCPOptions(url="http://127.0.0.1:1/mcp", headers_from_env={"Authorization": UNSET})
    assert [field for field, _ in MCP.check_environment(remote)] == ["headers_from_env"]


@attrs.frozen
class TokenOptions:
    token_env: str = "RUNTIME_TEST_TOKEN"


class NeedsToken(runtime.Resource):
    """A user's kind with its own environment check."""

    Options = TokenOptions

    @classmethod
    def check_environment(cls, options: TokenOptions) -> list[tuple[str, str]]:
        if options.token_env in os.environ:
            return []
        return [("token_env", f"{options.token_env} is not set")]

    @runtime.handler
    async def ping(self, msg: Ping) -> Any:
        return msg.value


class BrokenCheck(runtime.Resource):
    """A user's kind whose environment check itself fails."""

    @classmethod
    def check_environment(cls, options: object) -> list[tuple[str, str]]:
        raise RuntimeError("cannot look")

    @runtime.handler
    async def ping(self, msg: Ping) -> Any:
        return msg.value


ENV_TOPOLOGY = f"""
system: env-checks
resources:
  llm:
    kind: llm
    provider: openai
    api_key_env: {UNSET}
  openai:
    kind: llm
  git: {{kind: mcp, command: [runtime-test-no-such-server, --repository, .]}}
  local: {{kind: mcp, command: [python, -m, tests.mcp_servers.sample_server]}}
  token: {{kind: "tests.test_health:NeedsToken"}}
  broken: {{kind: "tests.test_health:BrokenCheck"}}
supervisor:
  name: root
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_validate_reports_the_environment_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset key variables (given, or the provider's default), a server
    command not on PATH, a user kind's own check and one that fails: one
    ``file:line: field: message`` line each on stderr, exit 2."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RUNTIME_TEST_TOKEN", raising=False)
    path = _write(tmp_path, ENV_TOPOLOGY)
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:6", "resources.llm.api_key_env"],
        [f"{path}:7", "resources.openai.api_key_env"],  # not written: the entry's line
        [f"{path}:9", "resources.git.command"],
        [f"{path}:11", "resources.token.token_env"],
        [f"{path}:12", "resources.broken.kind"],
    ]
    assert lines[0].endswith(
        f"the environment variable {UNSET} is not set, so the resource cannot start: "
        "set it, or api_key_env: null for a server that takes no key"
    )
    assert "command 'runtime-test-no-such-server' not found" in lines[2]
    assert lines[3].endswith("RUNTIME_TEST_TOKEN is not set")
    assert "BrokenCheck.check_environment failed: RuntimeError('cannot look')" in lines[4]


def test_validate_no_env_checks_checks_the_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--no-env-checks``: the same file is valid (for another machine)."""
    path = _write(tmp_path, ENV_TOPOLOGY)
    assert main(["validate", str(path), "--no-env-checks"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: valid: system 'env-checks', 0 actor(s), 6 resource(s)\n"
    assert err == ""


# -- runtime start ---------------------------------------------------------------------


class Flaky(runtime.Resource):
    """Comes up, then loses its backend at once, every time: a crash loop."""

    async def on_start(self) -> None:
        self.ctx.nursery.start_soon(self._drop)

    async def _drop(self) -> None:
        await trio.sleep(0.01)
        raise ConnectionResetError("the backend dropped the connection")

    @runtime.handler
    async def ping(self, msg: Ping) -> Any:
        return msg.value


def _start(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``python -m runtime start PATH --until-idle OPTIONS`` from the repository root."""
    return run_cli("start", str(path), "--until-idle", *options, unset=[UNSET])


NO_KEY = f"""
system: degraded
resources:
  llm: {{kind: llm, provider: openai, api_key_env: {UNSET}}}
supervisor:
  name: root
  children:
    - {{name: echo, actor: "tests.sample_actors:Echo"}}
"""


@pytest.mark.parametrize("checks", [True, False], ids=["env-checks", "no-env-checks"])
def test_start_warns_and_summarises_a_resource_that_never_came_up(
    checks: bool, tmp_path: Path
) -> None:
    """``start`` warns on stderr about the unset key (unless
    ``--no-env-checks``), runs anyway, and its summary says the resource
    never came up, and why. Idle with that circuit open is not a success
    (exit 3: the summary goes to stderr)."""
    path = _write(tmp_path, NO_KEY)
    result = _start(path, *([] if checks else ["--no-env-checks"]), "--log-level", "error")
    assert result.returncode == 3, result.stderr
    warning = (
        f"warning: {path}:3: resources.llm.api_key_env: the environment variable {UNSET} "
        "is not set, so the resource cannot start"
    )
    assert (warning in result.stderr) is checks, result.stderr
    assert f"resource llm: never came up: {NO_KEY_ERROR}" in result.stderr.splitlines()


def test_start_summary_names_a_resource_whose_circuit_opened(tmp_path: Path) -> None:
    """A resource that comes up and crashes until its circuit opens: the
    summary, printed after the stop (which closes circuits), says it was
    open when the run ended, and why; idle with it open, the run exits 3."""
    path = _write(
        tmp_path,
        """
        system: crash-loop
        resources:
          flaky: {kind: "tests.test_health:Flaky"}
        supervisor:
          name: root
          children:
            - {name: echo, actor: "tests.sample_actors:Echo"}
        """,
    )
    result = _start(path, "--log-level", "error")
    assert result.returncode == 3, result.stderr
    assert "warning:" not in result.stderr  # nothing to say about the environment
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert lines[-1].startswith("idle with 1 circuit(s) open: resources/flaky (open)")
    assert "refused by the breaker (now open after crashes)" in lines[-3]
    assert lines[-2] == (
        "resource flaky: circuit open: ConnectionResetError('the backend dropped the connection')"
    )
