# expect: none
# A client used with async with.
import aiohttp


async def fetch(url):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url) as response:
            return await response.text()
