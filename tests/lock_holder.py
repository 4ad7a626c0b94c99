"""A process that takes a lock and holds it, for the lock tests.

``python -m tests.lock_holder URL SYSTEM NAME TTL HOLD`` opens a system
named SYSTEM whose locks live at URL, takes NAME with TTL, prints
``held <token>`` (flushed), holds it HOLD seconds (``inf``: until killed),
releases it and prints ``released``.
"""

from __future__ import annotations

import math
import sys

import trio

from runtime import Topology, open_system


async def main(url: str, system: str, name: str, ttl: float, hold: float) -> None:
    async with open_system(Topology(system=system, locks=url), store="memory://") as running:
        async with running.lock(name, ttl=ttl) as lease:
            print(f"held {lease.token}", flush=True)
            if math.isinf(hold):
                await trio.sleep_forever()
            await trio.sleep(hold)
        print("released", flush=True)


if __name__ == "__main__":
    url, system, name, ttl, hold = sys.argv[1:6]
    trio.run(main, url, system, name, float(ttl), float(hold))
