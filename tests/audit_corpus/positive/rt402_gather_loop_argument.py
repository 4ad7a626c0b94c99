# expect: RT402
# loop= passed to gather over three fixed calls.
import asyncio


async def a():
    pass


async def main(loop):
    await asyncio.gather(a(), a(), a(), loop=loop)
