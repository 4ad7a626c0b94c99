# expect: none
# Batches of 10 at a time.
import asyncio
from itertools import batched


async def fetch(url):
    return url


async def fetch_all(urls):
    results = []
    for batch in batched(urls, 10):
        results += await asyncio.gather(*(fetch(url) for url in batch))
    return results
