"""One process of the cross-process budget test: a system with a ``fake``
llm resource whose token budget is kept in a shared SQLite store, asking
until the budget refuses. Prints what it spent as JSON on stdout.

Usage: python -m tests.budget_process STORE_URL LIMIT
"""

from __future__ import annotations

import json
import sys

import trio

from runtime import BudgetSpec, ResourceSpec, Topology, open_system
from runtime.errors import BudgetExceeded
from runtime.resources.llm import Chat

MAX_REQUESTS = 400
PAUSE = 0.05  # seconds between two requests of this process


async def main(store: str, limit: int) -> dict[str, object]:
    topology = Topology(
        system="shared-budget",
        resources={
            "llm": ResourceSpec(
                kind="llm",
                options={"provider": "fake"},
                budget=BudgetSpec(tokens=limit, period="1d"),
            )
        },
    )
    refused = False
    with trio.fail_after(30):
        async with open_system(topology, store=store) as system:
            llm = system.resource("llm")
            for _ in range(MAX_REQUESTS):
                try:
                    await llm.ask(Chat.prompt("count these ten words across every process please"))
                except BudgetExceeded:
                    refused = True
                    break
                await trio.sleep(PAUSE)
            [usage] = system.usage_statistics()
            budget = system.budget_statistics()["resources/llm"]
    return {
        "requests": usage.requests,
        "tokens": usage.tokens,
        "refused": refused,
        "window_start": budget.window_start.timestamp(),
    }


if __name__ == "__main__":
    print(json.dumps(trio.run(main, sys.argv[1], int(sys.argv[2]))))
