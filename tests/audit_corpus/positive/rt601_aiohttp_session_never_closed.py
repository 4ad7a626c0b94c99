# expect: RT601
# A session made per call and never closed.
import aiohttp


async def fetch_json(url):
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    response = await session.get(url)
    return await response.json()
