# expect: RT203
# A module-level thread queue read with a blocking get() in a coroutine.
import queue

jobs = queue.Queue(maxsize=100)


async def next_job():
    return jobs.get()
