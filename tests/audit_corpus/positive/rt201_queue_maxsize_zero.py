# expect: RT201
# maxsize=0 means no bound in asyncio.
import asyncio


def make_queue():
    return asyncio.Queue(maxsize=0)
