"""The fake LLM backend behind ``runtime.testing.fake_llm`` and the ``llm``
resource's ``provider: fake``; see ``runtime.testing`` for how to use it."""

# The server is trio.serve_tcp plus h11 (the HTTP/1.1 state machine httpx's
# own transport and hypercorn are built on), not hypercorn with an ASGI app:
# the fake must start in microseconds inside any nursery (a test's, or an
# llm resource's ``ctx.nursery``), report its port when bound, hang or cut a
# connection on demand, and own no timer, logger or signal handler of its
# own; hypercorn brings keep-alive and graceful-shutdown timers (which run
# against a test's virtual clock), its own logging and a config object, and
# none of its HTTP/2, TLS or lifespan support is needed here.

from __future__ import annotations

import contextlib
import email.utils
import http
import inspect
import json
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Literal

import attrs
import h11
import trio

from ._specs import ResourceSpec

__all__ = ["FakeLLM", "FakeRequest", "Fault", "Reply", "fake_llm", "most_in_window"]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
_MAX_BODY = 16 * 1024 * 1024

Wire = Literal["openai", "anthropic"]


def most_in_window(times: list[float], period: float) -> int:
    """The most of ``times`` in any window ``[t, t + period)``."""
    ordered = sorted(times)
    most = end = 0
    for start, first in enumerate(ordered):
        while end < len(ordered) and ordered[end] < first + period:
            end += 1
        most = max(most, end - start)
    return most


def _text(content: object) -> str:
    """The text of a message's ``content``: a string, or a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type", "text") == "text"
        )
    return ""


def _words(text: str) -> int:
    return len(text.split())


@attrs.frozen
class FakeRequest:
    """One HTTP request the fake received.

    Attributes:
        method, path: ``POST``, ``/v1/chat/completions`` (no query string).
        headers: header names lower-cased; a repeated header's values joined by ``, ``.
        body: the JSON body, parsed (None when empty or not JSON).
        time: ``trio.current_time()`` when the request had arrived whole.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float

    @property
    def wire(self) -> Wire | None:
        """``openai`` or ``anthropic`` by the path; None for any other path."""
        if self.path == OPENAI_PATH:
            return "openai"
        if self.path == ANTHROPIC_PATH:
            return "anthropic"
        return None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The body's ``messages`` (empty if it has none)."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    @property
    def model(self) -> str | None:
        """The body's ``model``."""
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def system(self) -> str | None:
        """The system prompt: Anthropic's ``system`` field, or OpenAI's system
        messages joined by a blank line; None if there is none."""
        if self.wire == "anthropic":
            system = self.body.get("system") if isinstance(self.body, dict) else None
            return _text(system) if system is not None else None
        parts = [_text(m.get("content")) for m in self.messages if m.get("role") == "system"]
        return "\n\n".join(parts) if parts else None

    @property
    def prompt(self) -> str:
        """The text of the last user message (empty if there is none)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return ""


@attrs.frozen
class Reply:
    """What a responder answers: the text, and optionally how it ended and
    what it cost.

    Attributes:
        text: the assistant's answer.
        finish_reason: ``stop``, ``length`` or ``tool_calls`` (sent as
            Anthropic's ``end_turn``, ``max_tokens`` and ``tool_use``).
        input_tokens, output_tokens: the ``usage`` reported; None counts
            words (of every message and the system prompt, of the answer).
    """

    text: str
    finish_reason: str = "stop"
    input_tokens: int | None = None
    output_tokens: int | None = None


@attrs.frozen
class Fault:
    """A scripted answer for one request, in place of the normal one.

    Attributes:
        status: the error status to answer (429, 500, 400, ...), with the
            provider's error body; None answers normally (after ``delay``).
        retry_after: a ``Retry-After`` header: seconds, or an HTTP date string.
        message: the error body's message (a default per status otherwise).
        headers: more response headers (a ``Date`` here replaces the fake's own).
        delay: seconds to wait before answering.
        hang: never answer (``status`` is then ignored); the connection
            stays open until the client closes it or the server stops.
    """

    status: int | None = 500
    retry_after: float | str | None = None
    message: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    hang: bool = False


Responder = Callable[[FakeRequest], "str | Reply | Fault | Awaitable[str | Reply | Fault]"]
"""Builds the answer to a chat request: its text, a ``Reply`` or a ``Fault``."""


def _default_responder(request: FakeRequest) -> str:
    """The default answer: derived from the last user message only."""
    return f"fake answer to: {request.prompt}"


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Invalid API key.",
    404: "Not found.",
    429: "Rate limit reached; please try again later.",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _error_body(wire: Wire | None, status: int, message: str) -> dict[str, Any]:
    """The provider's error body for ``status``."""
    if wire == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind, code = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@attrs.frozen
class _Answer:
    status: int
    body: Any
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    hang: bool = False


class FakeLLM:
    """A fake LLM API server; see the module docstring. Use ``fake_llm()``,
    or start ``serve`` in a nursery of your own.

    Args:
        responder: builds each chat answer (sync or async); by default
            ``"fake answer to: <last user message>"``.
        latency: seconds each normal answer waits.
        latency_jitter: up to this many seconds more, drawn from the seeded
            random generator.
        rate_limit_probability: the chance that a request (with no scripted
            fault) is answered 429 at once, with ``Retry-After: retry_after``.
        retry_after: the ``Retry-After`` of those random 429s, in seconds.
        seed: seeds the random generator (429s and jitter), so a run is
            repeatable for the same order of requests.
        api_key: if set, requests must carry it (``Authorization: Bearer`` or
            ``x-api-key``), or get a 401 that quotes the key they sent (as a
            careless API might: the client must not pass it on).
        model: the model answered when a request names none.
        host, port: where to listen; port 0 picks a free one.

    Attributes:
        requests: every request received, in order of arrival.
        errors: exceptions a responder raised (each answered with a 500).
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        rate_limit_probability: float = 0.0,
        retry_after: float = 1.0,
        seed: int = 0,
        api_key: str | None = None,
        model: str = "fake",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not 0.0 <= rate_limit_probability <= 1.0:
            raise ValueError(
                f"rate_limit_probability must be in [0, 1], got {rate_limit_probability}"
            )
        self.responder: Responder = responder or _default_responder
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.rate_limit_probability = rate_limit_probability
        self.retry_after = retry_after
        self.api_key = api_key
        self.model = model
        self.requests: list[FakeRequest] = []
        self.in_flight = 0  # requests received and not yet answered
        self.peak_in_flight = 0  # the most at once so far
        self.errors: list[Exception] = []
        self._faults: deque[Fault] = deque()
        self._random = random.Random(seed)
        self._host = host
        self._port = port
        self._url: str | None = None
        self._served = 0

    def __repr__(self) -> str:
        return f"<FakeLLM {self._url or 'not started'}>"

    def most_in_window(self, period: float) -> int:
        """The most requests that arrived in any window ``[t, t + period)``."""
        return most_in_window([request.time for request in self.requests], period)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, once serving (the OpenAI base URL is ``url + "/v1"``).

        Raises:
            RuntimeError: the server has not started.
        """
        if self._url is None:
            raise RuntimeError("the fake LLM server has not started")
        return self._url

    # -- scripting -----------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Answer the next chat requests with these faults, one each, in order."""
        self._faults.extend(faults)

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 429,
        retry_after: float | str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` chat requests with ``status`` and the
        provider's error body (``retry_after``: a ``Retry-After`` header)."""
        fault = Fault(status, retry_after, message, dict(headers or {}))
        self.push(*[fault] * count)

    def slow_next(self, count: int, seconds: float) -> None:
        """Answer the next ``count`` chat requests normally, after ``seconds``."""
        self.push(*[Fault(status=None, delay=seconds)] * count)

    def hang_next(self, count: int = 1) -> None:
        """Never answer the next ``count`` chat requests."""
        self.push(*[Fault(hang=True)] * count)

    def resource_spec(self, provider: Wire = "openai", **fields: Any) -> ResourceSpec:
        """A ``ResourceSpec`` for an ``llm`` resource that talks to this server.

        ``fields`` are ``ResourceSpec`` fields (``timeout``, ``retry``, ...)
        or ``llm`` options (``model``, ``tokens_per_minute``, ...). The key
        is read from ``api_key_env`` if given, else none is sent.
        """
        names = attrs.fields_dict(ResourceSpec)
        common = {key: value for key, value in fields.items() if key in names}
        options = {key: value for key, value in fields.items() if key not in names}
        base_url = f"{self.url}/v1" if provider == "openai" else self.url
        options = {"api_key_env": None, "model": self.model, **options}
        options.update(provider=provider, base_url=base_url)
        return ResourceSpec(kind="llm", options=options, **common)

    # -- serving -------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(url)`` once bound."""
        async with trio.open_nursery() as nursery:
            listeners: list[trio.SocketListener] = await nursery.start(
                partial(trio.serve_tcp, self._connection, self._port, host=self._host)
            )
            host, port = listeners[0].socket.getsockname()[:2]
            self._url = f"http://{host}:{port}"
            task_status.started(self._url)

    async def _connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
        try:
            while await self._exchange(connection, stream):
                connection.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # the client went away or spoke nonsense: this connection ends
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _exchange(self, connection: h11.Connection, stream: trio.SocketStream) -> bool:
        """Serve one request; whether the connection may carry another."""
        head = await _next_event(connection, stream)
        if not isinstance(head, h11.Request):
            return False
        body = bytearray()
        while isinstance(event := await _next_event(connection, stream), h11.Data):
            body += event.data
        if not isinstance(event, h11.EndOfMessage):
            return False
        request = _request(head, bytes(body))
        self.requests.append(request)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            answer = await self._answer(request)
            if answer.delay:
                await trio.sleep(answer.delay)
            if answer.hang:
                await _until_closed(stream)
                return False
            await _send(connection, stream, answer)
        finally:
            self.in_flight -= 1
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    async def _answer(self, request: FakeRequest) -> _Answer:
        wire = request.wire
        if request.method != "POST" or wire is None:
            status = 404 if wire is None else 405
            return _Answer(
                status, _error_body(wire, status, f"No route for {request.method} {request.path}.")
            )
        refusal = self._check(request, wire)
        if refusal is not None:
            return refusal
        self._served += 1
        fault = self._faults.popleft() if self._faults else None
        if fault is None and self._random_429():
            fault = Fault(status=429, retry_after=self.retry_after)
        if fault is not None and (fault.hang or fault.status is not None):
            return self._fault(wire, fault)
        delay = self.latency
        if self.latency_jitter:
            delay += self._random.uniform(0.0, self.latency_jitter)
        if fault is not None:
            delay += fault.delay
        return await self._reply(request, wire, delay)

    def _random_429(self) -> bool:
        # No draw at probability 0, so latency jitter alone draws the same sequence.
        return bool(self.rate_limit_probability) and (
            self._random.random() < self.rate_limit_probability
        )

    def _fault(self, wire: Wire, fault: Fault) -> _Answer:
        if fault.hang:
            return _Answer(0, None, hang=True, delay=fault.delay)
        if fault.status is None:
            return _Answer(500, _error_body(wire, 500, "a responder's Fault needs a status"))
        status = fault.status
        message = fault.message or _DEFAULT_MESSAGES.get(status, "The server had an error.")
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            value = fault.retry_after
            headers["retry-after"] = f"{value:g}" if isinstance(value, (int, float)) else value
        return _Answer(status, _error_body(wire, status, message), headers, delay=fault.delay)

    def _check(self, request: FakeRequest, wire: Wire) -> _Answer | None:
        """A 400 or 401 for a request the real API would refuse, else None."""
        headers = request.headers
        if self.api_key is not None:
            sent = (
                headers.get("x-api-key", "")
                if wire == "anthropic"
                else headers.get("authorization", "").removeprefix("Bearer ")
            )
            if sent != self.api_key:
                message = f"Incorrect API key provided: {sent}"
                return _Answer(401, _error_body(wire, 401, message))
        problem = _invalid(request, wire)
        if problem is not None:
            return _Answer(400, _error_body(wire, 400, problem))
        return None

    async def _reply(self, request: FakeRequest, wire: Wire, delay: float) -> _Answer:
        try:
            made = self.responder(request)
            if inspect.isawaitable(made):
                made = await made
        except Exception as exc:
            self.errors.append(exc)
            return _Answer(500, _error_body(wire, 500, f"the responder raised {exc!r}"))
        if isinstance(made, Fault):
            return self._fault(wire, made)
        reply = made if isinstance(made, Reply) else Reply(str(made))
        reply = _counted(request, reply)
        body = (
            _anthropic_body(request, reply, self._served, self.model)
            if wire == "anthropic"
            else _openai_body(request, reply, self._served, self.model)
        )
        return _Answer(200, body, delay=delay)


def _request(request: h11.Request, body: bytes) -> FakeRequest:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    path = request.target.decode("latin-1").partition("?")[0]
    return FakeRequest(request.method.decode("ascii"), path, headers, parsed, trio.current_time())


def _invalid(request: FakeRequest, wire: Wire) -> str | None:
    """What the real API would say is wrong with the request, or None."""
    body = request.body
    anthropic = wire == "anthropic"
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str):
        return "model: Field required" if anthropic else "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required" if anthropic else "'messages' is a required property"
    return _invalid_anthropic(request, messages) if anthropic else None


def _invalid_anthropic(request: FakeRequest, messages: list[Any]) -> str | None:
    if "anthropic-version" not in request.headers:
        return "anthropic-version: header is required"
    if not isinstance(request.body.get("max_tokens"), int):
        return "max_tokens: Field required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f'messages.{index}.role: Input should be "user" or "assistant", got {role!r}'
    return None


def _counted(request: FakeRequest, reply: Reply) -> Reply:
    """The reply with its token counts filled in (words), cut to ``max_tokens``."""
    if reply.input_tokens is not None and reply.output_tokens is not None:
        return reply
    input_tokens = reply.input_tokens
    if input_tokens is None:
        words = [_text(m.get("content")) for m in request.messages]
        input_tokens = _words(" ".join([request.system or "", *words]))
    text, finish = reply.text, reply.finish_reason
    output_tokens = reply.output_tokens
    if output_tokens is None:
        limit = request.body.get("max_tokens") if isinstance(request.body, dict) else None
        words = text.split()
        if isinstance(limit, int) and len(words) > limit:
            text, finish = " ".join(words[:limit]), "length"
        output_tokens = min(len(words), limit) if isinstance(limit, int) else len(words)
    return Reply(text, finish, input_tokens, output_tokens)


def _openai_body(request: FakeRequest, reply: Reply, n: int, model: str) -> dict[str, Any]:
    assert reply.input_tokens is not None and reply.output_tokens is not None
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": 0,
        "model": request.model or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
    }


def _anthropic_body(request: FakeRequest, reply: Reply, n: int, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{n}",
        "type": "message",
        "role": "assistant",
        "model": request.model or model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": _STOP_REASONS.get(reply.finish_reason, reply.finish_reason),
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> Any:
    """The next h11 event, reading from ``stream`` as needed."""
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await stream.receive_some(65536))


async def _until_closed(stream: trio.SocketStream) -> None:
    """Wait, reading and discarding, until the client closes the connection."""
    while await stream.receive_some(65536):
        pass


async def _send(connection: h11.Connection, stream: trio.SocketStream, answer: _Answer) -> None:
    data = json.dumps(answer.body).encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(data)),
        "date": email.utils.formatdate(usegmt=True),
    }
    headers.update({name.lower(): value for name, value in answer.headers.items()})
    try:
        reason = http.HTTPStatus(answer.status).phrase.encode()
    except ValueError:
        reason = b""
    response = h11.Response(status_code=answer.status, headers=list(headers.items()), reason=reason)
    for event in (response, h11.Data(data=data), h11.EndOfMessage()):
        chunk = connection.send(event)
        if chunk:
            await stream.send_all(chunk)


@contextlib.asynccontextmanager
async def fake_llm(**settings: Any) -> AsyncIterator[FakeLLM]:
    """Serve a ``FakeLLM(**settings)`` for the duration of the block.

    The server runs in a nursery of its own inside the caller's trio run;
    leaving the block stops it and closes its connections (requests still
    being answered are cancelled).
    """
    server = FakeLLM(**settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
