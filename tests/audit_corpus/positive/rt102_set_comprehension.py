# expect: RT102
# A crawler's frontier, a task per URL.
import asyncio


async def crawl(url):
    return [url]


async def step(frontier):
    tasks = {asyncio.create_task(crawl(url)) for url in frontier}
    done, _ = await asyncio.wait(tasks)
    return done
