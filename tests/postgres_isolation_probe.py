"""One side of test_postgres_isolation: a test session that writes a
checkpoint, then waits on stdin while another session does the same.

Not collected by a plain ``pytest`` (the name does not start with
``test_``); test_postgres_isolation runs it as ``pytest -s FILE`` in
subprocesses, with RT_PROBE_NAME set. It prints ``saved <schema>`` once its
row is written, reads one line from stdin, then checks that the store holds
its own row only. With RT_PROBE_FAIL=1 it fails on purpose after that check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from tests import postgres_session
from tests.conftest import open_test_store


@pytest.mark.postgres
async def test_probe(tmp_path: Path) -> None:
    """Write one row, wait for the other session, see only this row."""
    name = os.environ.get("RT_PROBE_NAME")
    if name is None:
        pytest.skip("run by test_postgres_isolation only")
    with trio.fail_after(60):
        async with open_test_store("postgresql", tmp_path) as store:
            await store.save(f"probe/{name}", "{}", 0)
            print(f"saved {postgres_session.SCHEMA}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            assert await store.paths() == [f"probe/{name}"]
    if os.environ.get("RT_PROBE_FAIL") == "1":
        pytest.fail("a deliberate failure, to show the schema is dropped anyway")
