# expect: RT102
# Draining a queue into tasks as fast as items arrive.
import asyncio


async def process(item):
    await asyncio.sleep(0)


async def drain(queue: asyncio.Queue, group: asyncio.TaskGroup):
    while True:
        item = await queue.get()
        group.create_task(process(item))
