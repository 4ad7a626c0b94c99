# expect: none
# Fan-out inside `async with semaphore`.
import asyncio

semaphore = asyncio.Semaphore(10)


async def fetch(url):
    return url


async def fetch_all(urls):
    async with semaphore:
        return await asyncio.gather(*(fetch(url) for url in urls))
