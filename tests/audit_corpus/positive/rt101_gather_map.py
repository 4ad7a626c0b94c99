# expect: RT101
# map() over the inputs, all scheduled at once.
import asyncio


async def resize(path):
    await asyncio.sleep(0)
    return path


async def resize_all(paths):
    return await asyncio.gather(*map(resize, paths))
