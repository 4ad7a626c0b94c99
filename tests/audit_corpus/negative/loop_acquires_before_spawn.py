# expect: none
# The loop acquires a slot before each spawn; the task releases it.
import asyncio


async def job(url, slots):
    try:
        await asyncio.sleep(0)
    finally:
        slots.release()


async def run(urls):
    slots = asyncio.Semaphore(5)
    async with asyncio.TaskGroup() as tg:
        for url in urls:
            await slots.acquire()
            tg.create_task(job(url, slots))
