# expect: RT101
# asyncio imported under another name.
import asyncio as aio


async def check(item):
    await aio.sleep(0)


async def check_inventory(items):
    await aio.gather(*(check(item) for item in items))
