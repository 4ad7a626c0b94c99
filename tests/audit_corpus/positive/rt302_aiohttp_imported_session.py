# expect: RT302
# ClientSession imported by name, total=None.
from aiohttp import ClientSession, ClientTimeout


async def check(url):
    async with ClientSession(timeout=ClientTimeout(total=None)) as session:
        async with session.head(url) as response:
            return response.status
