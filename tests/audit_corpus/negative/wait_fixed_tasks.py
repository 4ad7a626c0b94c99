# expect: none
# asyncio.wait over two known tasks.
import asyncio


async def a():
    pass


async def main():
    t1 = asyncio.create_task(a())
    t2 = asyncio.create_task(a())
    await asyncio.wait([t1, t2], timeout=5)
