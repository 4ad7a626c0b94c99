# expect: RT304
# A pool whose queries may run forever.
import asyncpg


async def make_pool(dsn):
    return await asyncpg.create_pool(dsn, min_size=2, max_size=10)
