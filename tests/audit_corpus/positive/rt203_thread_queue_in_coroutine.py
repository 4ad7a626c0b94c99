# expect: RT203
# A thread queue made in a coroutine.
import queue


async def collect(source):
    results = queue.Queue()
    async for item in source:
        results.put_nowait(item)
    return results
