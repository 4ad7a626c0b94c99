# expect: none
# Each task awaited before the next: one at a time.
import asyncio


async def migrate(table):
    return table


async def migrate_all(tables):
    for table in tables:
        task = asyncio.create_task(migrate(table))
        await task
