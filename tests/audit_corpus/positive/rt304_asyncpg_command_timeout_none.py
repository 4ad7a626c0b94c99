# expect: RT304
# command_timeout=None, written out.
import asyncpg


async def make_pool(dsn):
    return await asyncpg.create_pool(dsn=dsn, command_timeout=None)
