# expect: none
# aiolimiter held in the loop before each spawn.
import asyncio

from aiolimiter import AsyncLimiter

rate_limit = AsyncLimiter(10, 1)


async def call(item):
    return item


async def run(items):
    async with asyncio.TaskGroup() as tg:
        for item in items:
            async with rate_limit:
                tg.create_task(call(item))
