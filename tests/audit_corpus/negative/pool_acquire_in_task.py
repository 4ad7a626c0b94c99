# expect: none
# Each task takes a connection from a pool: the pool's size bounds it.
import asyncio


async def update(pool, row):
    async with pool.acquire() as conn:
        await conn.execute("UPDATE t SET seen = true WHERE id = $1", row)


async def update_all(pool, rows):
    await asyncio.gather(*(update(pool, row) for row in rows))
