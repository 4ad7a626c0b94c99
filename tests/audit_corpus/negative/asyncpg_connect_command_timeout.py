# expect: none
# A connection with a command timeout, closed.
import asyncpg


async def version(dsn):
    conn = await asyncpg.connect(dsn, command_timeout=10)
    try:
        return await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
