# expect: none
# Tasks per batch, each batch awaited before the next.
import asyncio


async def handle(item):
    return item


async def run(batches):
    for batch in batches:
        tasks = [asyncio.create_task(handle(item)) for item in batch]
        await asyncio.gather(*tasks)
