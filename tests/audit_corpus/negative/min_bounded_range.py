# expect: none
# range(min(len(items), 8)): at most 8 workers.
import asyncio


async def worker(queue):
    while not queue.empty():
        queue.get_nowait()
        await asyncio.sleep(0)


async def run(items):
    queue = asyncio.Queue(maxsize=len(items) + 1)
    for item in items:
        queue.put_nowait(item)
    workers = [asyncio.create_task(worker(queue)) for _ in range(min(len(items), 8))]
    await asyncio.gather(*workers)
