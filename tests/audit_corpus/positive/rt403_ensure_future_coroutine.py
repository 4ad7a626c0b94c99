# expect: RT403
# ensure_future on a coroutine call, kept.
import asyncio


async def heartbeat():
    while True:
        await asyncio.sleep(10)


async def start(state):
    state["heartbeat"] = asyncio.ensure_future(heartbeat())
