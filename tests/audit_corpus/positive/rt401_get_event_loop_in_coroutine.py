# expect: RT401
# Offloading to a thread with the deprecated loop getter.
import asyncio


def parse(data):
    return data


async def parse_async(data):
    loop = asyncio.get_event_loop()
    return await loop.run_in_executor(None, parse, data)
