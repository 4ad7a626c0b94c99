# expect: RT102 RT403
# ensure_future per URL (and on a coroutine).
import asyncio


async def fetch(url):
    return url


async def fetch_all(urls):
    futures = [asyncio.ensure_future(fetch(url)) for url in urls]
    return await asyncio.gather(*futures)
