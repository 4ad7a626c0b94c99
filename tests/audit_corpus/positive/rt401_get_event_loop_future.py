# expect: RT401
# Creating a future from the deprecated getter.
import asyncio


async def wait_reply(registry, key):
    future = asyncio.get_event_loop().create_future()
    registry[key] = future
    return await future
