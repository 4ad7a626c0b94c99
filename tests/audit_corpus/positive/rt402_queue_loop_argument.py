# expect: RT402
# loop= passed to a bounded queue.
import asyncio


def make_queue(loop):
    return asyncio.Queue(maxsize=10, loop=loop)
