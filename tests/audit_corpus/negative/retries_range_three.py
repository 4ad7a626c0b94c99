# expect: none
# Three attempts raced: range(3) is fixed.
import asyncio


async def attempt(n):
    return n


async def hedge():
    return await asyncio.gather(*(attempt(n) for n in range(3)))
