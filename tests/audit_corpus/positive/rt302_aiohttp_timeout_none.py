# expect: RT302
# timeout=None on the session.
import aiohttp


async def post(url, data):
    async with aiohttp.ClientSession(timeout=None) as session:
        return await session.post(url, json=data)
