# expect: RT102
# A load generator: 5,000 tasks at once.
import asyncio


async def hit(client, n):
    await client.get(f"/item/{n}")


async def load(client):
    tasks = [asyncio.create_task(hit(client, n)) for n in range(5000)]
    await asyncio.gather(*tasks)
