# expect: RT302
# aiohttp session with the default 5-minute timeout.
import aiohttp


async def fetch(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return await response.text()
