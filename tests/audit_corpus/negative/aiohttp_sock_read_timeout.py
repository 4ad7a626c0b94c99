# expect: none
# aiohttp with a read timeout only.
from aiohttp import ClientSession, ClientTimeout


async def stream(url):
    async with ClientSession(timeout=ClientTimeout(sock_read=10)) as session:
        async with session.get(url) as response:
            async for chunk in response.content.iter_chunked(1024):
                yield chunk
