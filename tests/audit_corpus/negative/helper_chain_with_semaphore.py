# expect: none
# The spawned function calls a helper that holds the semaphore.
import asyncio

_sem = asyncio.BoundedSemaphore(16)


async def _get(client, url):
    async with _sem:
        return await client.get(url)


async def fetch(client, url):
    response = await _get(client, url)
    return response.json()


async def fetch_all(client, urls):
    return await asyncio.gather(*[fetch(client, url) for url in urls])
