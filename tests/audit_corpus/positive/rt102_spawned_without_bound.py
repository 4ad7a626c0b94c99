# expect: RT102
# The spawned function is resolved, and holds no bound.
import asyncio


async def worker(client, item):
    response = await client.post("/process", json=item)
    response.raise_for_status()


async def submit(client, items):
    async with asyncio.TaskGroup() as tg:
        for item in items:
            tg.create_task(worker(client, item))
