# expect: none
# ensure_future on futures, kept.
import asyncio


async def a():
    pass


async def main(fut):
    wrapped = asyncio.ensure_future(fut)
    both = asyncio.ensure_future(asyncio.gather(a(), a()))
    await wrapped
    await both
