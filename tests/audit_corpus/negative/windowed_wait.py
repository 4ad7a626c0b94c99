# expect: none
# At most 10 in flight: wait for one before starting the next.
import asyncio


async def fetch(url):
    return url


async def fetch_all(urls):
    pending = set()
    for url in urls:
        if len(pending) >= 10:
            _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.create_task(fetch(url)))
    await asyncio.wait(pending)
