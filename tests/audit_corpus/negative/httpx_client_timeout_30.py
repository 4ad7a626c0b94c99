# expect: none
# An explicit timeout.
import httpx


async def fetch(url):
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url)
