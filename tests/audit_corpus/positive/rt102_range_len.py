# expect: RT102
# range(len(items)) grows with the data.
import asyncio


async def work(item):
    return item


async def run(items):
    tasks = []
    for i in range(len(items)):
        tasks.append(asyncio.create_task(work(items[i])))
    await asyncio.gather(*tasks)
