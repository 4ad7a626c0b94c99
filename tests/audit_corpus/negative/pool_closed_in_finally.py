# expect: none
# A pool closed when done.
import asyncpg


async def main(dsn):
    pool = await asyncpg.create_pool(dsn, command_timeout=30)
    try:
        await pool.execute("SELECT 1")
    finally:
        await pool.close()
