# expect: RT101
# One coroutine per row returned by a query.
import asyncio


async def enrich(row):
    await asyncio.sleep(0)
    return dict(row)


async def enrich_rows(conn):
    rows = await conn.fetch("SELECT * FROM orders WHERE status = 'new'")
    return await asyncio.gather(*(enrich(row) for row in rows))
