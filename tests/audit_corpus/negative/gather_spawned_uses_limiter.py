# expect: none
# The spawned function does `async with limiter`.
import asyncio

limiter = asyncio.Semaphore(8)


async def fetch(client, url):
    async with limiter:
        return await client.get(url)


async def fetch_all(client, urls):
    return await asyncio.gather(*(fetch(client, url) for url in urls))
