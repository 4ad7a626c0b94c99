# expect: none
# The semaphore is handed to each task.
import asyncio


async def fetch(sem, session, url):
    async with sem:
        async with session.get(url) as response:
            return await response.text()


async def fetch_all(session, urls):
    sem = asyncio.Semaphore(20)
    tasks = [asyncio.create_task(fetch(sem, session, url)) for url in urls]
    return await asyncio.gather(*tasks)
