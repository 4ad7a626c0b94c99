# expect: RT601
# A connection opened and left open.
import asyncpg


async def version(dsn):
    conn = await asyncpg.connect(dsn, command_timeout=5)
    return await conn.fetchval("SELECT version()")
