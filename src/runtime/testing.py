"""Helpers for testing agents: a fake LLM backend that speaks the real wire formats.

``fake_llm()`` serves, over real HTTP on a loopback port and inside the
caller's trio run, the two APIs the ``llm`` resource speaks:

- OpenAI chat completions: ``POST /v1/chat/completions`` (``Authorization:
  Bearer <key>``; ``choices[0].message.content``, ``usage.prompt_tokens``,
  ``usage.completion_tokens``; errors as ``{"error": {"message", "type", ...}}``);
- Anthropic messages: ``POST /v1/messages`` (``x-api-key`` and
  ``anthropic-version``; ``content[].text``, ``stop_reason``,
  ``usage.input_tokens``, ``usage.output_tokens``; errors as
  ``{"type": "error", "error": {"type", "message"}}``).

Answers are deterministic: by default ``"fake answer to: <last user
message>"``, or whatever a ``responder`` returns. Latency, an optional seeded
probability of 429s, and scripted faults (the next requests answer an error
status, answer slowly or never) make the failures an agent must survive
reproducible. Every request received is recorded for assertions::

    async with runtime.testing.fake_llm(latency=0.2) as server:
        server.fail_next(1, status=429, retry_after=7)
        topology = Topology(resources={"llm": server.resource_spec("openai")})
        async with runtime.open_system(topology, store="memory://") as system:
            ...
        assert server.requests[0].body["model"] == "fake"

Everything runs on trio's clock (``trio.sleep``, ``trio.current_time()``), so
tests may use ``autojump_clock``: a 60 s latency passes at once.
"""

from ._fake_llm import FakeLLM, FakeRequest, Fault, Reply, fake_llm

__all__ = ["FakeLLM", "FakeRequest", "Fault", "Reply", "fake_llm"]
