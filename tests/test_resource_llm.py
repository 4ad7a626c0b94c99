"""The llm resource against runtime.testing's fake LLM backend, over real
loopback HTTP: both wire formats, Retry-After, retries, the breaker,
permanent errors, timeouts, the token budget, key secrecy and provider: fake.

The fake server and the client run in the same trio run, so under virtual
time (``loopback_clock``, which jumps only once the sockets are quiet) a 7 s
Retry-After or a 60 s answer passes at once while the bytes still cross a
real socket.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import structlog.testing
import trio
import trio.lowlevel

import runtime
import runtime.testing
from runtime import ActorSystem, ResourceSpec, SupervisorSpec, Topology, open_system
from runtime.errors import CircuitOpen, ResourceError, TopologyError
from runtime.resources.llm import LLM, Chat, ChatResult, LLMOptions
from runtime.testing import FakeLLM, FakeRequest, Fault, Reply, fake_llm

KEY = "sk-test-3c9f1e7a5b2d8046"
KEY_ENV = "RUNTIME_TEST_LLM_KEY"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


@contextlib.asynccontextmanager
async def llm_system(
    server: FakeLLM, provider: Any = "openai", **fields: Any
) -> AsyncIterator[ActorSystem]:
    """A system whose one resource, ``llm``, talks to ``server``."""
    fields.setdefault("api_key_env", KEY_ENV)
    topology = Topology(
        system="llm",
        resources={"llm": server.resource_spec(provider, **fields)},
        supervisor=SupervisorSpec(name="root"),
    )
    async with open_system(topology, store="memory://") as system:
        yield system


def backend(system: ActorSystem) -> dict[str, float]:
    return system.resource_statistics()["llm"].backend


async def test_openai_wire_format(key: str, loopback_clock: trio.abc.Clock) -> None:
    """An OpenAI request carries the bearer key and the chat as OpenAI
    expects it (system prompt first, options filled in, extra fields);
    the answer's text, model, usage and finish reason are read back."""

    def responder(request: FakeRequest) -> Reply:
        return Reply(f"four, said {request.model}", input_tokens=12, output_tokens=3)

    with trio.fail_after(30):
        async with (
            fake_llm(api_key=KEY, responder=responder) as server,
            llm_system(server, model="gpt-test", temperature=0.5) as system,
        ):
            chat = Chat(
                [{"role": "user", "content": "2+2?"}],
                system="Be brief.",
                max_tokens=5,
                extra={"top_p": 0.9},
            )
            result = await system.resource("llm").ask(chat)
            assert backend(system)["responses_2xx"] == 1
            assert backend(system)["tokens_in_window"] == 15
    assert result == ChatResult("four, said gpt-test", "gpt-test", 12, 3, "stop")
    assert result.total_tokens == 15 and result.raw["object"] == "chat.completion"
    [request] = server.requests
    assert (request.method, request.path, request.wire) == (
        "POST",
        "/v1/chat/completions",
        "openai",
    )
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert "x-api-key" not in request.headers
    assert request.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2+2?"},
        ],
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
    }


async def test_anthropic_wire_format(key: str, loopback_clock: trio.abc.Clock) -> None:
    """An Anthropic request carries x-api-key and anthropic-version, moves
    system messages to ``system`` and always sends max_tokens; text blocks,
    usage and stop_reason (normalized) are read back."""
    with trio.fail_after(30):
        async with (
            fake_llm(api_key=KEY) as server,
            llm_system(server, "anthropic", model="claude-test") as system,
        ):
            llm = system.resource("llm")
            messages = [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "hello there"},
            ]
            first = await llm.ask(Chat(messages, system="Be brief."))
            cut = await llm.ask(Chat.prompt("a long question", model="claude-other", max_tokens=2))
    assert first == ChatResult("fake answer to: hello there", "claude-test", 7, 5, "stop")
    assert cut == ChatResult("fake answer", "claude-other", 3, 2, "length")
    assert first.raw["stop_reason"] == "end_turn" and cut.raw["stop_reason"] == "max_tokens"
    request = server.requests[0]
    assert (request.path, request.wire) == ("/v1/messages", "anthropic")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hello there"}],
        "system": "Be brief.\n\nAnswer in French.",
    }
    assert server.requests[1].body["max_tokens"] == 2


async def test_retry_after_silences_the_resource_for_every_caller(
    key: str, loopback_clock: trio.abc.Clock
) -> None:
    """A 429 with Retry-After: 7 pauses the whole resource: the callers
    queued behind it, and one arriving 3 s later, all reach the API only
    once 7 s have passed; the rate-limited request is retried then."""
    with trio.fail_after(60):
        async with fake_llm(api_key=KEY) as server, llm_system(server, max_concurrency=1) as system:
            server.fail_next(1, status=429, retry_after=7)
            llm = system.resource("llm")
            start = trio.current_time()
            answered: dict[str, float] = {}

            async def caller(name: str) -> None:
                result = await llm.ask(Chat.prompt(name))
                assert result.text == f"fake answer to: {name}"
                answered[name] = trio.current_time() - start

            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(caller, f"early {n}")
                await trio.sleep(3)
                assert system.resource_statistics()["llm"].limiter.paused_for == pytest.approx(4)
                nursery.start_soon(caller, "late")
            stats = backend(system)
    times = [request.time - start for request in server.requests]
    assert len(times) == 6 and times[0] == pytest.approx(0)
    assert min(times[1:]) == pytest.approx(7)
    assert sorted(answered) == ["early 0", "early 1", "early 2", "early 3", "late"]
    assert all(at >= 7 for at in answered.values())
    assert stats["responses_429"] == 1 and stats["responses_2xx"] == 5
    assert stats["retry_after_pauses"] == 1


NOW = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def _http_date(moment: datetime.datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("provider", "status", "headers", "options", "pause"),
    [
        ("openai", 429, {"retry-after-ms": "7000"}, {}, 7),
        (
            "openai",
            503,
            {
                "date": _http_date(NOW),
                "retry-after": _http_date(NOW + datetime.timedelta(seconds=7)),
            },
            {},
            7,
        ),
        (
            "anthropic",
            429,
            {
                "date": _http_date(NOW),
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": _rfc3339(NOW + datetime.timedelta(seconds=7)),
                "anthropic-ratelimit-tokens-remaining": "90000",
                "anthropic-ratelimit-tokens-reset": _rfc3339(NOW + datetime.timedelta(seconds=40)),
            },
            {},
            7,
        ),
        ("anthropic", 529, {"retry-after": "86400"}, {"max_retry_after": "10s"}, 10),
    ],
    ids=["retry-after-ms", "http-date", "anthropic-reset", "capped"],
)
async def test_retry_after_forms(
    *,
    key: str,
    loopback_clock: trio.abc.Clock,
    provider: str,
    status: int,
    headers: dict[str, str],
    options: dict[str, Any],
    pause: float,
) -> None:
    """Milliseconds, HTTP dates (from the response's Date), Anthropic's reset
    headers (the exhausted limit's) and the max_retry_after cap."""
    with trio.fail_after(60):
        async with (
            fake_llm(api_key=KEY) as server,
            llm_system(server, provider, **options) as system,
        ):
            server.fail_next(1, status=status, headers=headers)
            await system.resource("llm").ask(Chat.prompt("hi"))
    first, second = server.requests
    assert second.time - first.time == pytest.approx(pause)


async def test_server_errors_are_retried(key: str, loopback_clock: trio.abc.Clock) -> None:
    """Two 500s, then an answer: the caller sees only the answer."""
    with trio.fail_after(60):
        async with (
            fake_llm(api_key=KEY) as server,
            llm_system(server, retry={"attempts": 3, "initial": "1s"}) as system,
        ):
            server.fail_next(2, status=500)
            result = await system.resource("llm").ask(Chat.prompt("again"))
            stats = system.resource_statistics()["llm"]
    assert result.text == "fake answer to: again"
    assert len(server.requests) == 3
    assert (stats.backend["responses_5xx"], stats.backend["responses_2xx"]) == (2, 1)
    assert stats.limiter.breaker == "closed" and stats.failures == 0


async def test_persistent_server_errors_open_the_breaker(
    key: str, loopback_clock: trio.abc.Clock
) -> None:
    """An API answering 503 fails the request after its retries with a
    transient ResourceError; the breaker is then open and the next caller
    gets CircuitOpen at once, without a request being sent."""
    with trio.fail_after(60):
        async with (
            fake_llm(api_key=KEY) as server,
            llm_system(
                server,
                retry={"attempts": 3, "initial": "1s"},
                circuit_breaker={"failures": 3, "reset_timeout": "30s"},
            ) as system,
        ):
            server.fail_next(100, status=503, message="The engine is currently overloaded")
            llm = system.resource("llm")
            with pytest.raises(ResourceError) as info:
                await llm.ask(Chat.prompt("hello"))
            before = trio.current_time()
            with pytest.raises(CircuitOpen):
                await llm.ask(Chat.prompt("hello"))
            assert trio.current_time() == before
            assert system.resource_statistics()["llm"].limiter.breaker == "open"
    error = info.value
    assert (error.status, error.transient, error.resource) == (503, True, "llm")
    assert "openai answered 503: The engine is currently overloaded" in str(error)
    assert len(server.requests) == 3


async def test_client_errors_are_permanent(key: str, loopback_clock: trio.abc.Clock) -> None:
    """A 400 is the request's fault: raised at once with the status and the
    provider's message, not retried, not counted by the breaker."""
    with trio.fail_after(60):
        async with fake_llm(api_key=KEY) as server, llm_system(server, "anthropic") as system:
            llm = system.resource("llm")
            server.fail_next(1, status=400, message="temperature: must be at most 1")
            with pytest.raises(ResourceError) as scripted:
                await llm.ask(Chat.prompt("hi"))
            # The fake checks requests as the real API does: no 'tool' role.
            with pytest.raises(ResourceError) as refused:
                await llm.ask(Chat([{"role": "tool", "content": "42"}]))
            stats = system.resource_statistics()["llm"]
    assert (scripted.value.status, scripted.value.transient) == (400, False)
    assert "anthropic answered 400: temperature: must be at most 1" in str(scripted.value)
    assert refused.value.status == 400 and "messages.0.role" in str(refused.value)
    assert len(server.requests) == 2
    assert stats.limiter.breaker == "closed" and stats.backend["responses_other"] == 2


async def test_slow_answers_time_out_per_attempt(key: str, loopback_clock: trio.abc.Clock) -> None:
    """An answer that never comes and one that comes after 60 s each fail
    their attempt at ``timeout``; the caller gets TimeoutError, and the
    resource serves the next request normally."""
    with trio.fail_after(120):
        async with (
            fake_llm(api_key=KEY) as server,
            llm_system(server, timeout="2s", retry={"attempts": 2, "initial": "1s"}) as system,
        ):
            server.push(Fault(hang=True), Fault(status=None, delay=60))
            llm = system.resource("llm")
            start = trio.current_time()
            with pytest.raises(TimeoutError):
                await llm.ask(Chat.prompt("slow"))
            elapsed = trio.current_time() - start
            assert (await llm.ask(Chat.prompt("fast"))).text == "fake answer to: fast"
    first, second, third = (request.time - start for request in server.requests)
    assert first == pytest.approx(0) and 2 <= second <= 3
    assert 4 <= elapsed <= 5 and third == pytest.approx(elapsed)


async def test_connection_failures_are_transient(loopback_clock: trio.abc.Clock) -> None:
    """Nothing listening: each attempt fails to connect, is retried, and the
    caller gets a transient ResourceError naming the httpx error."""
    async with fake_llm() as server:
        spec = server.resource_spec(retry={"attempts": 2, "initial": "1s"})
    # The server has stopped: its port refuses connections.
    topology = Topology(resources={"llm": spec}, supervisor=SupervisorSpec(name="root"))
    with trio.fail_after(60):
        async with open_system(topology, store="memory://") as system:
            with pytest.raises(ResourceError) as info:
                await system.resource("llm").ask(Chat.prompt("anyone?"))
            stats = backend(system)
    assert (info.value.transient, info.value.status) == (True, None)
    assert "llm: ConnectError" in str(info.value)
    assert stats["transport_errors"] == 2 and stats["responses_2xx"] == 0


async def test_token_budget_pauses_the_resource(key: str, loopback_clock: trio.abc.Clock) -> None:
    """With 100 tokens a minute and 60 per answer, the second answer spends
    the budget: the third request waits until the first two leave the
    window, 60 s after they were counted."""

    def responder(request: FakeRequest) -> Reply:
        return Reply("ok", input_tokens=40, output_tokens=20)

    with trio.fail_after(300):
        async with (
            fake_llm(api_key=KEY, responder=responder) as server,
            llm_system(server, tokens_per_minute=100) as system,
        ):
            llm = system.resource("llm")
            start = trio.current_time()
            for _ in range(2):
                await llm.ask(Chat.prompt("hi"))
            stats = backend(system)
            assert stats["tokens_in_window"] == 120 and stats["tokens_per_minute"] == 100
            assert system.resource_statistics()["llm"].limiter.paused_for == pytest.approx(60)
            await llm.ask(Chat.prompt("hi"), timeout=120)
            stats = backend(system)
    assert [request.time - start for request in server.requests] == pytest.approx([0, 0, 60])
    assert stats["tokens_in_window"] == 60 and stats["tokens_total"] == 180
    assert stats["token_budget_pauses"] == 1


async def test_the_key_never_leaks(
    key: str, loopback_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The key is sent, but appears in no log line (structlog's or httpx's),
    no repr, no statistic and no error, not even when the API quotes it."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with trio.fail_after(60), structlog.testing.capture_logs() as logs:
        async with (
            fake_llm(api_key="another key") as server,
            llm_system(server, "anthropic") as system,
        ):
            llm = system.resource("llm")
            with pytest.raises(ResourceError) as refused:
                await llm.ask(Chat.prompt("hi"))  # 401, quoting the key sent
            server.api_key = KEY
            server.fail_next(1, status=429, retry_after=1, message=f"too fast, {KEY}")
            await llm.ask(Chat.prompt("hi"))
            resource = llm._cell.current  # type: ignore[attr-defined]
            assert isinstance(resource, LLM)
            texts += [repr(resource), repr(resource.options), str(attrs.asdict(resource.options))]
            texts += [repr(system.resource_statistics()), repr(system.tree())]
    assert server.requests[0].headers["x-api-key"] == KEY
    error: BaseException | None = refused.value
    assert refused.value.status == 401 and "Incorrect API key provided: [redacted]" in str(error)
    while error is not None:
        texts += [str(error), repr(error), repr(vars(error))]
        error = error.__cause__ or error.__context__
    assert any(entry["event"] == "llm_paused" for entry in logs)
    assert caplog.records, "httpx logged nothing: the check below would prove nothing"
    texts += [repr(entry) for entry in logs] + [caplog.text]
    assert not [text for text in texts if KEY in text]


async def test_a_missing_key_fails_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, loopback_clock: trio.abc.Clock
) -> None:
    """No key in the environment: the resource cannot start (each crash is
    logged naming the variable to set), its breaker opens and callers get
    CircuitOpen; nothing is sent."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    with trio.fail_after(60), structlog.testing.capture_logs() as logs:
        async with fake_llm() as server, llm_system(server) as system:
            with pytest.raises(CircuitOpen):
                await system.resource("llm").ask(Chat.prompt("hi"))
    crashes = [entry for entry in logs if entry["event"] == "actor_crashed"]
    assert crashes and all(entry["during"] == "start" for entry in crashes)
    expected = f"llm: the environment variable {KEY_ENV} (api_key_env) is not set"
    assert all(str(entry["exc_info"]) == expected for entry in crashes)
    assert server.requests == []


@attrs.frozen
class Write:
    topic: str


class Writer(runtime.Actor[None]):
    """An agent that asks the llm resource to write about a topic."""

    @runtime.handler
    async def write(self, msg: Write) -> str:
        result = await self.ctx.resource("llm").ask(Chat.prompt(msg.topic), timeout=300)
        return str(result.text)


OFFLINE = """\
system: offline
resources:
  llm:
    kind: llm
    provider: fake
    max_concurrency: 4
    retry: {attempts: 8, initial: 100ms}
    fake: {latency: 200ms, latency_jitter: 300ms, rate_limit_probability: 0.2,
           retry_after: 1s, seed: 7}
supervisor:
  name: root
  children:
    - {name: writer, actor: "tests.test_resource_llm:Writer", concurrency: 20}
"""


async def test_provider_fake_runs_a_topology_offline(
    monkeypatch: pytest.MonkeyPatch, loopback_clock: trio.abc.Clock
) -> None:
    """``provider: fake`` from YAML: the resource serves its own fake backend
    (latency, seeded 429s) over loopback HTTP, with no key and no server."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    topology = runtime.parse_topology(OFFLINE)
    options = topology.resources["llm"].options
    assert isinstance(options, LLMOptions)
    assert (options.provider, options.api_key_env, options.fake.latency) == ("fake", None, 0.2)
    with trio.fail_after(300):
        async with open_system(topology, store="memory://") as system:
            writer = system.ref("root/writer")
            texts: dict[int, str] = {}

            async def write(n: int) -> None:
                texts[n] = await writer.ask(Write(f"topic {n}"), timeout=300)

            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(write, n)
            stats = backend(system)
    assert texts == {n: f"fake answer to: topic {n}" for n in range(20)}
    assert stats["responses_2xx"] == 20 and stats["responses_429"] > 0
    assert stats["retry_after_pauses"] == stats["responses_429"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{kind: llm, provider: cohere}", "resources.llm.provider: expected one of openai"),
        (
            "{kind: llm, provider: fake, fake: {rate_limit_probability: 2}}",
            "resources.llm.fake.rate_limit_probability: expected a probability",
        ),
        ("{kind: llm, tokens_per_minute: 0}", "resources.llm.tokens_per_minute: expected a whole"),
    ],
    ids=["provider", "probability", "budget"],
)
def test_bad_options_name_their_field(entry: str, expected: str) -> None:
    text = f"system: s\nresources:\n  llm: {entry}\nsupervisor: {{name: root}}\n"
    with pytest.raises(TopologyError) as info:
        runtime.parse_topology(text, "t.yaml")
    assert any(expected in error for error in info.value.errors), info.value.errors


def test_options_defaults_per_provider() -> None:
    """Keys come from the provider's usual variable unless told otherwise;
    code may give the options as a dict, nested fake settings too."""
    assert LLMOptions().api_key_env == "OPENAI_API_KEY"
    assert LLMOptions(provider="anthropic").api_key_env == "ANTHROPIC_API_KEY"
    assert LLMOptions(provider="fake").api_key_env is None
    assert LLMOptions(api_key_env=None).api_key_env is None
    spec = ResourceSpec(kind="llm", options={"provider": "fake", "fake": {"latency": "1s"}})
    assert spec.options.fake.latency == 1.0 and spec.concurrency == 8
    with pytest.raises(TypeError, match="role"):
        Chat("not a list of messages")  # type: ignore[arg-type]


# -- the fake backend itself ---------------------------------------------------


def test_testing_exports_only_what_is_documented() -> None:
    assert runtime.testing.__all__ == ["FakeLLM", "FakeRequest", "Fault", "Reply", "fake_llm"]


async def test_fake_speaks_each_providers_error_format() -> None:
    """Errors come back in the provider's own body shape, with Retry-After;
    unknown paths are 404s; requests the real API refuses are 400s."""
    with trio.fail_after(10):
        async with fake_llm() as server, httpx.AsyncClient(base_url=server.url) as client:
            server.fail_next(2, status=429, retry_after=7)
            chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            openai = await client.post("/v1/chat/completions", json=chat)
            anthropic = await client.post(
                "/v1/messages",
                json={**chat, "max_tokens": 5},
                headers={"anthropic-version": "2023-06-01"},
            )
            missing = await client.post("/v1/messages", json=chat)
            unknown = await client.get("/v1/models")
    assert (openai.status_code, openai.headers["retry-after"]) == (429, "7")
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
    assert (anthropic.status_code, anthropic.headers["retry-after"]) == (429, "7")
    assert anthropic.json() == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Rate limit reached; please try again later.",
        },
    }
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "anthropic-version: header is required"
    assert unknown.status_code == 404
    assert [request.path for request in server.requests] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages",
        "/v1/models",
    ]


async def _statuses(seed: int) -> list[int]:
    async with (
        fake_llm(rate_limit_probability=0.3, seed=seed) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        return [
            (await client.post("/v1/chat/completions", json=chat)).status_code for _ in range(40)
        ]


async def test_fake_random_429s_follow_the_seed() -> None:
    """The same seed gives the same 429s; another seed other ones."""
    with trio.fail_after(10):
        first, again, other = await _statuses(1), await _statuses(1), await _statuses(2)
    assert first == again and first != other
    assert set(first) == {200, 429} and 5 <= first.count(429) <= 20


async def test_fake_responders_may_be_async_fail_or_raise() -> None:
    """A responder may be async, may answer a Fault, and a responder that
    raises is answered 500 and kept in ``errors``."""

    async def responder(request: FakeRequest) -> str | Fault:
        await trio.lowlevel.checkpoint()
        if request.prompt == "fail":
            return Fault(status=418, message="teapot")
        if request.prompt == "raise":
            raise RuntimeError("responder bug")
        return request.prompt.upper()

    with trio.fail_after(10):
        async with (
            fake_llm(responder=responder) as server,
            httpx.AsyncClient(base_url=f"{server.url}/v1") as client,
        ):

            async def ask(prompt: str) -> httpx.Response:
                chat = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
                return await client.post("chat/completions", json=chat)

            ok, teapot, bug = await ask("shout"), await ask("fail"), await ask("raise")
    assert ok.json()["choices"][0]["message"]["content"] == "SHOUT"
    assert ok.json()["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert (teapot.status_code, teapot.json()["error"]["message"]) == (418, "teapot")
    assert bug.status_code == 500 and "responder bug" in bug.json()["error"]["message"]
    assert [str(error) for error in server.errors] == ["responder bug"]


async def test_the_fake_provider_reports_what_its_backend_saw(
    loopback_clock: trio.abc.Clock,
) -> None:
    """provider: fake: the backend's peak in flight and most requests in a
    rate window are in the resource's statistics (so a CLI run shows them).
    On virtual time: the wall-clock hop between admission and arrival would
    otherwise blur the window by microseconds."""
    import runtime
    from runtime.resources.llm import Chat

    topology = runtime.Topology(
        resources={
            "llm": runtime.ResourceSpec(
                kind="llm",
                max_concurrency=3,
                rate={"requests": 5, "period": "1s"},
                options={"provider": "fake", "fake": {"latency": 0.05}},
            )
        }
    )
    with trio.fail_after(20):
        async with runtime.open_system(topology, store="memory://") as system:
            llm = system.resource("llm")
            async with trio.open_nursery() as nursery:
                for n in range(12):
                    nursery.start_soon(lambda n=n: llm.ask(Chat.prompt(f"q{n}"), timeout=60))
            figures = system.resource_statistics()["llm"].backend
    assert figures["fake_peak_in_flight"] == 3
    assert figures["fake_most_in_rate_window"] == 5
