# expect: none
# A coroutine reads a thread queue without blocking.
import asyncio
import queue

results = queue.Queue()


async def poll():
    while True:
        try:
            return results.get_nowait()
        except queue.Empty:
            await asyncio.sleep(0.1)
