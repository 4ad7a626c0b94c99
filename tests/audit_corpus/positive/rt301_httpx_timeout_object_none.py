# expect: RT301
# httpx.Timeout(None) disables every timeout.
import httpx


async def stream(url):
    async with httpx.AsyncClient(timeout=httpx.Timeout(None)) as client:
        async with client.stream("GET", url) as response:
            async for chunk in response.aiter_bytes():
                yield chunk
