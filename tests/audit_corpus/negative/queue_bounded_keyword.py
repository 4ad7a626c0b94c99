# expect: none
# A bounded queue.
import asyncio


def make_queue():
    return asyncio.Queue(maxsize=100)
