# expect: RT102
# trio: one task per URL in a nursery.
import trio


async def fetch(url):
    await trio.sleep(0)


async def fetch_all(urls):
    async with trio.open_nursery() as nursery:
        for url in urls:
            nursery.start_soon(fetch, url)
