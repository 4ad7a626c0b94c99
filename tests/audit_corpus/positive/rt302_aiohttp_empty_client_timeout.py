# expect: RT302
# ClientTimeout() with nothing set: no timeout at all.
import aiohttp


async def fetch(url):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as session:
        async with session.get(url) as response:
            return await response.read()
