# expect: none
# asyncio worker pool sized by a setting.
import asyncio


async def worker(queue):
    while True:
        item = await queue.get()
        queue.task_done()


async def run(items, concurrency):
    queue = asyncio.Queue(maxsize=concurrency * 2)
    workers = [asyncio.create_task(worker(queue)) for _ in range(concurrency)]
    for item in items:
        await queue.put(item)
    await queue.join()
    for w in workers:
        w.cancel()
