# expect: RT501
# Assigned to _ to quiet a linter: still dropped.
import asyncio


async def warm_cache():
    pass


async def startup():
    _ = asyncio.create_task(warm_cache())
