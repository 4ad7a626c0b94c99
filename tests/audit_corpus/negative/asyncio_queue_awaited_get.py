# expect: none
# An asyncio queue's get is awaited, even if a thread queue elsewhere shares the name.
import asyncio
import queue


def threaded():
    q = queue.Queue()
    return q


async def consume():
    q = asyncio.Queue(maxsize=10)
    return await q.get()
