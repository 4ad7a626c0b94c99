# expect: RT402
# loop= passed to asyncio.sleep (Python 3.7 style).
import asyncio


async def tick(loop):
    await asyncio.sleep(1, loop=loop)
