# expect: none
# asyncio.Future and ensure_future still take loop= (3.10 removed it elsewhere).
import asyncio


def make_future(loop):
    return asyncio.Future(loop=loop)


def schedule(fut, loop):
    return asyncio.ensure_future(fut, loop=loop)
