"""One process of the multi-process shared-limit tests and benchmark: runs a
system of the given name with a shared ``llm`` resource pointed at the
fake LLM server of the test, and asks it from several callers.

``python -m tests.shared_worker CONFIG_JSON``. The process prints ``ready``
once its system runs, waits for a line on stdin (the test's go), runs its
callers, then prints one JSON line: answers, errors, and its limiter's
statistics sampled along the way (wall clock). Log events go to stderr as
JSON lines with a wall-clock ``timestamp``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import structlog
import trio

import runtime
from runtime.resources.llm import Chat


def _topology(config: dict[str, Any]) -> runtime.Topology:
    rate = config.get("rate")
    spec = runtime.ResourceSpec(
        kind="llm",
        max_concurrency=config.get("max_concurrency"),
        rate=runtime.RateSpec(requests=rate[0], period=rate[1]) if rate else None,
        retry=None,
        timeout=60.0,
        circuit_breaker=None,
        shared=True,
        shared_via=config["via"],
        shared_lease=config.get("lease", 10.0),
        shared_guard=config.get("guard"),
        options={
            "provider": "openai",
            "base_url": f"{config['fake']}/v1",
            "api_key_env": None,
            "model": "fake",
        },
    )
    return runtime.Topology(system=config["system"], resources={"llm": spec})


async def main(config: dict[str, Any]) -> None:
    answered = 0
    errors: list[str] = []
    samples: list[tuple[float, str | None, int | None, int | None, int | None]] = []
    async with runtime.open_system(_topology(config), store="memory://") as system:
        ref = system.resource("llm")
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        end = time.time() + config["seconds"]
        tag = config["tag"]
        count = config.get("requests")  # per caller; None: until the end

        async def caller(index: int) -> None:
            nonlocal answered
            done = 0
            while time.time() < end and (count is None or done < count):
                done += 1
                try:
                    await ref.ask(
                        Chat.prompt(f"{tag} {index} {done}"),
                        timeout=120,
                        priority=config.get("priority", "normal"),
                    )
                    answered += 1
                except Exception as exc:
                    errors.append(repr(exc))
                    await trio.sleep(0.01)

        async def sample() -> None:
            while True:
                limiter = system.resource_statistics()["llm"].limiter
                samples.append(
                    (
                        time.time(),
                        limiter.shared,
                        limiter.members,
                        limiter.share_concurrency,
                        limiter.share_rate,
                    )
                )
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            async with trio.open_nursery() as callers:
                for index in range(config["callers"]):
                    callers.start_soon(caller, index)
            nursery.cancel_scope.cancel()
    print(json.dumps({"answered": answered, "errors": errors, "samples": samples}), flush=True)


if __name__ == "__main__":
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt=None),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    trio.run(main, json.loads(sys.argv[1]))
