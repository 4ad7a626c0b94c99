# expect: none
# aiohttp with a total timeout.
import aiohttp


async def fetch(url):
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url) as response:
            return await response.text()
