# expect: none
# The blocking get runs in a thread.
import asyncio
import queue

events = queue.Queue()


async def next_event():
    return await asyncio.to_thread(events.get)
