# expect: RT404
# The generator-based coroutine decorator.
import asyncio


@asyncio.coroutine
def slow_add(a, b):
    yield from asyncio.sleep(1)
    return a + b
