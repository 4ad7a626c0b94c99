# expect: none
# The right getter in a coroutine.
import asyncio


def parse(data):
    return data


async def parse_async(data):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, parse, data)
