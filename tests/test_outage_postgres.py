"""A real PostgreSQL outage: a private server (initdb and pg_ctl in a
temporary directory, never the shared one) is stopped under a checkpointed
actor and started again; the reply waits, the write lands, nothing restarts."""

from __future__ import annotations

import pytest
import structlog
import trio

import runtime
from tests.actorkit import Add, Get, child, topology
from tests.servers import PrivatePostgres


@pytest.mark.postgres
async def test_a_write_during_a_postgres_restart_waits_and_lands(
    private_postgres: PrivatePostgres,
) -> None:
    """Stop the server under an actor: its next ask is held while the write
    is retried, and answered once the server is back; no restart, no loss."""
    spec = topology(child("c", checkpoint="message"))
    with structlog.testing.capture_logs() as logs, trio.fail_after(60):
        async with runtime.open_system(spec, store=private_postgres.url) as system:
            ref = system.ref("root/c")
            assert await ref.ask(Add(1)) == 1
            await trio.to_thread.run_sync(private_postgres.stop)
            async with trio.open_nursery() as nursery:
                answers: list[int] = []

                async def ask() -> None:
                    answers.append(await ref.ask(Add(1), timeout=25))

                nursery.start_soon(ask)
                # The server is down: poll (real time, a real server) for the first retry.
                waiting = "checkpoint_write_waiting_for_store"
                while not any(event["event"] == waiting for event in logs):  # noqa: ASYNC110
                    await trio.sleep(0.05)
                assert answers == []  # held while the store is down
                await trio.to_thread.run_sync(private_postgres.start)
            assert answers == [2]
            assert await ref.ask(Get()) == 2
            assert ref.statistics().restarts == 0
