# expect: none
# httpx's default timeout is 5 seconds.
import httpx


async def fetch(url):
    async with httpx.AsyncClient() as client:
        return await client.get(url)
