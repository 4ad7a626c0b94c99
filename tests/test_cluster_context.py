"""A request's correlation id and trace context cross node processes
(DESIGN 6.5): from a client to a unit's node, and from there on to a unit on
a third node, each handler sees the chain the first sender started."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from opentelemetry import context, trace

import runtime
from runtime._correlation import CURRENT, CorrelationSlot, correlation_id
from tests.cluster_app import Chain, Seen
from tests.clusterkit import ClusterRun
from tests.conftest import POSTGRES_URL, require_postgres
from tests.servers import require_nats
from tests.test_cluster import NODES, _settled, _wait_all_placed


@pytest.mark.multiprocess
@pytest.mark.nats
@pytest.mark.postgres
async def test_the_correlation_id_and_trace_cross_two_node_hops(tmp_path: Path) -> None:
    """Client -> unit on one node -> unit on another: both handlers run under
    the client's correlation id and trace id; without a chain, none is made
    up on the way."""
    require_postgres()
    run = ClusterRun(
        tmp_path, require_nats(), POSTGRES_URL, units=("a", "b", "c", "d"), tracing=True
    )
    try:
        for node in NODES:
            run.start(node)
        async with runtime.open_system(run.topology, node="client", hosts_units=False) as system:
            await _wait_all_placed(system, run, 3)
            where = await _settled(system, run)
            first = "a"
            second = next((u for u in run.units if where[u] != where[first]), None)
            assert second is not None, f"all units on one node: {where}"

            trace_id = secrets.randbits(128) | 1
            parent = trace.NonRecordingSpan(
                trace.SpanContext(
                    trace_id=trace_id,
                    span_id=secrets.randbits(64) | 1,
                    is_remote=False,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                )
            )
            token = CURRENT.set(CorrelationSlot())
            attached = context.attach(trace.set_span_in_context(parent))
            try:
                chain = correlation_id()
                seen: Seen = await system.ref(run.path(first)).ask(
                    Chain(via=run.path(second)), timeout=20
                )
            finally:
                context.detach(attached)
                CURRENT.reset(token)

            assert chain is not None
            assert (seen.node, seen.correlation) == (where[first], chain)
            assert seen.trace_id == f"{trace_id:032x}"
            [hop] = seen.hops
            assert hop.node == where[second] != seen.node
            assert (hop.correlation, hop.trace_id) == (chain, seen.trace_id)

            # No chain at the sender: the handler starts one of its own on its
            # node; the hop after it carries that one.
            bare: Seen = await system.ref(run.path(first)).ask(
                Chain(via=run.path(second)), timeout=20
            )
            assert bare.correlation is not None and bare.correlation != chain
            assert bare.hops[0].correlation == bare.correlation
    finally:
        run.stop_all()
