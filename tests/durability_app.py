"""A system for the process-death test: checkpointed counters on SQLite.

``python -m tests.durability_app run STORE ACTORS`` sends increments
round-robin forever, printing ``sent PATH`` before each ask and ``acked PATH
TOTAL`` after its reply (so after its checkpoint write). ``read STORE
ACTORS`` prints ``restored PATH TOTAL`` for each actor and exits. STORE is a
store URL.
"""

from __future__ import annotations

import sys

import structlog
import trio

import runtime
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


async def read(store: str, actors: int) -> None:
    async with runtime.open_system(topology(actors), store=store) as system:
        for i in range(actors):
            ref = system.ref(f"root/c{i}")
            print(f"restored {ref.path} {await ref.ask(Get())}", flush=True)


def main() -> None:
    structlog.configure(processors=[], logger_factory=structlog.ReturnLoggerFactory())
    mode, store, actors = sys.argv[1], sys.argv[2], int(sys.argv[3])
    trio.run(run if mode == "run" else read, store, actors)


if __name__ == "__main__":
    main()
