"""The ``llm`` resource: chat completions over HTTP, shared by every agent.

One resource speaks one provider's wire format over one ``httpx.AsyncClient``:

- ``openai``: any OpenAI-compatible chat-completions API (OpenAI, Azure's
  OpenAI-compatible endpoint, vLLM, Ollama, LiteLLM, ...): ``POST
  {base_url}/chat/completions`` with ``Authorization: Bearer <key>``;
- ``anthropic``: the Anthropic messages API: ``POST {base_url}/v1/messages``
  with ``x-api-key`` and ``anthropic-version``;
- ``fake``: the resource starts ``runtime.testing.FakeLLM`` in its own
  nursery, on a free loopback port, and talks to it over real HTTP, so a
  system runs offline with no server and no key.

Agents ask it with ``Chat`` and get a ``ChatResult``. Every request goes
through the resource's limiter (``max_concurrency``, ``rate``, priority,
per-attempt ``timeout``, retries, breaker). 429 and 5xx answers, connection
errors and timeouts are transient: retried, and counted by the breaker. Any
other error status is a permanent ``ResourceError`` carrying the status and
the provider's message. A ``Retry-After`` (or Anthropic's rate-limit reset
headers on a 429) pauses the whole resource, not just the request that got
it. ``tokens_per_minute`` pauses it too, once the tokens the responses report
over the last 60 s reach the budget.

Every answered request's tokens, and its cost where ``pricing`` names the
model, are counted for the asking actor (``ResourceStatistics.usage``) and
against the budgets it spends (``budget:`` on the resource or on a
supervisor above the asker), which are checked before it is sent.

The API key is read from the environment at start and sent only as the
auth header: it is never logged, and never part of a repr, an error or a
statistic (a provider error message that quotes it has it replaced).
"""

from __future__ import annotations

import datetime
import email.utils
import os
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import httpx
import trio

from .._actor import handler
from .._fake_llm import FakeLLM
from .._logging import get_logger
from .._resource import Resource
from .._specs import FieldError, Seconds, at_least, one_of, to_seconds
from ..errors import ResourceError

__all__ = [
    "LLM",
    "Chat",
    "ChatResult",
    "FakeOptions",
    "LLMOptions",
    "ModelPrice",
    "parse_retry_after",
]

logger = get_logger()

Provider = Literal["openai", "anthropic", "fake"]
Wire = Literal["openai", "anthropic"]

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
DEFAULT_KEY_ENVS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "fake": None}
ANTHROPIC_MAX_TOKENS = 1024
"""The ``max_tokens`` sent to Anthropic (which requires one) when neither the
request nor the options set it."""

WINDOW = 60.0
"""The token budget's sliding window, in seconds."""

_PATHS: dict[Wire, str] = {"openai": "chat/completions", "anthropic": "v1/messages"}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_ANTHROPIC_RESETS = ("requests", "tokens", "input-tokens", "output-tokens")
_REDACTED = "[redacted]"


def _probability(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise FieldError(attr.name, f"expected a probability between 0 and 1; got {value!r}")


@attrs.frozen
class FakeOptions:
    """How a ``provider: fake`` resource's fake backend behaves.

    Attributes:
        wire: the format it is spoken to in: ``openai`` or ``anthropic``.
        latency: seconds each answer takes.
        latency_jitter: up to this many seconds more, drawn from ``seed``.
        rate_limit_probability: the chance each request is answered 429.
        retry_after: the ``Retry-After`` of those 429s.
        seed: seeds the 429s and the jitter.
    """

    wire: Wire = attrs.field(default="openai", validator=one_of("openai", "anthropic"))
    latency: Seconds = attrs.field(default=Seconds(0.0), converter=to_seconds)
    latency_jitter: Seconds = attrs.field(default=Seconds(0.0), converter=to_seconds)
    rate_limit_probability: float = attrs.field(
        default=0.0, converter=float, validator=_probability
    )
    retry_after: Seconds = attrs.field(default=Seconds(1.0), converter=to_seconds)
    seed: int = 0


def _price(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise FieldError(
            attr.name, f"expected dollars per million tokens, 0 or more; got {value!r}"
        )


@attrs.frozen
class ModelPrice:
    """What one model costs, in dollars per million tokens.

    Attributes:
        input: per million input (prompt) tokens.
        output: per million output (completion) tokens.
    """

    input: float = attrs.field(validator=_price)
    output: float = attrs.field(validator=_price)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The dollars of one request."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


def _to_pricing(value: Mapping[str, ModelPrice | Mapping[str, Any]]) -> dict[str, ModelPrice]:
    return {
        str(model): ModelPrice(**price) if isinstance(price, Mapping) else price
        for model, price in value.items()
    }


def _to_fake(value: FakeOptions | Mapping[str, Any]) -> FakeOptions:
    return FakeOptions(**value) if isinstance(value, Mapping) else value


def _default_key_env(options: LLMOptions) -> str | None:
    return DEFAULT_KEY_ENVS.get(options.provider)


def _to_headers(value: Mapping[str, Any]) -> dict[str, str]:
    return {str(name): str(item) for name, item in value.items()}


@attrs.frozen
class LLMOptions:
    """The ``llm`` kind's settings (the YAML keys beside the common ones).

    Attributes:
        provider: ``openai`` (any OpenAI-compatible API), ``anthropic`` or ``fake``.
        base_url: the API's base URL; by default ``https://api.openai.com/v1``
            or ``https://api.anthropic.com``; ignored by ``fake``.
        model: the model of requests that name none (``fake``: ``fake``).
        api_key_env: the environment variable holding the API key, read at
            start; by default ``OPENAI_API_KEY`` or ``ANTHROPIC_API_KEY``
            (``fake``: none). None sends no key (a local server).
        max_tokens: the ``max_tokens`` of requests that set none. None: OpenAI
            gets none, Anthropic (which requires one) 1024.
        temperature: the temperature of requests that set none (None: the API's).
        tokens_per_minute: a budget of tokens (input plus output, as the
            responses report them) per sliding minute; None: no budget.
        anthropic_version: the ``anthropic-version`` header.
        headers: more headers sent with every request, added last (so they
            may replace the defaults). No secrets here: options are shown in
            reprs and the topology; a key goes through ``api_key_env``.
        max_retry_after: the longest pause a ``Retry-After`` may impose.
        fake: how the ``fake`` provider's backend behaves.
        pricing: dollars per million tokens by model name, to count what
            requests cost. A request is priced by the model the answer
            names, else the model it asked for, exactly (no prefix match:
            ``gpt-4o`` does not price ``gpt-4o-mini``). A model not listed
            is counted in tokens only. No prices are built in.
    """

    provider: Provider = attrs.field(
        default="openai", validator=one_of("openai", "anthropic", "fake")
    )
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = attrs.field(default=attrs.Factory(_default_key_env, takes_self=True))
    max_tokens: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(at_least(1))
    )
    temperature: float | None = None
    tokens_per_minute: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(at_least(1))
    )
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = attrs.field(factory=dict, converter=_to_headers)
    max_retry_after: Seconds = attrs.field(default=Seconds(300.0), converter=to_seconds)
    fake: FakeOptions = attrs.field(factory=FakeOptions, converter=_to_fake)
    pricing: dict[str, ModelPrice] = attrs.field(factory=dict, converter=_to_pricing)

    def price_of(self, answered: str, asked: str | None) -> ModelPrice | None:
        """The price of a request: of the model that answered, else of the
        model asked for; None if neither is listed."""
        pricing = self.pricing
        return pricing.get(answered) or (pricing.get(asked) if asked is not None else None)

    @property
    def wire(self) -> Wire:
        """The wire format spoken: the provider's, or ``fake.wire``."""
        return self.fake.wire if self.provider == "fake" else self.provider


attrs.resolve_types(FakeOptions)
attrs.resolve_types(ModelPrice)
attrs.resolve_types(LLMOptions)


def _to_messages(value: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}}; got {value!r}"
        )
    messages = tuple(dict(message) for message in value)
    for message in messages:
        if not isinstance(message.get("role"), str) or "content" not in message:
            raise TypeError(f"a message needs a 'role' and a 'content'; got {message!r}")
    return messages


@attrs.frozen
class Chat:
    """A chat request, the same for every provider.

    Attributes:
        messages: ``{"role": "user" | "assistant" | "system", "content": ...}``
            dicts, oldest first; ``content`` is a string or the provider's
            list of content blocks, passed through as is.
        model, max_tokens, temperature: None takes the resource's option.
        system: a system prompt: OpenAI gets it as a first system message,
            Anthropic in its ``system`` field (with any system messages).
        extra: more body fields, sent as given (``top_p``, ``tools``, ...).
    """

    messages: tuple[Mapping[str, Any], ...] = attrs.field(converter=_to_messages)
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    system: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def prompt(cls, text: str, **fields: Any) -> Chat:
        """A chat of one user message."""
        return cls([{"role": "user", "content": text}], **fields)


@attrs.frozen
class ChatResult:
    """The answer to a ``Chat``.

    Attributes:
        text: the assistant's text (Anthropic's text blocks joined).
        model: the model that answered, as the API names it.
        input_tokens, output_tokens: the response's ``usage``.
        finish_reason: ``stop``, ``length``, ``tool_calls`` or the provider's
            own word (Anthropic's ``end_turn``/``stop_sequence`` read
            ``stop``, ``max_tokens`` reads ``length``, ``tool_use`` reads
            ``tool_calls``).
        raw: the whole response body, for what this record leaves out.
    """

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def _wall_time(headers: httpx.Headers) -> datetime.datetime:
    """The response's ``Date``, else this machine's wall clock: the instant
    an HTTP date in the same response is measured from."""
    date = headers.get("date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            pass
    return datetime.datetime.now(datetime.UTC)


def _seconds_until(value: str, now: datetime.datetime) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - now).total_seconds()


def parse_retry_after(headers: httpx.Headers, status: int) -> float | None:
    """The seconds a response asks the client to wait, or None if it asks nothing.

    Read in order: ``retry-after-ms`` (OpenAI), ``Retry-After`` (seconds or
    an HTTP date), and, on a 429, Anthropic's ``anthropic-ratelimit-*-reset``
    times (RFC 3339) of the limits whose ``-remaining`` is 0 (of all of
    them if none says so), the latest. Dates are measured from the
    response's ``Date`` header, or from this machine's clock without one.
    """
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return float(value)
        except ValueError:
            seconds = _seconds_until(value, _wall_time(headers))
            if seconds is not None:
                return seconds
    if status != 429:
        return None
    now = _wall_time(headers)
    resets: dict[str, float] = {}
    for limit in _ANTHROPIC_RESETS:
        value = headers.get(f"anthropic-ratelimit-{limit}-reset")
        if value is not None and (seconds := _seconds_until(value, now)) is not None:
            resets[limit] = seconds
    spent = [
        seconds
        for limit, seconds in resets.items()
        if headers.get(f"anthropic-ratelimit-{limit}-remaining") == "0"
    ]
    chosen = spent or list(resets.values())
    return max(chosen) if chosen else None


class LLM(Resource):
    """Chat completions from an OpenAI-compatible or Anthropic API (or a fake).

    Handles ``Chat`` -> ``ChatResult``. See the module docstring for the
    error policy, ``Retry-After`` and the token budget.
    """

    Options = LLMOptions
    default_max_concurrency = 8

    options: LLMOptions

    def __init__(self) -> None:
        super().__init__()
        self._client: httpx.AsyncClient | None = None
        self._secret: str | None = None
        self._base_url = ""
        self.fake: FakeLLM | None = None  # the fake backend, with provider: fake
        self._usage: deque[tuple[float, int]] = deque()  # (time, tokens) in the window
        self._in_window = 0
        self._counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        options = getattr(self, "options", None)
        provider = options.provider if options is not None else "?"
        model = options.model if options is not None else None
        return (
            f"<LLM {getattr(self, 'name', '?')!r} provider={provider} "
            f"model={model} base_url={self._base_url or None}>"
        )

    async def on_start(self) -> None:
        options = self.options
        key = self._read_key()
        base_url = options.base_url or DEFAULT_BASE_URLS.get(options.provider, "")
        if options.provider == "fake":
            fake = options.fake
            server = FakeLLM(
                latency=fake.latency,
                latency_jitter=fake.latency_jitter,
                rate_limit_probability=fake.rate_limit_probability,
                retry_after=fake.retry_after,
                seed=fake.seed,
                api_key=key,
                model=options.model or "fake",
            )
            url: str = await self.ctx.nursery.start(server.serve)
            base_url = f"{url}/v1" if fake.wire == "openai" else url
            self.fake = server
        self._base_url = base_url
        self._secret = key
        client = httpx.AsyncClient(  # runtime: ignore[RT301] (the limiter times each attempt)
            base_url=base_url,
            headers=self._headers(key),
            # Each attempt is bounded by the resource's ``timeout``; the
            # limiter, not the pool, bounds concurrency.
            timeout=httpx.Timeout(None),
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=self.spec.concurrency
            ),
        )
        await self.ctx.nursery.start(self._hold_client, client)
        self._client = client

    @classmethod
    def check_environment(cls, options: LLMOptions) -> list[tuple[str, str]]:
        """``api_key_env`` names a variable that is not set (or empty): the
        resource could not start."""
        env = options.api_key_env
        if env is None or os.environ.get(env):
            return []
        return [
            (
                "api_key_env",
                f"the environment variable {env} is not set, so the resource cannot start: "
                "set it, or api_key_env: null for a server that takes no key",
            )
        ]

    def _read_key(self) -> str | None:
        env = self.options.api_key_env
        if env is None:
            return None
        key = os.environ.get(env)
        if not key:
            raise ResourceError(
                f"{self.name}: the environment variable {env} (api_key_env) is not set",
                resource=self.name,
            )
        return key

    def _headers(self, key: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.options.wire == "anthropic":
            headers["anthropic-version"] = self.options.anthropic_version
            if key is not None:
                headers["x-api-key"] = key
        elif key is not None:
            headers["authorization"] = f"Bearer {key}"
        headers.update(self.options.headers)
        return headers

    async def _hold_client(
        self,
        client: httpx.AsyncClient,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hold the client for this incarnation; close it when it ends, however it ends."""
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 1.0
                await client.aclose()

    # -- requests ------------------------------------------------------------

    @handler
    async def chat(self, msg: Chat) -> ChatResult:
        """Send ``msg`` under the limiter; see the module docstring for errors.

        Raises:
            ResourceError: an error status (``status`` set; ``transient``
                for 429 and 5xx, after the retries), a connection failure
                (transient) or an answer that cannot be read.
            TimeoutError: the last attempt ran past ``timeout``.
            CircuitOpen: the breaker is open.
            BudgetExceeded: a budget this request spends is used up (and
                says ``on_exhausted: refuse``); nothing was sent.
        """
        body = self._body(msg)
        await self.check_budget()
        return await self.call(self._post, body)

    def _body(self, msg: Chat) -> dict[str, Any]:
        options = self.options
        model = msg.model or options.model or ("fake" if options.provider == "fake" else None)
        if model is None:
            raise ResourceError(
                f"{self.name}: no model: the request names none and the resource has no `model`",
                resource=self.name,
            )
        max_tokens = msg.max_tokens or options.max_tokens
        temperature = msg.temperature if msg.temperature is not None else options.temperature
        messages = [dict(message) for message in msg.messages]
        body: dict[str, Any] = {"model": model}
        if options.wire == "anthropic":
            system = [msg.system] if msg.system is not None else []
            system += [_text(m["content"]) for m in messages if m["role"] == "system"]
            body["max_tokens"] = max_tokens or ANTHROPIC_MAX_TOKENS
            body["messages"] = [m for m in messages if m["role"] != "system"]
            if system:
                body["system"] = "\n\n".join(system)
        else:
            if msg.system is not None:
                messages.insert(0, {"role": "system", "content": msg.system})
            body["messages"] = messages
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        body.update(msg.extra)
        return body

    async def _post(self, body: dict[str, Any]) -> ChatResult:
        """One attempt: post, classify the answer, read it."""
        assert self._client is not None
        failure: str | None = None
        try:
            response = await self._client.post(_PATHS[self.options.wire], json=body)
        except httpx.RequestError as exc:
            # Raised below, outside this block, so the httpx error (whose
            # request holds the auth header) is not kept as the context.
            transient = isinstance(exc, httpx.TransportError)
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if failure is not None:
            self._counts["transport_errors"] += 1
            raise ResourceError(
                self._redact(f"{self.name}: {failure}"), resource=self.name, transient=transient
            )
        status = response.status_code
        self._counts[_status_class(status)] += 1
        if 200 <= status < 300:
            result = self._parse(response)
            self._spend(result.total_tokens)
            price = self.options.price_of(result.model, body.get("model"))
            self.record_usage(
                result.input_tokens,
                result.output_tokens,
                None if price is None else price.cost(result.input_tokens, result.output_tokens),
            )
            return result
        transient = status == 429 or status >= 500
        if transient:
            seconds = parse_retry_after(response.headers, status)
            if seconds is not None and seconds > 0:
                self._pause(min(seconds, self.options.max_retry_after), "retry_after", status)
        raise ResourceError(
            self._redact(
                f"{self.name}: {self.options.provider} answered {status}: {_message(response)}"
            ),
            resource=self.name,
            transient=transient,
            status=status,
        )

    def _parse(self, response: httpx.Response) -> ChatResult:
        try:
            data = response.json()
            if self.options.wire == "anthropic":
                text = "".join(
                    block["text"] for block in data["content"] if block.get("type") == "text"
                )
                usage = data.get("usage") or {}
                input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
                finish = data.get("stop_reason")
            else:
                choice = data["choices"][0]
                text = choice["message"].get("content") or ""
                usage = data.get("usage") or {}
                input_tokens = usage.get("prompt_tokens")
                output_tokens = usage.get("completion_tokens")
                finish = choice.get("finish_reason")
            return ChatResult(
                text=str(text),
                model=str(data.get("model", "")),
                input_tokens=int(input_tokens or 0),
                output_tokens=int(output_tokens or 0),
                finish_reason=_FINISH.get(finish, finish) if finish is not None else None,
                raw=data,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        raise ResourceError(
            self._redact(f"{self.name}: unexpected response body ({problem})"),
            resource=self.name,
            status=response.status_code,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, _REDACTED) if self._secret else text

    # -- pauses and the token budget ------------------------------------------

    def _pause(self, seconds: float, reason: str, status: int | None = None) -> None:
        """Admit no request of this resource's for ``seconds`` (every caller waits)."""
        self.limiter.pause(seconds)
        self._counts[f"{reason}_pauses"] += 1
        logger.warning(
            "llm_paused",
            resource=self.name,
            reason=reason,
            seconds=round(seconds, 3),
            status=status,
        )

    def _trim(self, now: float) -> None:
        while self._usage and self._usage[0][0] + WINDOW <= now:
            self._in_window -= self._usage.popleft()[1]

    def _spend(self, tokens: int) -> None:
        """Count a response's tokens in the minute; once ``tokens_per_minute``
        is spent, pause until enough of them have left the window to be
        under it again."""
        budget = self.options.tokens_per_minute
        now = trio.current_time()
        self._trim(now)
        self._usage.append((now, tokens))
        self._in_window += tokens
        if budget is None or self._in_window < budget:
            return
        left = self._in_window
        for at, spent in self._usage:
            left -= spent
            if left < budget:
                self._pause(at + WINDOW - now, "token_budget")
                return

    def backend_statistics(self) -> dict[str, float]:
        """Tokens in the current minute and the budget (0: none), tokens
        and dollars since the system started (restarts included),
        responses by class, transport errors, and pauses by reason."""
        self._trim(trio.current_time())
        counts = self._counts
        usage = self._resource_cell.host.ledger.usage(self.name)
        return {
            "tokens_in_window": float(self._in_window),
            "tokens_per_minute": float(self.options.tokens_per_minute or 0),
            "tokens_total": float(sum(agent.tokens for agent in usage)),
            "dollars_total": sum(agent.dollars for agent in usage),
            "responses_2xx": float(counts["2xx"]),
            "responses_429": float(counts["429"]),
            "responses_5xx": float(counts["5xx"]),
            "responses_other": float(counts["other"]),
            "transport_errors": float(counts["transport_errors"]),
            "retry_after_pauses": float(counts["retry_after_pauses"]),
            "token_budget_pauses": float(counts["token_budget_pauses"]),
            **self._fake_statistics(),
        }

    def _fake_statistics(self) -> dict[str, float]:
        """With ``provider: fake``, what the fake backend saw: the most
        requests in flight at once and in any rate window (if a rate is set)."""
        server = self.fake
        if server is None:
            return {}
        figures = {"fake_peak_in_flight": float(server.peak_in_flight)}
        rate = self.limiter.rate
        if rate is not None:
            figures["fake_most_in_rate_window"] = float(server.most_in_window(rate.period))
        return figures


def _text(content: object) -> str:
    """A system message's text: a string, or the text of its content blocks."""
    if isinstance(content, list):
        return "\n".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return str(content)


def _status_class(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    return "other"


def _message(response: httpx.Response) -> str:
    """The provider's error message (both formats have ``error.message``), or the body."""
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    except (ValueError, AttributeError):
        pass
    return response.text[:500] or response.reason_phrase
