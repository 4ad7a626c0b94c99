# expect: RT101
# Streaming results of every download as they finish.
import asyncio


async def download(url):
    await asyncio.sleep(0)
    return url


async def download_all(urls):
    results = []
    for future in asyncio.as_completed([download(url) for url in urls]):
        results.append(await future)
    return results
