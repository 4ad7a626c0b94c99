# expect: none
# trio: the task acquires a CapacityLimiter.
import trio


async def fetch(url, limiter):
    async with limiter:
        await trio.sleep(0)


async def fetch_all(urls):
    limiter = trio.CapacityLimiter(10)
    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(fetch, url, limiter)
