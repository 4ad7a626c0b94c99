# expect: RT304
# timeout= bounds connecting, not queries.
import asyncpg


async def connect(dsn):
    return await asyncpg.connect(dsn, timeout=10)
