"""``open_system``: a system built, run, and the services around its tree.

Around the tree, and closed after it: an asyncio loop for asyncpg (when the
store or a resource needs one), the metrics in a prometheus registry, the
metrics endpoint.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
import trio_asyncio
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from ._checkpoint import CheckpointStore, PostgresStore, open_store
from ._console import open_console
from ._endpoint import open_endpoint
from ._listen import Listen, parse_listen
from ._logging import get_logger
from ._metrics import RuntimeCollector
from ._specs import Topology
from ._system import ActorSystem, check_runnable, topology_of

__all__ = ["open_system"]

logger = get_logger()


def check_store(store: object) -> CheckpointStore | str | None:
    """``store`` checked before anything starts: a known URL or a store object."""
    if isinstance(store, str):
        open_store(store)  # a bad URL fails here, before anything starts
    elif store is not None and not isinstance(store, CheckpointStore):
        raise TypeError(f"store must be a URL or a CheckpointStore, got {store!r}")
    elif isinstance(store, PostgresStore) and trio_asyncio.current_loop.get() is None:
        raise ValueError(
            "a PostgresStore object runs on a trio-asyncio loop that must outlive it: "
            "open the store inside `async with trio_asyncio.open_loop():` around "
            "open_system, or pass its URL and open_system runs the loop"
        )
    return store


async def _open_services(
    stack: contextlib.AsyncExitStack,
    system: ActorSystem,
    registry: CollectorRegistry | None,
    listen: Listen | None,
) -> None:
    """What the tree needs around it, closed after it: an asyncio loop for
    asyncpg, the metrics in the registry, the metrics endpoint."""
    if system.uses_asyncio() and trio_asyncio.current_loop.get() is None:
        # asyncpg runs on asyncio: give it a loop inside this trio run,
        # outliving the store and the resources it serves (unless the
        # caller runs one).
        await stack.enter_async_context(trio_asyncio.open_loop())
    # Lock renewals run beside the tree and outlive it: a holder's release
    # on its way out still reaches the backend.
    await stack.enter_async_context(system.lock_manager.open())
    if registry is None and listen is not None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    system.registry = registry
    if registry is not None:
        collector = RuntimeCollector(system)
        registry.register(collector)
        stack.callback(registry.unregister, collector)
    if listen is not None:
        assert registry is not None
        console = await stack.enter_async_context(open_console(system))
        system.endpoint_url = await stack.enter_async_context(
            open_endpoint(system, registry, listen, console)
        )
        stack.callback(console.close)  # before the endpoint stops: end the event streams
        logger.info(
            "metrics_listening",
            url=system.endpoint_url,
            ui=f"{system.endpoint_url}/ui",
            loopback=listen.loopback,
            controls=console.controls,
        )


def _without_units(topology: Topology) -> Topology:
    """A cluster node's root starts empty: the cluster adds the units it holds."""
    if topology.cluster is None:
        return topology
    return attrs.evolve(topology, supervisor=attrs.evolve(topology.supervisor, children=[]))


@asynccontextmanager
async def _joined(
    system: ActorSystem, topology: Topology, node: str | None, hosts_units: bool
) -> AsyncIterator[None]:
    """This node's part of the cluster while the block runs (nothing
    without ``cluster:``; nats-py is then never imported)."""
    if topology.cluster is None:
        yield
        return
    from ._cluster import open_cluster  # noqa: PLC0415 (cluster nodes only)

    async with open_cluster(system, topology, node, hosts_units=hosts_units):
        yield


@asynccontextmanager
async def open_system(
    topology: Topology | str | os.PathLike[str] | None = None,
    *,
    store: object = None,
    registry: object = None,
    node: str | None = None,
    hosts_units: bool = True,
) -> AsyncIterator[ActorSystem]:
    """Start a supervision tree; leaving the block stops it gracefully.

    Children start in order before the block is entered and stop in reverse
    order when it is left (each within its ``shutdown_timeout``). If the root
    supervisor gives up, the block is cancelled and ``SupervisorGaveUp`` is
    raised out of it.

    Args:
        topology: a ``Topology``, a path to a YAML file, or None for an empty
            ``one_for_one`` root named ``root``.
        store: where checkpoints go: a URL (``memory://``,
            ``sqlite:///path.db``) or a ``CheckpointStore``; by default the
            topology's ``store``, else ``sqlite:///.runtime/<system>.db``.
            Opened on first use (by an actor whose ``checkpoint`` is not
            ``off``) and closed when the system stops, unless it was passed
            in as an object.
        registry: a prometheus ``CollectorRegistry`` to register the
            system's metrics in (for the duration of the block); with
            ``metrics.listen`` and no registry, the endpoint serves a new
            registry with the system's, the process's and the platform's
            metrics.

        node: with ``cluster:``, this node's name, unique in the cluster
            (default ``hostname-pid``).
        hosts_units: with ``cluster:``, False for a node that runs no unit
            and only reaches the others' actors (a client).

    Raises:
        TopologyError: the topology is invalid; nothing was started.
        ValueError: ``store`` is not a known store URL.
        OSError: ``metrics.listen`` cannot be bound.
        SupervisorGaveUp: the root supervisor exceeded its restart intensity.
    """
    spec = topology_of(topology)
    check_runnable(spec)
    listen = None if spec.metrics.listen is None else parse_listen(spec.metrics.listen)
    if registry is not None and not isinstance(registry, CollectorRegistry):
        raise TypeError(f"registry must be a prometheus CollectorRegistry, got {registry!r}")
    system = ActorSystem(
        _without_units(spec), check_store(store), metrics=registry is not None or listen is not None
    )
    system.topology = spec
    root, resources = system.root, system.resources

    body_error: BaseException | None = None
    body = system.body
    async with contextlib.AsyncExitStack() as stack:
        await _open_services(stack, system, registry, listen)
        try:
            async with trio.open_nursery() as nursery:
                if resources is not None:
                    # Budgets' spending is read before any request is served.
                    await nursery.start(system.run_ledger)
                    await nursery.start(system.run_supervisor, resources)
                if system.failure is None:
                    await nursery.start(system.run_supervisor, root)
                with body:
                    if system.failure is None:
                        logger.info("system_started", system=system.name)
                        try:
                            async with _joined(system, spec, node, hosts_units):
                                yield system
                        except trio.Cancelled:
                            raise
                        except BaseException as exc:
                            # Re-raised below as itself, not wrapped in the nursery's group.
                            body_error = exc
                        finally:
                            logger.info("system_stopping", system=system.name)
                            root.request_stop()
        finally:
            await system.close_store()
    if system.failure is not None:
        raise system.failure
    logger.info("system_stopped", system=system.name, dead_letters=system.dead_letter_count)
    if body_error is not None:
        raise body_error
