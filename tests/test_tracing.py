"""metrics.tracing: one OpenTelemetry span per handled message, parented to
the sender's span, through tells, asks and resources."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import runtime
from runtime import ChildSpec, MetricsSpec, ResourceSpec, SupervisorSpec, Topology, open_system
from tests.resource_kinds import Backend, Echo
from tests.test_correlation import First, Question, Second, Start, Third, UsesResource

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once), its finished spans cleared."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _topology(*children: ChildSpec, **fields: object) -> Topology:
    return Topology(
        metrics=MetricsSpec(tracing=True),
        supervisor=SupervisorSpec(name="root", children=list(children)),
        **fields,  # type: ignore[arg-type]
    )


async def test_spans_follow_a_chain_across_actors(spans: InMemorySpanExporter) -> None:
    """first (told from inside a client span) tells second, which asks
    third: three spans, each the child of the one before, in the client's
    trace, with the actor, message type and correlation id."""
    topology = _topology(
        ChildSpec(name="first", actor=First),
        ChildSpec(name="second", actor=Second),
        ChildSpec(name="third", actor=Third),
    )
    tracer = trace.get_tracer("test")
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            with tracer.start_as_current_span("client") as client:
                await system.ref("root/first").tell(Start("a"))
            await system.wait_until_idle()
    by_name = {span.name: span for span in spans.get_finished_spans()}
    first, second, third = (
        by_name["handle Start"],
        by_name["handle Relay"],
        by_name["handle Question"],
    )
    trace_id = client.get_span_context().trace_id
    assert {s.context.trace_id for s in (first, second, third)} == {trace_id}
    assert first.parent.span_id == client.get_span_context().span_id
    assert second.parent.span_id == first.context.span_id
    assert third.parent.span_id == second.context.span_id
    assert third.attributes["runtime.actor"] == "root/third"
    assert third.attributes["runtime.message"] == "Question"
    assert third.attributes["runtime.correlation_id"] == first.attributes["runtime.correlation_id"]


async def test_a_resource_request_is_a_child_of_the_asker(spans: InMemorySpanExporter) -> None:
    topology = _topology(
        ChildSpec(name="u", actor=UsesResource, concurrency=2),
        resources={"echo": ResourceSpec(kind=Echo, options={"backend": Backend()})},
    )
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            assert await system.ref("root/u").ask(Question("r")) == "r"
    by_name = {span.name: span for span in spans.get_finished_spans()}
    agent, request = by_name["handle Question"], by_name["handle Ping"]
    assert request.parent.span_id == agent.context.span_id
    assert request.attributes["runtime.actor"] == "resources/echo"


async def test_a_failing_handler_marks_its_span(spans: InMemorySpanExporter) -> None:
    from tests.actorkit import Counter, Crash

    topology = _topology(ChildSpec(name="c", actor=Counter))
    with trio.fail_after(10):
        async with open_system(topology, store="memory://") as system:
            with pytest.raises(runtime.errors.ActorFailed):
                await system.ref("root/c").ask(Crash())
    (span,) = [s for s in spans.get_finished_spans() if s.name == "handle Crash"]
    assert not span.status.is_ok
    assert span.events[0].name == "exception"
