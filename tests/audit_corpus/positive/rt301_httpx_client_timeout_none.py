# expect: RT301
# httpx with its timeout switched off.
import httpx


async def fetch(url):
    async with httpx.AsyncClient(timeout=None) as client:
        return await client.get(url)
