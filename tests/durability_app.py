"""A system for the process-death tests: checkpointed counters.

``python -m tests.durability_app run STORE ACTORS`` sends increments
round-robin forever, printing ``sent PATH`` before each ask and ``acked PATH
TOTAL`` after its reply (so after its checkpoint write). ``read STORE
ACTORS`` prints ``restored PATH TOTAL VERSION`` for each actor and exits.
STORE is a store URL.

``burst STORE ACTORS`` asks every actor at once, from a task per actor, so
that their writes are group-committed; it prints the same ``sent`` and
``acked`` lines and, before each batch goes to the store, ``batch
PATH:VERSION ...`` with the version each of its rows is written against.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog
import trio
import trio_asyncio

import runtime
from runtime._checkpoint import GroupCommit, open_store
from tests.actorkit import Add, Counter, Get


def topology(actors: int) -> runtime.Topology:
    children = [
        runtime.ChildSpec(name=f"c{i}", actor=Counter, checkpoint="message") for i in range(actors)
    ]
    return runtime.Topology(
        system="durability", supervisor=runtime.SupervisorSpec(name="root", children=children)
    )


async def run(store: str, actors: int) -> None:
    async with runtime.open_system(topology(actors), store=store) as system:
        refs = [system.ref(f"root/c{i}") for i in range(actors)]
        while True:
            for ref in refs:
                print(f"sent {ref.path}", flush=True)
                total = await ref.ask(Add(1))
                print(f"acked {ref.path} {total}", flush=True)


async def burst(url: str, actors: int) -> None:
    store = open_store(url)
    group = getattr(store, "group", None)
    assert isinstance(group, GroupCommit), f"{url} does not group-commit"
    commit = group.commit

    async def logged(rows: list[tuple[str, str, int]]) -> list[int | None]:
        print("batch " + " ".join(f"{path}:{version}" for path, _, version in rows), flush=True)
        return await commit(rows)

    group.commit = logged

    async def asker(ref: runtime.ActorRef) -> None:
        while True:
            print(f"sent {ref.path}", flush=True)
            total = await ref.ask(Add(1))
            print(f"acked {ref.path} {total}", flush=True)

    async with (
        runtime.open_system(topology(actors), store=store) as system,
        trio.open_nursery() as nursery,
    ):
        for i in range(actors):
            nursery.start_soon(asker, system.ref(f"root/c{i}"))


async def read(url: str, actors: int) -> None:
    store = open_store(url)
    async with runtime.open_system(topology(actors), store=store) as system:
        for i in range(actors):
            ref = system.ref(f"root/c{i}")
            row = await store.load(ref.path)
            version = 0 if row is None else row[0]
            print(f"restored {ref.path} {await ref.ask(Get())} {version}", flush=True)
        await store.aclose()


def main() -> None:
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    mode, store, actors = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "run":
        trio.run(run, store, actors)
    else:  # the store object is this module's: its asyncio loop (asyncpg) too
        trio.run(_in_loop, {"burst": burst, "read": read}[mode], store, actors)


async def _in_loop(main: Any, store: str, actors: int) -> None:
    async with trio_asyncio.open_loop():
        await main(store, actors)


if __name__ == "__main__":
    main()
