"""One conformance suite for every checkpoint store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from runtime._checkpoint import (
    CheckpointStore,
    decode_state,
    encode_state,
    open_store,
)
from runtime.errors import CheckpointConflict, StateError
from tests.conftest import open_test_store


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStore]:
    async with open_test_store(request.param, tmp_path) as opened:
        yield opened


async def test_missing_path_has_no_checkpoint(store: CheckpointStore) -> None:
    """A path never written loads as None."""
    assert await store.load("root/nobody") is None


async def test_round_trip(store: CheckpointStore) -> None:
    """What is saved is what loads, at version 1."""
    assert await store.save("root/a", '{"n": 1}', 0) == 1
    assert await store.load("root/a") == (1, '{"n": 1}')


async def test_paths_are_isolated(store: CheckpointStore) -> None:
    """Writes to one path leave the others alone."""
    await store.save("root/a", "1", 0)
    await store.save("root/b", "2", 0)
    await store.save("root/a", "3", 1)
    assert await store.load("root/b") == (1, "2")
    assert await store.paths() == ["root/a", "root/b"]


async def test_version_increases_on_every_write(store: CheckpointStore) -> None:
    """Each write moves the version up by one."""
    version = 0
    for n in range(5):
        version = await store.save("root/a", str(n), version)
    assert (version, await store.load("root/a")) == (5, (5, "4"))


@pytest.mark.parametrize("stale", [0, 1, 3])
async def test_stale_write_conflicts_and_changes_nothing(
    store: CheckpointStore, stale: int
) -> None:
    """A write against a version other than the stored one raises
    CheckpointConflict and leaves the stored checkpoint as it was."""
    await store.save("root/a", "first", 0)
    await store.save("root/a", "second", 1)
    with pytest.raises(CheckpointConflict, match="version is 2"):
        await store.save("root/a", "lost", stale)
    assert await store.load("root/a") == (2, "second")


async def test_delete(store: CheckpointStore) -> None:
    """A deleted path has no checkpoint and can be written again from 0."""
    await store.save("root/a", "x", 0)
    await store.delete("root/a")
    await store.delete("root/a")  # no error the second time
    assert await store.load("root/a") is None
    assert await store.save("root/a", "y", 0) == 1


async def test_unicode_paths_and_data(store: CheckpointStore) -> None:
    """Paths and data are text, whatever the script."""
    path = "root/agents/résumé-🙂/数据"
    await store.save(path, '{"note": "naïve, ünïcode ✓"}', 0)
    assert await store.load(path) == (1, '{"note": "naïve, ünïcode ✓"}')
    assert await store.paths() == [path]


async def test_concurrent_read_modify_write_loses_nothing(store: CheckpointStore) -> None:
    """100 concurrent increments, each retrying on conflict, end at exactly 100
    with the versions 1..100 each written once."""
    written: list[int] = []

    async def increment() -> None:
        while True:
            current = await store.load("root/counter")
            version, value = current if current else (0, "0")
            try:
                written.append(await store.save("root/counter", str(int(value) + 1), version))
            except CheckpointConflict:
                continue
            return

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(increment)
    assert await store.load("root/counter") == (100, "100")
    assert sorted(written) == list(range(1, 101))


async def test_sqlite_store_survives_reopening(tmp_path: Path) -> None:
    """A SQLite checkpoint is on disk: a new store on the same file reads it."""
    url = f"sqlite:///{tmp_path / 'nested' / 'cp.db'}"
    first = open_store(url)
    await first.save("root/a", "kept", 0)
    await first.aclose()
    second = open_store(url)
    assert await second.load("root/a") == (1, "kept")
    await second.aclose()


def test_store_urls_are_checked() -> None:
    """Unknown schemes and an empty SQLite path are refused with what to write."""
    with pytest.raises(ValueError, match=r"use memory://, sqlite:///path\.db or postgresql"):
        open_store("redis://localhost")
    with pytest.raises(ValueError, match="name a file"):
        open_store("sqlite:///")


@attrs.define
class Notes:
    count: int = 0
    tags: list[str] = attrs.Factory(list)


def test_state_round_trips_through_json() -> None:
    """State is cattrs-unstructured JSON and structures back into its class."""
    text = encode_state("root/a", Notes(3, ["x"]))
    assert text == '{"count": 3, "tags": ["x"]}'
    assert decode_state("root/a", text, Notes) == Notes(3, ["x"])


def test_unserializable_state_is_a_clear_error() -> None:
    """State JSON cannot hold fails with the path and the reason."""

    @attrs.define
    class Bad:
        handle: object = attrs.Factory(object)

    with pytest.raises(StateError, match=r"root/a: state .*Bad cannot be checkpointed as JSON"):
        encode_state("root/a", Bad())


def test_a_checkpoint_that_no_longer_fits_names_the_field() -> None:
    """A stored checkpoint that does not structure names the path and field."""
    with pytest.raises(StateError, match=r"root/a: .* does not fit Notes: .*state\.count"):
        decode_state("root/a", '{"count": "many", "tags": []}', Notes)
    with pytest.raises(StateError, match="not valid JSON"):
        decode_state("root/a", "{oops", Notes)
