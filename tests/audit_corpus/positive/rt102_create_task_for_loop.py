# expect: RT102
# A task per URL, kept in a list and gathered later.
import asyncio


async def fetch(url):
    await asyncio.sleep(0)
    return url


async def fetch_all(urls):
    tasks = []
    for url in urls:
        tasks.append(asyncio.create_task(fetch(url)))
    return await asyncio.gather(*tasks)
